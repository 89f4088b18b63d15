"""Structured TLV values: the CBOR data items of draft-dmsc-protocol-00, Section 7.

Each class maps one CDDL rule onto a frozen dataclass with ``to_cbor()`` (the CBOR
data model, integer map keys) and ``from_cbor()`` (schema check, raising
:class:`DecodeError` with INVALID_TLV_VALUE).  Maps use the integer keys of the CDDL;
keys not defined there are an error in protocol version 1.  An optional member that is
present must not be null, nor, if it is an array or map (CDDL ``? key => [+ ...]``, the
attributes ``{ + ... }``), empty: ``to_cbor()`` leaves such members out, so only then
does every accepted value re-encode to the octets it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar

from .cbor import check_key_order
from .errors import DecodeError
from .registry import ID_SIZE, ConstraintOp, ErrorCode

T = TypeVar("T")
AttrValue = str | int | bool
ConstraintValue = AttrValue | tuple[AttrValue, ...]


def _invalid(what: str) -> DecodeError:
    return DecodeError(ErrorCode.INVALID_TLV_VALUE, 0, what)


_INT = {int}
_STR = {str}
_ATTR_TYPES = {str, int, bool}


class _Keys:
    """The keys of one CDDL map with integer keys: which are required, which optional.

    :meth:`check` accepts a map at the cost of one set lookup: every sorted key tuple a
    valid map can have is precomputed.  Anything else goes to :func:`_map`, which names
    the first problem.
    """

    def __init__(self, what: str, required: frozenset[int], optional: frozenset[int]) -> None:
        self.what, self.required, self.allowed = what, required, required | optional
        tuples = {tuple(sorted(required))}
        for key in optional:
            tuples |= {tuple(sorted((*t, key))) for t in tuples}
        self.valid = frozenset(tuples)

    def check(self, obj: Any) -> dict[int, Any]:
        valid = type(obj) is dict and tuple(obj) in self.valid
        if valid and (not obj or {*map(type, obj)} == _INT):
            return obj  # type: ignore[no-any-return]
        return _map(obj, self.what, self.required, self.allowed)


def _map(obj: Any, what: str, required: frozenset[int], allowed: frozenset[int]) -> dict[int, Any]:
    if not isinstance(obj, dict):
        raise _invalid(f"{what} is not a map")
    keys = list(obj)
    if keys and set(map(type, keys)) != {int}:
        raise _invalid(f"{what} has a key that is not an unsigned integer")
    if not required.issubset(keys):
        raise _invalid(f"{what} lacks key(s) {sorted(required.difference(keys))}")
    if not allowed.issuperset(keys):
        extra = sorted(k for k in keys if k not in allowed)
        raise _invalid(f"{what} has undefined key(s) {extra}")
    check_key_order(keys)
    return obj


def _text(v: Any, what: str) -> str:
    if type(v) is not str:
        raise _invalid(f"{what} is not a text string")
    return v


def _absent(m: dict[int, Any], key: int, what: str) -> None:
    """Member ``key`` of ``m`` is None: absent is fine, null is not (Section 7.1)."""
    if key in m:
        raise _invalid(f"{what} is null")


def _opt_text(m: dict[int, Any], key: int, what: str) -> str | None:
    """``? key => tstr``."""
    v = m.get(key)
    if type(v) is str:
        return v
    if v is None:
        _absent(m, key, what)
        return None
    raise _invalid(f"{what} is not a text string")


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise _invalid(f"{what} is not an unsigned integer")
    return v


def _bytes(v: Any, what: str, size: int | None = None) -> bytes:
    if type(v) is not bytes or (size is not None and len(v) != size):
        raise _invalid(f"{what} is not a byte string" + (f" of {size} octets" if size else ""))
    return v


def _texts(v: Any, what: str) -> tuple[str, ...]:
    """``[* tstr]``."""
    if type(v) is list and {*map(type, v)} <= _STR:
        return tuple(v)
    if type(v) is not list:
        raise _invalid(f"{what} is not an array")
    raise _invalid(f"{what} is not a text string")


def _opt_texts(m: dict[int, Any], key: int, what: str) -> tuple[str, ...]:
    """``? key => [+ tstr]``: absent is empty, present must not be."""
    v = m.get(key)
    if v is None:
        _absent(m, key, what)
        return ()
    if v == []:
        raise _invalid(f"{what} is present but empty")
    return _texts(v, what)


def _array(v: Any, what: str, item: Callable[[Any], T]) -> tuple[T, ...]:
    if type(v) is not list:
        raise _invalid(f"{what} is not an array")
    return tuple(map(item, v))


def _opt_array(m: dict[int, Any], key: int, what: str,
               item: Callable[[Any], T]) -> tuple[T, ...]:
    """``? key => [+ item]``."""
    v = m.get(key)
    if v is None:
        _absent(m, key, what)
        return ()
    if v == []:
        raise _invalid(f"{what} is present but empty")
    return _array(v, what, item)


def _attr_value(v: Any, what: str) -> AttrValue:
    if type(v) not in _ATTR_TYPES:
        raise _invalid(f"{what} is not a text string, integer or boolean")
    return v  # type: ignore[no-any-return]


def _opt(d: dict[Any, Any], key: Any, value: Any) -> None:
    if value is not None:
        d[key] = value


def _opt_seq(d: dict[Any, Any], key: Any, value: Iterable[Any]) -> None:
    items = list(value)
    if items:
        d[key] = items


@dataclass(frozen=True, slots=True)
class Provider:
    """``provider`` (Section 7.2): the organisation that runs the agent."""

    organization: str
    url: str | None = None

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {1: self.organization}
        _opt(d, 2, self.url)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> Provider:
        m = _PROVIDER_KEYS.check(obj)
        return cls(_text(m[1], "provider organization"), _opt_text(m, 2, "provider url"))


_PROVIDER_KEYS = _Keys("provider", frozenset({1}), frozenset({2}))


@dataclass(frozen=True, slots=True)
class Skill:
    """``skill`` (Section 7.2), one-to-one with an A2A AgentSkill."""

    id: str
    name: str
    tags: tuple[str, ...] = ()
    description: str | None = None
    input_modes: tuple[str, ...] = ()
    output_modes: tuple[str, ...] = ()

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {1: self.id, 2: self.name}
        _opt(d, 3, self.description)
        d[4] = list(self.tags)
        _opt_seq(d, 5, self.input_modes)
        _opt_seq(d, 6, self.output_modes)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> Skill:
        m = _SKILL_KEYS.check(obj)
        return cls(
            _text(m[1], "skill id"),
            _text(m[2], "skill name"),
            _texts(m[4], "skill tags"),
            _opt_text(m, 3, "skill description"),
            _opt_texts(m, 5, "skill input modes"),
            _opt_texts(m, 6, "skill output modes"),
        )


_SKILL_KEYS = _Keys("skill", frozenset({1, 2, 4}), frozenset({3, 5, 6}))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``endpoint`` (Section 7.2): how the agent's gateway reaches it."""

    transport: str
    uri: str

    def to_cbor(self) -> dict[int, Any]:
        return {1: self.transport, 2: self.uri}

    @classmethod
    def from_cbor(cls, obj: Any) -> Endpoint:
        m = _ENDPOINT_KEYS.check(obj)
        return cls(_text(m[1], "endpoint transport"), _text(m[2], "endpoint uri"))


