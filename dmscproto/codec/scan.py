"""Fast path of capability record decoding (draft-dmsc-protocol-00, Section 7.2):
:func:`scan_record` reads a record straight from its octets."""

from __future__ import annotations

import struct

from .errors import DecodeError
from .registry import ID_SIZE
from .schema import AttrValue
from .values import CapabilityRecord, Endpoint, Provider, Skill, _check_uri, twin


class _Unusual(Exception):
    """The octets are not in the shape :func:`scan_record` decides; :func:`cbor.loads`
    and :meth:`CapabilityRecord.from_cbor` will."""


_SkillTwin = twin(Skill)
_EndpointTwin = twin(Endpoint)
_ProviderTwin = twin(Provider)
_RecordTwin = twin(CapabilityRecord)
#: A twin made empty and filled slot by slot: fewer instructions than its ``__init__``
#: through the class call (a record: 4.6k -> 3.1k, an endpoint 2.4k -> 1.8k, callgrind).
_new = object.__new__
#: Readers of an argument of 2, 4 and 8 octets (head info 25, 26, 27).
_UINT = {25: struct.Struct(">H").unpack_from, 26: struct.Struct(">I").unpack_from,
         27: struct.Struct(">Q").unpack_from}
#: Members 12-14 of a record in their usual shape, one unpack: key 12 and the head of an
#: issued-at of 4 octets (0x1A, checked first: every time from 1970-01-01T18:12 to 2106),
#: key 13 and a lease's head (2 octets, 0x19, expected), key 14 and a record version's
#: (below 24), where :func:`_arg` reads each by itself: REGISTER decode 174.0k -> 166.4k
#: instructions (callgrind).
_TIMES = struct.Struct(">BxIBBHBB")
_times = _TIMES.unpack_from
_TIMES_SIZE = _TIMES.size


def _arg(d: bytes, pos: int, major: int) -> tuple[int, int]:
    """(argument, position after it) of the head at ``pos``, of type ``major``, in its
    shortest form (RFC 8949, Section 4.2.1); _Unusual for anything else.

    No reader here checks that a string ends within ``d``: a position past its end
    makes the next read raise IndexError, and :func:`scan_record` ends with
    ``pos == len(d)``."""
    info = d[pos] - (major << 5)
    if 0 <= info < 24:
        return info, pos + 1
    if info == 24:
        n = d[pos + 1]
        if n >= 24:
            return n, pos + 2
    elif 25 <= info <= 27:
        (n,) = _UINT[info](d, pos + 1)
        if n >> (4 << (info - 24)):  # not below 2**(4 * size): it needs this size
            return n, pos + 1 + (1 << (info - 24))
    raise _Unusual


#: The length of a short text string (RFC 8949 heads 0x60-0x77, 0-23 octets) by the
#: octet of its head, -1 for any other octet: one tuple index, where a subtraction and
#: a chained comparison take 28% more instructions (callgrind: 350 vs 486 a head).
_SHORT_TEXT = tuple(h - 0x60 if 0x60 <= h <= 0x77 else -1 for h in range(256))


def _tstr(d: bytes, pos: int) -> tuple[str, int]:
    """A text string (UnicodeDecodeError, a ValueError, if it is not UTF-8)."""
    n = _SHORT_TEXT[d[pos]]
    if n >= 0:
        end = pos + 1 + n
        return d[pos + 1:end].decode(), end
    if d[pos] == 0x78 and d[pos + 1] >= 24:  # a 1-octet length: URIs and descriptions
        n = d[pos + 1]
        pos += 2
    else:
        n, pos = _arg(d, pos, 3)
    end = pos + n
    return d[pos:end].decode(), end


def _tstrs(d: bytes, pos: int, nonempty: bool) -> tuple[tuple[str, ...], int]:
    """``[* tstr]`` (``[+ tstr]`` if ``nonempty``), at most 23 of them."""
    n = d[pos] - 0x80
    if 0 < n < 3:  # one or two short strings, read here: most arrays (tags, modes) are
        a = _SHORT_TEXT[d[pos + 1]]
        if a >= 0:
            end = pos + 2 + a
            if n == 1:
                return (d[pos + 2:end].decode(),), end
            b = _SHORT_TEXT[d[end]]
            if b >= 0:
                last = end + 1 + b
                return (d[pos + 2:end].decode(), d[end + 1:last].decode()), last
    if not (nonempty <= n < 24):
        raise _Unusual
    pos += 1
    out = []
    for _ in range(n):
        t, pos = _tstr(d, pos)
        out.append(t)
    return tuple(out), pos


