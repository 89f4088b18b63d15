"""DMSC messages as typed dataclasses (draft-dmsc-protocol-00, Sections 5 and 6).

Each message class names its TLVs once, in the field metadata: ``tlv(TlvType.X)`` for a
required TLV, ``tlv(TlvType.X, default=None)`` for at most one, ``tlv(TlvType.X, default=())``
for any number.  The codec (:mod:`dmscproto.codec.pdu`) and the draft's per-message
tables are both driven by that metadata.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar, dataclass_transform

from .cose import SignedRecord
from .registry import ErrorCode, MessageType, Scope, TlvType
from .values import DiscoveryQuery, ExportPolicy, HopRecord, TraceContext
from .wire import Advertisement, CapabilitySummary, DigestNode, DigestSummary, Result, VersionedId


class Occurs(Enum):
    """How often a TLV appears in a message."""

    REQUIRED = "1"
    OPTIONAL = "0..1"
    REPEATED = "0..n"


REQUIRED, OPTIONAL, REPEATED = Occurs.REQUIRED, Occurs.OPTIONAL, Occurs.REPEATED


def tlv(tlv_type: TlvType, *, default: Any = MISSING) -> Any:
    """Declare a message field carried in a TLV of ``tlv_type``: required without a
    default, at most once with ``default=None``, any number of times with ``default=()``."""
    if default is MISSING:
        occurs = REQUIRED
    elif default is None:
        occurs = OPTIONAL
    elif default == ():
        occurs = REPEATED
    else:
        raise ValueError(f"tlv() default must be None or (), not {default!r}")
    meta = {"tlv": tlv_type, "occurs": occurs}
    return field(metadata=meta) if occurs is REQUIRED else field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class RawTlv:
    """A TLV this implementation does not understand in this message, kept verbatim."""

    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One TLV-carried field of a message class."""

    name: str
    tlv: TlvType
    occurs: Occurs


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base of all messages: the header fields every PDU has (Section 4.1)."""

    TYPE: ClassVar[MessageType]
    SPEC: ClassVar[tuple[FieldSpec, ...]]
    BY_TLV: ClassVar[dict[int, FieldSpec]]
    BY_NAME: ClassVar[dict[str, FieldSpec]]
    #: Every dataclass field's name: the header's and the TLVs'.
    FIELD_NAMES: ClassVar[frozenset[str]]
    #: Relayed by gateways: decoded with the image of its octets, so that what a relay
    #: sends on copies the TLVs it did not change (:func:`~.pdu.rewrite`).
    RELAYED: ClassVar[bool] = False

    transaction_id: int = 0
    flags: int = 0
    unknown_tlvs: tuple[RawTlv, ...] = ()


#: Message classes by type code, filled by :func:`message`.
MESSAGE_CLASSES: dict[int, type[Message]] = {}


M = TypeVar("M", bound=Message)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(tlv, field))
def message(mtype: MessageType) -> Callable[[type[M]], type[M]]:
    """Class decorator: make a frozen dataclass message of type ``mtype`` and register it."""
    def wrap(cls: type[M]) -> type[M]:
        cls = dataclass(frozen=True, kw_only=True)(cls)
        cls.TYPE = mtype
        spec = tuple(FieldSpec(f.name, f.metadata["tlv"], f.metadata["occurs"])
                     for f in fields(cls) if "tlv" in f.metadata)
        cls.SPEC = tuple(sorted(spec, key=lambda s: s.tlv.value))
        cls.BY_TLV = {s.tlv.value: s for s in spec}
        cls.BY_NAME = {s.name: s for s in spec}
        cls.FIELD_NAMES = frozenset(f.name for f in fields(cls))
        cls.__init__ = _dict_init(cls)  # type: ignore[method-assign]
        MESSAGE_CLASSES[mtype.value] = cls
        return cls
    return wrap


def _dict_init(cls: type[Message]) -> Callable[..., None]:
    """The ``__init__`` of the message dataclass ``cls`` (the same keyword-only
    parameters, defaults and annotations) storing every field into the instance's
    ``__dict__`` at once: the frozen dataclass's own stores each with
    ``object.__setattr__`` (about 1.9x the time for a REGISTER, by timeit), and a message is made
    for every request and answer sent.  Made from source, as :mod:`dataclasses` makes
    its own; only for what it can stand for: plain fields with plain defaults, no
    ``__post_init__`` (TypeError otherwise, when the class is defined)."""
    if hasattr(cls, "__post_init__") or any(
            f.default_factory is not MISSING or not f.init or not f.kw_only
            for f in fields(cls)):
        raise TypeError(f"{cls.__name__}: a field or __post_init__ the made __init__ "
                        "would not honour")
    names = [f.name for f in fields(cls)]
    defaults = {f"_default_{f.name}": f.default for f in fields(cls) if f.default is not MISSING}
    params = ", ".join(n if f"_default_{n}" not in defaults else f"{n}=_default_{n}"
                       for n in names)
    source = (f"def __init__(self, *, {params}):\n"
              f"    self.__dict__.update({', '.join(f'{n}={n}' for n in names)})\n")
    namespace = dict(defaults)
    # the source is made of field names only; the function's globals are its module's,
    # where its annotations name what they name (for documentation tools)
    exec(source, sys.modules[cls.__module__].__dict__, namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    return init


# --- Section 5.1: registration ---------------------------------------------------------
@message(MessageType.REGISTER)
class Register(Message):
    """REGISTER (= IAIP CAP_ADV): a signed capability record and the lease asked for."""

    record: SignedRecord = tlv(TlvType.SIGNED_RECORD)
    lease: int = tlv(TlvType.LEASE)
    nonce: bytes = tlv(TlvType.NONCE)
    timestamp: int = tlv(TlvType.TIMESTAMP)
    token: bytes | None = tlv(TlvType.ACCESS_TOKEN, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.REGISTER_ACK)
class RegisterAck(Message):
    """REGISTER-ACK: the outcome, and on success the agent ID and the lease granted."""

    status: ErrorCode = tlv(TlvType.STATUS)
    agent_id: bytes | None = tlv(TlvType.AGENT_ID, default=None)
    lease: int | None = tlv(TlvType.LEASE, default=None)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.REFRESH)
class Refresh(Message):
    """REFRESH: extend the lease of a registered agent."""

    agent_id: bytes = tlv(TlvType.AGENT_ID)
    lease: int = tlv(TlvType.LEASE)
    nonce: bytes = tlv(TlvType.NONCE)
    timestamp: int = tlv(TlvType.TIMESTAMP)
    token: bytes | None = tlv(TlvType.ACCESS_TOKEN, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.REFRESH_ACK)
class RefreshAck(Message):
    """REFRESH-ACK: the outcome and, on success, the lease granted."""

    status: ErrorCode = tlv(TlvType.STATUS)
    lease: int | None = tlv(TlvType.LEASE, default=None)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.DEREGISTER)
class Deregister(Message):
    """DEREGISTER: withdraw a registration before its lease ends."""

    agent_id: bytes = tlv(TlvType.AGENT_ID)
    nonce: bytes = tlv(TlvType.NONCE)
    timestamp: int = tlv(TlvType.TIMESTAMP)
    token: bytes | None = tlv(TlvType.ACCESS_TOKEN, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.DEREGISTER_ACK)
class DeregisterAck(Message):
    """DEREGISTER-ACK: the outcome."""

    status: ErrorCode = tlv(TlvType.STATUS)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


# --- Section 5.2: discovery -------------------------------------------------------------
@message(MessageType.DISCOVER)
class Discover(Message):
    """DISCOVER (= IAIP INTENT_REQ): a query, its scope and the most answers wanted."""

    query: DiscoveryQuery = tlv(TlvType.QUERY)
    scope: Scope = tlv(TlvType.SCOPE)
    max_results: int = tlv(TlvType.MAX_RESULTS)
    source_agent: bytes | None = tlv(TlvType.SOURCE_AGENT, default=None)
    hop_limit: int | None = tlv(TlvType.HOP_LIMIT, default=None)
    path: tuple[bytes, ...] | None = tlv(TlvType.PATH_VECTOR, default=None)
    token: bytes | None = tlv(TlvType.ACCESS_TOKEN, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.DISCOVER_REPLY)
class DiscoverReply(Message):
    """DISCOVER-REPLY: ranked records, best first."""

    status: ErrorCode = tlv(TlvType.STATUS)
    results: tuple[Result, ...] = tlv(TlvType.RESULT, default=())
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


# --- Section 5.3: routing ---------------------------------------------------------------
@message(MessageType.ROUTE_REQUEST)
class RouteRequest(Message):
    """ROUTE-REQUEST: an opaque payload for an agent, or for the best match of a query."""

    RELAYED = True
    source_agent: bytes = tlv(TlvType.SOURCE_AGENT)
    target_agent: bytes | None = tlv(TlvType.TARGET_AGENT, default=None)
    query: DiscoveryQuery | None = tlv(TlvType.QUERY, default=None)
    hop_limit: int = tlv(TlvType.HOP_LIMIT)
    path: tuple[bytes, ...] = tlv(TlvType.PATH_VECTOR)
    payload: bytes = tlv(TlvType.PAYLOAD)
    timeout_ms: int | None = tlv(TlvType.TIMEOUT, default=None)
    token: bytes | None = tlv(TlvType.ACCESS_TOKEN, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.ROUTE_REPLY)
class RouteReply(Message):
    """ROUTE-REPLY: the answer (or an error), back along the return path."""

    RELAYED = True
    status: ErrorCode = tlv(TlvType.STATUS)
    target_agent: bytes | None = tlv(TlvType.TARGET_AGENT, default=None)
    path: tuple[bytes, ...] | None = tlv(TlvType.PATH_VECTOR, default=None)
    payload: bytes | None = tlv(TlvType.PAYLOAD, default=None)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


# --- Section 6: gateway peering and sync ------------------------------------------------
@message(MessageType.OPEN)
class Open(Message):
    """OPEN: who the gateway is, its domain, proposed hold time and capabilities."""

    gateway_id: bytes = tlv(TlvType.GATEWAY_ID)
    domain: str = tlv(TlvType.DOMAIN)
    hold_time: int = tlv(TlvType.HOLD_TIME)
    capabilities: int = tlv(TlvType.GATEWAY_CAPS)
    export_policy: ExportPolicy | None = tlv(TlvType.EXPORT_POLICY, default=None)
    token: bytes | None = tlv(TlvType.ACCESS_TOKEN, default=None)


@message(MessageType.KEEPALIVE)
class Keepalive(Message):
    """KEEPALIVE: keeps a peer session's hold timer from expiring."""