_ENDPOINT_KEYS = _Keys("endpoint", frozenset({1, 2}), frozenset())


@dataclass(frozen=True, slots=True)
class CapabilityRecord:
    """``capability-record`` (Section 7.2): what an agent is and can do.

    The core fields map one-to-one onto the A2A Agent Card; ``domain``, ``issued_at``,
    ``lease``, ``record_version``, ``public_key`` and ``attributes`` are DMSC's own.
    """

    agent_uri: str
    agent_id: bytes
    name: str
    version: str
    skills: tuple[Skill, ...]
    default_input_modes: tuple[str, ...]
    default_output_modes: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]
    domain: str
    issued_at: int
    lease: int
    record_version: int
    public_key: bytes
    description: str | None = None
    provider: Provider | None = None
    attributes: dict[str, AttrValue] = field(default_factory=dict)

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {
            1: self.agent_uri, 2: self.agent_id, 3: self.name, 5: self.version,
            7: [s.to_cbor() for s in self.skills],
            8: list(self.default_input_modes), 9: list(self.default_output_modes),
            10: [e.to_cbor() for e in self.endpoints],
            11: self.domain, 12: self.issued_at, 13: self.lease, 14: self.record_version,
            15: self.public_key,
        }
        _opt(d, 4, self.description)
        _opt(d, 6, None if self.provider is None else self.provider.to_cbor())
        if self.attributes:
            d[16] = dict(self.attributes)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> CapabilityRecord:
        m = _RECORD_KEYS.check(obj)
        uri = _text(m[1], "agent uri")
        domain = _text(m[11], "domain")
        _check_uri(uri, domain)
        attrs = m.get(16)
        if attrs is None:
            _absent(m, 16, "attributes")
            attrs = {}
        elif type(attrs) is not dict or not attrs:
            raise _invalid("attributes is not a non-empty map")
        elif not {*map(type, attrs)} <= _STR:
            raise _invalid("attribute name is not a text string")
        elif len(attrs) > 1:
            check_key_order(list(attrs))
        prov = m.get(6)
        if prov is None:
            _absent(m, 6, "provider")
        record = cls(
            uri,
            _bytes(m[2], "agent id", ID_SIZE),
            _text(m[3], "name"),
            _text(m[5], "version"),
            _array(m[7], "skills", Skill.from_cbor),
            _texts(m[8], "default input modes"),
            _texts(m[9], "default output modes"),
            _array(m[10], "endpoints", Endpoint.from_cbor),
            domain,
            _uint(m[12], "issued-at"),
            _uint(m[13], "lease"),
            _uint(m[14], "record version"),
            _bytes(m[15], "public key"),
            _opt_text(m, 4, "description"),
            None if prov is None else Provider.from_cbor(prov),
            attrs,
        )
        if not {*map(type, attrs.values())} <= _ATTR_TYPES:
            raise _invalid("attribute value is not a text string, integer or boolean")
        return record


