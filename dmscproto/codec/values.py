"""Structured TLV values: the CBOR data items of draft-dmsc-protocol-00, Section 7.

Each class maps one CDDL rule onto a frozen dataclass with ``to_cbor()`` (the CBOR
data model, integer map keys) and ``from_cbor()`` (schema check, raising
:class:`DecodeError` with INVALID_TLV_VALUE).  Maps use the integer keys of the CDDL;
keys not defined there are an error in protocol version 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .cbor import check_key_order
from .errors import DecodeError
from .registry import ID_SIZE, ConstraintOp, ErrorCode

T = TypeVar("T")
AttrValue = str | int | bool
ConstraintValue = AttrValue | tuple[AttrValue, ...]


def _invalid(what: str) -> DecodeError:
    return DecodeError(ErrorCode.INVALID_TLV_VALUE, 0, what)


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


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise _invalid(f"{what} is not an unsigned integer")
    return v


def _bytes(v: Any, what: str, size: int | None = None) -> bytes:
    if type(v) is not bytes or (size is not None and len(v) != size):
        raise _invalid(f"{what} is not a byte string" + (f" of {size} octets" if size else ""))
    return v


def _texts(v: Any, what: str) -> tuple[str, ...]:
    if type(v) is not list:
        raise _invalid(f"{what} is not an array")
    return tuple(_text(x, what) for x in v)


def _array(v: Any, what: str, item: Callable[[Any], T]) -> tuple[T, ...]:
    if type(v) is not list:
        raise _invalid(f"{what} is not an array")
    return tuple(item(x) for x in v)


def _attr_value(v: Any, what: str) -> AttrValue:
    if type(v) not in (str, int, bool):
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
        m = _map(obj, "provider", frozenset({1}), frozenset({1, 2}))
        url = m.get(2)
        return cls(_text(m[1], "provider organization"),
                   None if url is None else _text(url, "provider url"))


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
        m = _map(obj, "skill", frozenset({1, 2, 4}), frozenset({1, 2, 3, 4, 5, 6}))
        desc = m.get(3)
        return cls(
            id=_text(m[1], "skill id"),
            name=_text(m[2], "skill name"),
            tags=_texts(m[4], "skill tags"),
            description=None if desc is None else _text(desc, "skill description"),
            input_modes=_texts(m.get(5, []), "skill input modes"),
            output_modes=_texts(m.get(6, []), "skill output modes"),
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``endpoint`` (Section 7.2): how the agent's gateway reaches it."""

    transport: str
    uri: str

    def to_cbor(self) -> dict[int, Any]:
        return {1: self.transport, 2: self.uri}

    @classmethod
    def from_cbor(cls, obj: Any) -> Endpoint:
        m = _map(obj, "endpoint", frozenset({1, 2}), frozenset({1, 2}))
        return cls(_text(m[1], "endpoint transport"), _text(m[2], "endpoint uri"))


_RECORD_REQUIRED = frozenset({1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15})
_RECORD_ALLOWED = _RECORD_REQUIRED | {4, 6, 16}


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

    @property
    def agent_name(self) -> str:
        """The ``<agent-name>`` part of ``dmsc://<domain>/<agent-name>``."""
        return self.agent_uri.rsplit("/", 1)[1]

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
        m = _map(obj, "capability record", _RECORD_REQUIRED, _RECORD_ALLOWED)
        uri = _text(m[1], "agent uri")
        domain = _text(m[11], "domain")
        prefix = f"dmsc://{domain}/"
        if not uri.startswith(prefix) or len(uri) == len(prefix) or "/" in uri[len(prefix):]:
            raise _invalid(f"agent uri {uri!r} is not dmsc://{domain}/<agent-name>")
        attrs = m.get(16, {})
        if type(attrs) is not dict:
            raise _invalid("attributes is not a map")
        check_key_order([_text(k, "attribute name") for k in attrs])
        desc = m.get(4)
        prov = m.get(6)
        return cls(
            agent_uri=uri,
            agent_id=_bytes(m[2], "agent id", ID_SIZE),
            name=_text(m[3], "name"),
            version=_text(m[5], "version"),
            skills=_array(m[7], "skills", Skill.from_cbor),
            default_input_modes=_texts(m[8], "default input modes"),
            default_output_modes=_texts(m[9], "default output modes"),
            endpoints=_array(m[10], "endpoints", Endpoint.from_cbor),
            domain=domain,
            issued_at=_uint(m[12], "issued-at"),
            lease=_uint(m[13], "lease"),
            record_version=_uint(m[14], "record version"),
            public_key=_bytes(m[15], "public key"),
            description=None if desc is None else _text(desc, "description"),
            provider=None if prov is None else Provider.from_cbor(prov),
            attributes={k: _attr_value(v, "attribute value") for k, v in attrs.items()},
        )


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
        if type(op) is not int or op not in ConstraintOp._value2member_map_:
            raise _invalid(f"unknown constraint operator {op!r}")
        cop = ConstraintOp(op)
        if cop is ConstraintOp.IN:
            val: ConstraintValue = _array(value, "constraint values",
                                          lambda x: _attr_value(x, "constraint value"))
        else:
            val = _attr_value(value, "constraint value")
        return cls(_text(attr, "constraint attribute"), cop, val)


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
        m = _map(obj, "discovery query", frozenset(), frozenset(range(1, 8)))
        intent, domain = m.get(3), m.get(7)
        return cls(
            skills=_texts(m.get(1, []), "query skills"),
            tags=_texts(m.get(2, []), "query tags"),
            intent=None if intent is None else _text(intent, "query intent"),
            constraints=_array(m.get(4, []), "constraints", Constraint.from_cbor),
            input_modes=_texts(m.get(5, []), "query input modes"),
            output_modes=_texts(m.get(6, []), "query output modes"),
            domain=None if domain is None else _text(domain, "query domain"),
        )


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
        m = _map(obj, "export policy", frozenset({1}), frozenset({1, 2, 3, 4}))
        return cls(
            peer_domains=_texts(m[1], "peer domains"),
            include_tags=_texts(m.get(2, []), "include tags"),
            exclude_tags=_texts(m.get(3, []), "exclude tags"),
            include_agents=_texts(m.get(4, []), "include agents"),
        )


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
        m = _map(obj, "trace context", frozenset({1}), frozenset({1, 2}))
        state = m.get(2)
        return cls(_text(m[1], "traceparent"),
                   None if state is None else _text(state, "tracestate"))


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
        m = _map(obj, "hop record", frozenset({1, 2, 3}), frozenset({1, 2, 3, 4}))
        name = m.get(4)
        return cls(_bytes(m[1], "hop gateway id", ID_SIZE), _text(m[2], "hop domain"),
                   _uint(m[3], "hop timestamp"), None if name is None else _text(name, "hop name"))
