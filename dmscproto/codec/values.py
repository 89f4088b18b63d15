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

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .cbor import check_key_order
from .registry import ID_SIZE, ConstraintOp
from .schema import (
    _ATTR_TYPES,
    _STR,
    ConstraintValue,
    _absent,
    _array,
    _attr_value,
    _bytes,
    _invalid,
    _Keys,
    _opt,
    _opt_array,
    _opt_seq,
    _opt_text,
    _opt_texts,
    _text,
    _texts,
    _uint,
)
from .schema import AttrValue as AttrValue  # re-exported: the type of attribute values


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
    """A record's agent URI names an agent of its domain (Section 7.2): it is
    ``dmsc://<domain>/<agent-name>``, the name not empty and without a slash, which is
    what its last slash splits it into (2.9k -> 1.7k instructions with a prefix test,
    callgrind)."""
    head, _, name = uri.rpartition("/")
    if not name or head != "dmsc://" + domain:
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


def twin(cls: type[Any]) -> Any:
    """A mutable twin of the frozen slots dataclass ``cls``: the same fields, hence the
    same slots in the same order.  An instance of the twin filled in by its own
    ``__init__``, or made empty (``object.__new__``) and given every field by a slot
    store (cheaper still: no class call), where the frozen ``__init__`` calls
    ``object.__setattr__``, about 5x slower, becomes the object ``cls(*values)`` would
    be by assigning ``cls`` to its ``__class__`` (Python checks the layouts agree)."""
    return dataclasses.make_dataclass(
        f"{cls.__name__}Twin",
        [(f.name, f.type, dataclasses.field(default=f.default, init=f.init,
                                            default_factory=f.default_factory))
         for f in dataclasses.fields(cls)],
        slots=True)


_TraceTwin = twin(TraceContext)


def trace_context(traceparent: str, tracestate: str | None = None) -> TraceContext:
    """``TraceContext(traceparent, tracestate)``, made as its :func:`twin`, empty and
    filled slot by slot (every relayed request carries one: decoded, and made anew at
    each hop; 2.4k -> 1.8k instructions with the twin's ``__init__``, callgrind)."""
    trace = object.__new__(_TraceTwin)
    trace.traceparent = traceparent
    trace.tracestate = tracestate
    trace.__class__ = TraceContext
    return trace  # type: ignore[no-any-return]