def _check_uri(uri: str, domain: str) -> None:
    """A record's agent URI names an agent of its domain (Section 7.2)."""
    prefix = f"dmsc://{domain}/"
    if not uri.startswith(prefix) or len(uri) == len(prefix) or "/" in uri[len(prefix):]:
        raise _invalid(f"agent uri {uri!r} is not dmsc://{domain}/<agent-name>")


_RECORD_REQUIRED = frozenset({1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15})
_RECORD_ALLOWED = _RECORD_REQUIRED | {4, 6, 16}
_RECORD_KEYS = _Keys("capability record", _RECORD_REQUIRED, _RECORD_ALLOWED - _RECORD_REQUIRED)


@dataclass(frozen=True, slots=True)
class Constraint:
    """``constraint`` (Section 7.3): a mandatory filter on a record attribute."""

    attribute: str
    op: ConstraintOp
    value: ConstraintValue = True

    def to_cbor(self) -> list[Any]:
        v = list(self.value) if isinstance(self.value, tuple) else self.value
        return [self.attribute, int(self.op), v]

    @classmethod
    def from_cbor(cls, obj: Any) -> Constraint:
        if type(obj) is not list or len(obj) != 3:
            raise _invalid("constraint is not a 3-element array")
        attr, op, value = obj
        cop = _OPS.get(op) if type(op) is int else None
        if cop is None:
            raise _invalid(f"unknown constraint operator {op!r}")
        if cop is not ConstraintOp.IN:
            val: ConstraintValue = _attr_value(value, "constraint value")
        elif type(value) is not list:
            raise _invalid("constraint values is not an array")
        elif {*map(type, value)} <= _ATTR_TYPES:
            val = tuple(value)
        else:
            raise _invalid("constraint value is not a text string, integer or boolean")
        return cls(_text(attr, "constraint attribute"), cop, val)


