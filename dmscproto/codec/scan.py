"""Fast path of capability record decoding (draft-dmsc-protocol-00, Section 7.2):
:func:`scan_record` reads a record straight from its octets."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from .errors import DecodeError
from .registry import ID_SIZE
from .schema import AttrValue
from .values import _RECORD_REQUIRED, CapabilityRecord, Endpoint, Provider, Skill, _check_uri


class _Unusual(Exception):
    """The octets are not in the shape :func:`scan_record` decides; :func:`cbor.loads`
    and :meth:`CapabilityRecord.from_cbor` will."""


def _arg(d: bytes, pos: int, major: int) -> tuple[int, int]:
    """(argument, position after it) of the head at ``pos``, of type ``major``, in its
    shortest form (RFC 8949, Section 4.2.1); _Unusual for anything else.

    No reader here checks that a string ends within ``d``: a position past its end
    makes the next read raise IndexError, and :func:`scan_record` ends with
    ``pos == len(d)``."""
    info = d[pos] - (major << 5)
    if 0 <= info < 24:
        return info, pos + 1
    if 24 <= info <= 27:
        size = 1 << (info - 24)
        n = int.from_bytes(d[pos + 1:pos + 1 + size], "big")
        if n >= (24 if size == 1 else 1 << (4 * size)):
            return n, pos + 1 + size
    raise _Unusual


def _bstr(d: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _arg(d, pos, 2)
    return d[pos:pos + n], pos + n


def _tstr(d: bytes, pos: int) -> tuple[str, int]:
    """A text string (UnicodeDecodeError, a ValueError, if it is not UTF-8)."""
    n = d[pos] - 0x60
    if 0 <= n < 24:
        pos += 1
    else:
        n, pos = _arg(d, pos, 3)
    return d[pos:pos + n].decode(), pos + n


def _tstrs(d: bytes, pos: int, nonempty: bool) -> tuple[tuple[str, ...], int]:
    """``[* tstr]`` (``[+ tstr]`` if ``nonempty``), at most 23 of them."""
    n = d[pos] - 0x80
    if not (nonempty <= n < 24):
        raise _Unusual
    pos += 1
    out = []
    for _ in range(n):
        t, pos = _tstr(d, pos)
        out.append(t)
    return tuple(out), pos


def _skill(d: bytes, pos: int) -> tuple[Skill, int]:
    n = d[pos] - 0xA0
    if not 3 <= n <= 6 or d[pos + 1] != 1:
        raise _Unusual
    sid, pos = _tstr(d, pos + 2)
    if d[pos] != 2:
        raise _Unusual
    name, pos = _tstr(d, pos + 1)
    description = None
    if d[pos] == 3:
        description, pos = _tstr(d, pos + 1)
        n -= 1
    if d[pos] != 4:
        raise _Unusual
    tags, pos = _tstrs(d, pos + 1, False)
    modes: list[tuple[str, ...]] = [(), ()]
    last = 4
    for _ in range(n - 3):
        key = d[pos]
        if not last < key <= 6:
            raise _Unusual
        modes[key - 5], pos = _tstrs(d, pos + 1, True)
        last = key
    return Skill(sid, name, tags, description, modes[0], modes[1]), pos


def _endpoints(d: bytes, pos: int) -> tuple[tuple[Endpoint, ...], int]:
    n = d[pos] - 0x80
    if not 0 <= n < 24:
        raise _Unusual
    pos += 1
    out = []
    for _ in range(n):
        if d[pos] != 0xA2 or d[pos + 1] != 1:
            raise _Unusual
        transport, pos = _tstr(d, pos + 2)
        if d[pos] != 2:
            raise _Unusual
        uri, pos = _tstr(d, pos + 1)
        out.append(Endpoint(transport, uri))
    return tuple(out), pos


def _provider(d: bytes, pos: int) -> tuple[Provider, int]:
    n = d[pos] - 0xA0
    if not 1 <= n <= 2 or d[pos + 1] != 1:
        raise _Unusual
    org, pos = _tstr(d, pos + 2)
    url = None
    if n == 2:
        if d[pos] != 2:
            raise _Unusual
        url, pos = _tstr(d, pos + 1)
    return Provider(org, url), pos


def _attributes(d: bytes, pos: int) -> tuple[dict[str, AttrValue], int]:
    n = d[pos] - 0xA0
    if not 1 <= n < 24:
        raise _Unusual
    pos += 1
    out: dict[str, AttrValue] = {}
    last = (0, "")
    for _ in range(n):
        name, pos = _tstr(d, pos)
        order = (len(name.encode()), name)
        if order <= last:  # deterministic order (RFC 8949, 4.2.1), no duplicate
            raise _Unusual
        last = order
        b = d[pos]
        if b == 0xF4 or b == 0xF5:
            out[name] = b == 0xF5
            pos += 1
        elif b >> 5 == 3:
            out[name], pos = _tstr(d, pos)
        elif b >> 5 == 0:
            out[name], pos = _arg(d, pos, 0)
        else:
            n1, pos = _arg(d, pos, 1)
            out[name] = -1 - n1
    return out, pos


def scan_record(d: bytes) -> CapabilityRecord | None:
    """Fast path of ``CapabilityRecord.from_cbor(cbor.loads(d))``: one pass over the
    octets of a record in deterministic encoding, no intermediate CBOR objects and no
    re-encoding.  The record those would give, or None: then they decide (and name
    the error), as for every input whose shape is unusual here (tags, long arrays,
    indefinite lengths, a record they refuse)."""
    texts = _RECORD_TEXTS
    try:
        n = d[0] - 0xA0
        if not 13 <= n <= 16:
            raise _Unusual
        v: list[Any] = [None] * 17
        pos, last = 1, 0
        for _ in range(n):
            key = d[pos]
            if not last < key <= 16:
                raise _Unusual
            last = key
            pos += 1
            if key in texts:
                v[key], pos = _tstr(d, pos)
            elif key == 2 or key == 15:
                v[key], pos = _bstr(d, pos)
            elif 12 <= key <= 14:
                v[key], pos = _arg(d, pos, 0)
            elif key == 8 or key == 9:
                v[key], pos = _tstrs(d, pos, False)
            elif key == 7:
                k = d[pos] - 0x80
                if not 0 <= k < 24:
                    raise _Unusual
                pos += 1
                skills = []
                for _ in range(k):
                    skill, pos = _skill(d, pos)
                    skills.append(skill)
                v[7] = tuple(skills)
            elif key == 10:
                v[10], pos = _endpoints(d, pos)
            elif key == 6:
                v[6], pos = _provider(d, pos)
            else:  # 16
                v[16], pos = _attributes(d, pos)
        if pos != len(d) or None in itemgetter(*_RECORD_REQUIRED)(v) \
                or len(v[2]) != ID_SIZE:
            raise _Unusual
        _check_uri(v[1], v[11])
        return CapabilityRecord(v[1], v[2], v[3], v[5], v[7], v[8], v[9], v[10], v[11],
                                v[12], v[13], v[14], v[15], v[4], v[6],
                                {} if v[16] is None else v[16])
    except (_Unusual, IndexError, ValueError, DecodeError):
        return None


#: The record's members that are text strings.
_RECORD_TEXTS = frozenset({1, 3, 4, 5, 11})
