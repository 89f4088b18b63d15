"""The DMSC PDU codec (draft-dmsc-protocol-00, Sections 4-7).

``encode(msg) -> bytes`` and ``decode(data) -> msg`` convert between typed message
dataclasses and PDUs; ``decode`` raises nothing but :class:`DecodeError`.
"""

from .cose import SignedRecord
from .errors import DecodeError, EncodeError
from .messages import (
    MESSAGE_CLASSES,
    Deregister,
    DeregisterAck,
    Digest,
    DigestRequest,
    Discover,
    DiscoverReply,
    EchoReply,
    EchoRequest,
    Error,
    Keepalive,
    Message,
    Notify,
    Open,
    RawTlv,
    Refresh,
    RefreshAck,
    Register,
    RegisterAck,
    RouteReply,
    RouteRequest,
    Summary,
    SyncAck,
    SyncRequest,
    TraceReply,
    TraceRequest,
    Update,
)
from .pdu import decode, encode, peek_length
from .registry import (
    ConstraintOp,
    CoseAlgorithm,
    ErrorCode,
    Flags,
    GatewayCaps,
    MessageType,
    Scope,
    TlvType,
)
from .values import (
    CapabilityRecord,
    Constraint,
    DiscoveryQuery,
    Endpoint,
    ExportPolicy,
    HopRecord,
    Provider,
    Skill,
    TraceContext,
)
from .wire import Advertisement, CapabilitySummary, DigestNode, DigestSummary, Result, VersionedId

__all__ = [
    "MESSAGE_CLASSES", "Advertisement", "CapabilityRecord", "CapabilitySummary", "Constraint",
    "ConstraintOp",
    "CoseAlgorithm", "DecodeError", "Deregister", "DeregisterAck", "Digest", "DigestNode",
    "DigestRequest", "DigestSummary",
    "Discover", "DiscoverReply", "DiscoveryQuery", "EchoReply", "EchoRequest", "EncodeError",
    "Endpoint", "Error", "ErrorCode", "ExportPolicy", "Flags", "GatewayCaps", "HopRecord",
    "Keepalive", "Message", "MessageType", "Notify", "Open", "Provider", "RawTlv", "Refresh",
    "RefreshAck", "Register", "RegisterAck", "Result", "RouteReply", "RouteRequest", "Scope",
    "SignedRecord", "Skill", "Summary", "SyncAck", "SyncRequest", "TlvType", "TraceContext",
    "TraceReply", "TraceRequest", "Update", "VersionedId", "decode", "encode", "peek_length",
]