def _attributes(d: bytes, pos: int) -> tuple[dict[str, AttrValue], int]:
    """The attributes map; short text names and values, and integers 0-23, read here
    (18.6k -> 15.7k instructions for the example's two, callgrind)."""
    n = d[pos] - 0xA0
    if not 1 <= n < 24:
        raise _Unusual
    pos += 1
    out: dict[str, AttrValue] = {}
    last = b""
    for _ in range(n):
        k = _SHORT_TEXT[d[pos]]
        if k >= 0:
            end = pos + 1 + k
            key = d[pos:end]
            name = key[1:].decode()
        else:
            name, end = _tstr(d, pos)
            key = d[pos:end]
        # deterministic order, no duplicate: the encoded keys ascend bytewise, which for
        # text strings is by UTF-8 length, then by octets (RFC 8949, 4.2.1)
        if key <= last:
            raise _Unusual
        last = key
        b = d[end]
        k = _SHORT_TEXT[b]
        if k >= 0:
            pos = end + 1 + k
            out[name] = d[end + 1:pos].decode()
        elif b < 24:
            out[name] = b
            pos = end + 1
        elif b == 0xF4 or b == 0xF5:
            out[name] = b == 0xF5
            pos = end + 1
        elif b >> 5 == 3:
            out[name], pos = _tstr(d, end)
        elif b >> 5 == 0:
            out[name], pos = _arg(d, end, 0)
        else:
            n1, pos = _arg(d, end, 1)
            out[name] = -1 - n1
    return out, pos