@message(MessageType.UPDATE)
class Update(Message):
    """UPDATE: its place in the session's sequence, records advertised, routes withdrawn
    and record versions purged."""

    sequence: int = tlv(TlvType.SEQUENCE)
    advertise: tuple[Advertisement, ...] = tlv(TlvType.ADVERTISE, default=())
    withdraw: tuple[VersionedId, ...] = tlv(TlvType.WITHDRAW, default=())
    purge: tuple[VersionedId, ...] = tlv(TlvType.PURGE, default=())


@message(MessageType.DIGEST)
class Digest(Message):
    """DIGEST: its place in the session's sequence and one node of the digest tree of
    what the sender advertised on the session, with its children or its entries."""

    sequence: int = tlv(TlvType.SEQUENCE)
    summary: DigestSummary = tlv(TlvType.DIGEST_SUMMARY)
    entries: tuple[tuple[VersionedId, ...], ...] = tlv(TlvType.DIGEST_ENTRIES, default=())
    node: DigestNode | None = tlv(TlvType.DIGEST_NODE, default=None)
    children: tuple[DigestSummary, ...] | None = tlv(TlvType.DIGEST_CHILDREN, default=None)


@message(MessageType.SYNC_REQUEST)
class SyncRequest(Message):
    """SYNC-REQUEST: the records a peer wants after comparing a DIGEST."""

    agent_ids: tuple[tuple[bytes, ...], ...] = tlv(TlvType.AGENT_IDS, default=())