_OPS: dict[int, ConstraintOp] = dict(ConstraintOp._value2member_map_)


@dataclass(frozen=True, slots=True)
class DiscoveryQuery:
    """``discovery-query`` (Section 7.3), the INTENT_REQ of IAIP."""

    skills: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    intent: str | None = None
    constraints: tuple[Constraint, ...] = ()
    input_modes: tuple[str, ...] = ()
    output_modes: tuple[str, ...] = ()
    domain: str | None = None

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {}
        _opt_seq(d, 1, self.skills)
        _opt_seq(d, 2, self.tags)
        _opt(d, 3, self.intent)
        _opt_seq(d, 4, (c.to_cbor() for c in self.constraints))
        _opt_seq(d, 5, self.input_modes)
        _opt_seq(d, 6, self.output_modes)
        _opt(d, 7, self.domain)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> DiscoveryQuery:
        m = _QUERY_KEYS.check(obj)
        return cls(
            _opt_texts(m, 1, "query skills"),
            _opt_texts(m, 2, "query tags"),
            _opt_text(m, 3, "query intent"),
            _opt_array(m, 4, "constraints", Constraint.from_cbor),
            _opt_texts(m, 5, "query input modes"),
            _opt_texts(m, 6, "query output modes"),
            _opt_text(m, 7, "query domain"),
        )


_QUERY_KEYS = _Keys("discovery query", frozenset(), frozenset(range(1, 8)))


@dataclass(frozen=True, slots=True)
class ExportPolicy:
    """``export-policy`` (Section 7.4): which records a gateway advertises to a peer."""

    peer_domains: tuple[str, ...]
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    include_agents: tuple[str, ...] = ()

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {1: list(self.peer_domains)}
        _opt_seq(d, 2, self.include_tags)
        _opt_seq(d, 3, self.exclude_tags)
        _opt_seq(d, 4, self.include_agents)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> ExportPolicy:
        m = _POLICY_KEYS.check(obj)
        return cls(
            _texts(m[1], "peer domains"),
            _opt_texts(m, 2, "include tags"),
            _opt_texts(m, 3, "exclude tags"),
            _opt_texts(m, 4, "include agents"),
        )


_POLICY_KEYS = _Keys("export policy", frozenset({1}), frozenset({2, 3, 4}))


@dataclass(frozen=True, slots=True)
class TraceContext:
    """``trace-context`` (Section 7.5): W3C Trace Context carried across every hop."""

    traceparent: str
    tracestate: str | None = None

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {1: self.traceparent}
        _opt(d, 2, self.tracestate)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> TraceContext:
        m = _TRACE_KEYS.check(obj)
        return cls(_text(m[1], "traceparent"), _opt_text(m, 2, "tracestate"))


_TRACE_KEYS = _Keys("trace context", frozenset({1}), frozenset({2}))


@dataclass(frozen=True, slots=True)
class HopRecord:
    """``hop-record`` (Section 7.6): one gateway's report in a TRACE-REPLY."""

    gateway_id: bytes
    domain: str
    timestamp: int
    name: str | None = None

    def to_cbor(self) -> dict[int, Any]:
        d: dict[int, Any] = {1: self.gateway_id, 2: self.domain, 3: self.timestamp}
        _opt(d, 4, self.name)
        return d

    @classmethod
    def from_cbor(cls, obj: Any) -> HopRecord:
        m = _HOP_KEYS.check(obj)
        return cls(_bytes(m[1], "hop gateway id", ID_SIZE), _text(m[2], "hop domain"),
                   _uint(m[3], "hop timestamp"), _opt_text(m, 4, "hop name"))


_HOP_KEYS = _Keys("hop record", frozenset({1, 2, 3}), frozenset({4}))


# --- fast path: a capability record straight from its octets ---------------------------
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