def scan_record(d: bytes) -> CapabilityRecord | None:
    """Fast path of ``CapabilityRecord.from_cbor(cbor.loads(d))``: one pass over the
    octets of a record in deterministic encoding, no intermediate CBOR objects and no
    re-encoding.  The record those would give, or None: then they decide (and name
    the error), as for every input whose shape is unusual here (tags, long arrays,
    indefinite lengths, a record they refuse).

    Straight-line: the members in key order (deterministic encoding sorts them), the
    optional ones (description 4, provider 6, attributes 16) where they may stand, and
    the map's size checked against what was found.  The skills, provider and endpoints
    are read in this one function, and the short text strings of the members most
    often short (names, versions, ids) where they stand: a call and its tuple cost as
    much as reading the string (REGISTER decode 193k -> 181k instructions with
    :func:`_tstrs`' pairs, callgrind); so are the description, the provider and an
    endpoint's texts, those most often long when their head has a 1-octet length
    (151.0k -> 146.9k)."""
    try:
        n = d[0] - 0xA0
        if not 13 <= n <= 16 or d[1] != 1:
            raise _Unusual
        if d[2] == 0x78 and d[3] >= 24:  # the URI, most often of 24 to 255 octets
            pos = 4 + d[3]
            uri = d[4:pos].decode()
        else:
            uri, pos = _tstr(d, 2)
        if d[pos] != 2 or d[pos + 1] != 0x40 + ID_SIZE:  # a byte string of ID_SIZE
            raise _Unusual
        end = pos + 2 + ID_SIZE
        agent_id = d[pos + 2:end]
        if d[end] != 3:
            raise _Unusual
        k = _SHORT_TEXT[d[end + 1]]
        if k >= 0:
            pos = end + 2 + k
            name = d[end + 2:pos].decode()
        else:
            name, pos = _tstr(d, end + 1)
        found = 13
        description = provider = None
        if d[pos] == 4:
            if d[pos + 1] == 0x78 and d[pos + 2] >= 24:  # most descriptions: 24-255 octets
                end = pos + 3 + d[pos + 2]
                description = d[pos + 3:end].decode()
                pos = end
            else:
                description, pos = _tstr(d, pos + 1)
            found += 1
        if d[pos] != 5:
            raise _Unusual
        k = _SHORT_TEXT[d[pos + 1]]
        if k >= 0:
            end = pos + 2 + k
            version = d[pos + 2:end].decode()
            pos = end
        else:
            version, pos = _tstr(d, pos + 1)
        if d[pos] == 6:
            k = d[pos + 1] - 0xA0
            if not 1 <= k <= 2 or d[pos + 2] != 1:
                raise _Unusual
            j = _SHORT_TEXT[d[pos + 3]]
            if j >= 0:
                end = pos + 4 + j
                organization = d[pos + 4:end].decode()
                pos = end
            else:
                organization, pos = _tstr(d, pos + 3)
            url = None
            if k == 2:
                if d[pos] != 2:
                    raise _Unusual
                if d[pos + 1] == 0x78 and d[pos + 2] >= 24:  # a URL, as the agent's URI
                    end = pos + 3 + d[pos + 2]
                    url = d[pos + 3:end].decode()
                    pos = end
                else:
                    url, pos = _tstr(d, pos + 1)
            provider = _new(_ProviderTwin)
            provider.organization = organization
            provider.url = url
            provider.__class__ = Provider
            found += 1
        k = d[pos + 1] - 0x80
        if d[pos] != 7 or not 0 <= k < 24:
            raise _Unusual
        pos += 2
        skills = []
        for _ in range(k):
            m = d[pos] - 0xA0  # members: 1, 2, 4 and which of 3, 5, 6 are there
            if not 3 <= m <= 6 or d[pos + 1] != 1:
                raise _Unusual
            j = _SHORT_TEXT[d[pos + 2]]
            if j >= 0:
                end = pos + 3 + j
                sid = d[pos + 3:end].decode()
            else:
                sid, end = _tstr(d, pos + 2)
            if d[end] != 2:
                raise _Unusual
            j = _SHORT_TEXT[d[end + 1]]
            if j >= 0:
                pos = end + 2 + j
                sname = d[end + 2:pos].decode()
            else:
                sname, pos = _tstr(d, end + 1)
            sdescription = None
            if d[pos] == 3:
                sdescription, pos = _tstr(d, pos + 1)
                m -= 1
            if d[pos] != 4:
                raise _Unusual
            tags, pos = _tstrs(d, pos + 1, False)
            input_modes: tuple[str, ...] = ()
            output_modes: tuple[str, ...] = ()
            if m > 3 and d[pos] == 5:
                input_modes, pos = _tstrs(d, pos + 1, True)
                m -= 1
            if m > 3:  # one member left, which can only be 6
                if m > 4 or d[pos] != 6:
                    raise _Unusual
                output_modes, pos = _tstrs(d, pos + 1, True)
            skill = _new(_SkillTwin)
            skill.id = sid
            skill.name = sname
            skill.tags = tags
            skill.description = sdescription
            skill.input_modes = input_modes
            skill.output_modes = output_modes
            skill.__class__ = Skill
            skills.append(skill)
        if d[pos] != 8:
            raise _Unusual
        in_modes, pos = _tstrs(d, pos + 1, False)
        if d[pos] != 9:
            raise _Unusual
        out_modes, pos = _tstrs(d, pos + 1, False)
        k = d[pos + 1] - 0x80
        if d[pos] != 10 or not 0 <= k < 24:
            raise _Unusual
        pos += 2
        endpoints = []
        for _ in range(k):
            if d[pos] != 0xA2 or d[pos + 1] != 1:
                raise _Unusual
            j = _SHORT_TEXT[d[pos + 2]]
            if j >= 0:
                end = pos + 3 + j
                transport = d[pos + 3:end].decode()
            else:
                transport, end = _tstr(d, pos + 2)
            if d[end] != 2:
                raise _Unusual
            if d[end + 1] == 0x78 and d[end + 2] >= 24:  # a URI, as the agent's
                pos = end + 3 + d[end + 2]
                endpoint_uri = d[end + 3:pos].decode()
            else:
                endpoint_uri, pos = _tstr(d, end + 1)
            endpoint = _new(_EndpointTwin)
            endpoint.transport = transport
            endpoint.uri = endpoint_uri
            endpoint.__class__ = Endpoint
            endpoints.append(endpoint)
        if d[pos] != 11:
            raise _Unusual
        k = _SHORT_TEXT[d[pos + 1]]
        if k >= 0:
            end = pos + 2 + k
            domain = d[pos + 2:end].decode()
            pos = end
        else:
            domain, pos = _tstr(d, pos + 1)
        if d[pos + 1] == 0x1A:  # (a valid record holds at least 2 octets more)
            key12, issued_at, key13, head13, lease, key14, record_version = _times(d, pos)
        else:
            key12 = 0
        if (key12 == 12 and key13 == 13 and head13 == 0x19 and key14 == 14
                and record_version < 24 and issued_at >> 16 and lease >> 8):
            pos += _TIMES_SIZE
        else:  # not the usual heads: each read by its own
            if d[pos] != 12:
                raise _Unusual
            issued_at, pos = _arg(d, pos + 1, 0)
            if d[pos] != 13:
                raise _Unusual
            lease, pos = _arg(d, pos + 1, 0)
            if d[pos] != 14:
                raise _Unusual
            record_version, pos = _arg(d, pos + 1, 0)
        if d[pos] != 15:
            raise _Unusual
        k, pos = _arg(d, pos + 1, 2)
        public_key = d[pos:pos + k]
        pos += k
        attributes: dict[str, AttrValue] = {}
        if pos < len(d) and d[pos] == 16:
            attributes, pos = _attributes(d, pos + 1)
            found += 1
        if pos != len(d) or n != found:
            raise _Unusual
        _check_uri(uri, domain)
        record = _new(_RecordTwin)
        record.agent_uri = uri
        record.agent_id = agent_id
        record.name = name
        record.version = version
        record.skills = tuple(skills)
        record.default_input_modes = in_modes
        record.default_output_modes = out_modes
        record.endpoints = tuple(endpoints)
        record.domain = domain
        record.issued_at = issued_at
        record.lease = lease
        record.record_version = record_version
        record.public_key = public_key
        record.description = description
        record.provider = provider
        record.attributes = attributes
        record.__class__ = CapabilityRecord
        return record  # type: ignore[no-any-return]
    except (_Unusual, IndexError, ValueError, DecodeError, struct.error):
        return None