@message(MessageType.SYNC_ACK)
class SyncAck(Message):
    """SYNC_ACK: how many sequenced sync messages of the session the sender has applied."""

    sequence: int = tlv(TlvType.SEQUENCE)


@message(MessageType.DIGEST_REQUEST)
class DigestRequest(Message):
    """DIGEST_REQUEST: asks for one node of the peer's digest tree."""

    node: DigestNode = tlv(TlvType.DIGEST_NODE)


@message(MessageType.NOTIFY)
class Notify(Message):
    """NOTIFY: an error on a peer session; the session closes after it."""

    status: ErrorCode = tlv(TlvType.STATUS)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)


# --- Section 6.9: capability summaries ----------------------------------------------------
@message(MessageType.SUMMARY)
class Summary(Message):
    """SUMMARY: the capability summary of the domain of ``gateway_id`` (its origin), of
    version ``timestamp``, and the gateways it crossed; no SUMMARY_FILTER withdraws
    it."""

    gateway_id: bytes = tlv(TlvType.GATEWAY_ID)
    timestamp: int = tlv(TlvType.TIMESTAMP)
    path: tuple[bytes, ...] = tlv(TlvType.PATH_VECTOR)
    domain: str = tlv(TlvType.DOMAIN)
    summary: CapabilitySummary | None = tlv(TlvType.SUMMARY_FILTER, default=None)


# --- Section 6.10: certificates of origin assertions --------------------------------------
@message(MessageType.CERTIFICATE)
class Certificate(Message):
    """CERTIFICATE: a gateway certificate (DER) that origin assertions sent on this peer
    session name by its SHA-256 thumbprint (x5t#S256); the receiver keeps it for the
    session."""

    certificate: bytes = tlv(TlvType.CERTIFICATE_DER)


@message(MessageType.CERTIFICATE_ACK)
class CertificateAck(Message):
    """CERTIFICATE_ACK: the outcome; on success the thumbprint of what is kept."""

    status: ErrorCode = tlv(TlvType.STATUS)
    thumbprint: bytes | None = tlv(TlvType.THUMBPRINT, default=None)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)


# --- Section 6.8: OAM --------------------------------------------------------------------
@message(MessageType.ECHO_REQUEST)
class EchoRequest(Message):
    """ECHO-REQUEST: liveness and round-trip time to a gateway."""

    sequence: int = tlv(TlvType.SEQUENCE)
    timestamp: int = tlv(TlvType.TIMESTAMP)
    payload: bytes | None = tlv(TlvType.PAYLOAD, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.ECHO_REPLY)
class EchoReply(Message):
    """ECHO-REPLY: the request's sequence and timestamp, and who answered."""

    sequence: int = tlv(TlvType.SEQUENCE)
    timestamp: int = tlv(TlvType.TIMESTAMP)
    gateway_id: bytes = tlv(TlvType.GATEWAY_ID)
    payload: bytes | None = tlv(TlvType.PAYLOAD, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.TRACE_REQUEST)
class TraceRequest(Message):
    """TRACE-REQUEST: follow the route towards an agent, collecting each gateway."""

    target_agent: bytes = tlv(TlvType.TARGET_AGENT)
    hop_limit: int = tlv(TlvType.HOP_LIMIT)
    path: tuple[bytes, ...] = tlv(TlvType.PATH_VECTOR)
    hops: tuple[HopRecord, ...] = tlv(TlvType.HOP, default=())
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


@message(MessageType.TRACE_REPLY)
class TraceReply(Message):
    """TRACE-REPLY: every gateway on the path, in order, and how the trace ended."""

    status: ErrorCode = tlv(TlvType.STATUS)
    target_agent: bytes | None = tlv(TlvType.TARGET_AGENT, default=None)
    hops: tuple[HopRecord, ...] = tlv(TlvType.HOP, default=())
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
    trace: TraceContext | None = tlv(TlvType.TRACE_CONTEXT, default=None)


# --- Section 5.4: errors ------------------------------------------------------------------
@message(MessageType.ERROR)
class Error(Message):
    """ERROR: a request could not be processed; the transaction id names which."""

    status: ErrorCode = tlv(TlvType.STATUS)
    offending_type: int | None = tlv(TlvType.OFFENDING_TYPE, default=None)
    diagnostic: str | None = tlv(TlvType.DIAGNOSTIC, default=None)
    retry_after: int | None = tlv(TlvType.RETRY_AFTER, default=None)
