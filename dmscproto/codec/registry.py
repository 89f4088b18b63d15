"""The DMSC registries: the single source of truth for every number on the wire.

Long by design (about 500 lines): every registry, timer and limit is one table in
this one module, so that nothing else defines a protocol number and the generators
read a single place.

Message types, TLV types, header flags, error codes and the small enumerations
carried in TLVs live here and nowhere else (draft-dmsc-protocol-00, Section 11,
"IANA Considerations").  The draft's tables, the Wireshark dissector and the scapy
layer are generated from or checked against this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from types import MappingProxyType

#: Protocol version carried in the first header octet (Section 4.1).
VERSION = 1
#: Size of the common header in octets (Section 4.1).
HEADER_SIZE = 16
#: Size of a TLV header (type and length) in octets (Section 4.2).
TLV_HEADER_SIZE = 4
#: Largest PDU, header included, that a receiver accepts (Section 4.1).
MAX_PDU_SIZE = 65535
#: TLV type bit that marks a TLV as must-understand ("critical", Section 4.2).
CRITICAL_BIT = 0x8000
#: Size of an Agent ID or Gateway ID (Section 3.2).
ID_SIZE = 16
#: Most gateway ids a PATH_VECTOR can carry (8-bit count, Section 4.3).
MAX_PATH = 255
#: Size of a certificate THUMBPRINT: SHA-256 of its DER encoding, x5t#S256 (Section 6.10).
THUMBPRINT_SIZE = 32
#: Size of a NONCE: random octets, unique per request (Section 5.1).
NONCE_SIZE = 16
#: ALPN protocol identifier for DMSC over QUIC (Section 9.1).
ALPN = "dmsc/1"
#: Default largest UDP payload a datagram transport sends (Section 9.2): the IPv6 minimum
#: MTU less IP and UDP headers, rounded down, as QUIC assumes.
DEFAULT_MAX_DATAGRAM = 1200
#: UDP port for cleartext lab mode and DTLS (Section 9).
UDP_PORT = 4760
#: Sequenced sync messages a gateway may send on a session beyond what the peer has
#: acknowledged with SYNC_ACK (Section 6.5.1).
SYNC_WINDOW = 16
#: Children of each node of the digest tree (Section 6.6.1).
DIGEST_FANOUT = 16
#: Level of the digest tree's leaves (the root is level 0), so DIGEST_FANOUT **
#: DIGEST_LEAF_LEVEL leaves, each for the Agent IDs starting with its index (Section 6.6.1).
DIGEST_LEAF_LEVEL = 3


class MessageType(IntEnum):
    """Message Type registry (Section 11.2)."""

    REGISTER = 0x01
    REGISTER_ACK = 0x02
    REFRESH = 0x03
    REFRESH_ACK = 0x04
    DEREGISTER = 0x05
    DEREGISTER_ACK = 0x06
    DISCOVER = 0x10
    DISCOVER_REPLY = 0x11
    ROUTE_REQUEST = 0x20
    ROUTE_REPLY = 0x21
    OPEN = 0x30
    KEEPALIVE = 0x31
    UPDATE = 0x32
    DIGEST = 0x33
    SYNC_REQUEST = 0x34
    NOTIFY = 0x35
    SUMMARY = 0x3A
    SYNC_ACK = 0x36
    DIGEST_REQUEST = 0x37
    CERTIFICATE = 0x38
    CERTIFICATE_ACK = 0x39
    ECHO_REQUEST = 0x40
    ECHO_REPLY = 0x41
    TRACE_REQUEST = 0x42
    TRACE_REPLY = 0x43
    ERROR = 0x7F


_M = MessageType
#: The answer type of each request type (Section 3.3); ERROR may answer any request.
ANSWER_TO: Mapping[MessageType, MessageType] = MappingProxyType({
    _M.REGISTER: _M.REGISTER_ACK,
    _M.REFRESH: _M.REFRESH_ACK,
    _M.DEREGISTER: _M.DEREGISTER_ACK,
    _M.DISCOVER: _M.DISCOVER_REPLY,
    _M.ROUTE_REQUEST: _M.ROUTE_REPLY,
    _M.OPEN: _M.OPEN,
    _M.SYNC_REQUEST: _M.UPDATE,
    _M.DIGEST_REQUEST: _M.DIGEST,
    _M.CERTIFICATE: _M.CERTIFICATE_ACK,
    _M.ECHO_REQUEST: _M.ECHO_REPLY,
    _M.TRACE_REQUEST: _M.TRACE_REPLY,
})
#: Messages sent without an answer and never retransmitted (Section 3.3); UPDATE is also
#: SYNC-REQUEST's answer, DIGEST also DIGEST_REQUEST's.
ONE_WAY: frozenset[MessageType] = frozenset({_M.KEEPALIVE, _M.UPDATE, _M.DIGEST, _M.NOTIFY,
                                             _M.SUMMARY, _M.SYNC_ACK})
#: The messages of a peer session (Section 6): only gateways send them.
SESSION_MESSAGES: frozenset[MessageType] = frozenset({
    _M.OPEN, _M.KEEPALIVE, _M.UPDATE, _M.DIGEST, _M.SYNC_REQUEST, _M.NOTIFY, _M.SUMMARY,
    _M.SYNC_ACK, _M.DIGEST_REQUEST, _M.CERTIFICATE})
del _M


class Flags(IntFlag):
    """Header Flags registry (Section 11.3).  Unassigned bits are sent as zero,
    ignored on receipt and preserved when a PDU is re-encoded."""

    RETRANSMISSION = 0x0001
    """Set on a request sent again over a datagram transport (Section 9.3)."""


class TlvType(IntEnum):
    """TLV Type registry (Section 11.4).  Codes with bit 0x8000 set are critical."""

    TRACE_CONTEXT = 0x0001
    DIAGNOSTIC = 0x0002
    RETRY_AFTER = 0x0050
    AGENT_ID = 0x8001
    GATEWAY_ID = 0x8002
    SIGNED_RECORD = 0x8003
    LEASE = 0x8004
    STATUS = 0x8005
    NONCE = 0x8006
    TIMESTAMP = 0x8007
    QUERY = 0x8008
    SCOPE = 0x8009
    MAX_RESULTS = 0x800A
    RESULT = 0x800B
    SOURCE_AGENT = 0x800C
    TARGET_AGENT = 0x800D
    HOP_LIMIT = 0x800E
    PATH_VECTOR = 0x800F
    PAYLOAD = 0x8010
    DOMAIN = 0x8011
    HOLD_TIME = 0x8012
    GATEWAY_CAPS = 0x8013
    ADVERTISE = 0x8014
    WITHDRAW = 0x8015
    DIGEST_SUMMARY = 0x8016
    DIGEST_ENTRIES = 0x8017
    AGENT_IDS = 0x8018
    ACCESS_TOKEN = 0x8019
    OFFENDING_TYPE = 0x801A
    TIMEOUT = 0x801B
    EXPORT_POLICY = 0x801C
    SEQUENCE = 0x801D
    HOP = 0x801E
    SUMMARY_FILTER = 0x8040
    PURGE = 0x8020
    DIGEST_NODE = 0x8021
    DIGEST_CHILDREN = 0x8022
    CERTIFICATE_DER = 0x8058
    THUMBPRINT = 0x8059

    @property
    def critical(self) -> bool:
        return bool(self.value & CRITICAL_BIT)


class ErrorClass(IntEnum):
    """The class of an error code, its high octet (Section 11.5): what a receiver that
    does not know a code takes it to mean (Section 4.3)."""

    SUCCESS = 0x00
    DECODING = 0x01
    PROTOCOL = 0x02
    REGISTRATION = 0x03
    ROUTING = 0x04
    SECURITY = 0x05
    RESOURCES = 0x06


class ErrorCode(IntEnum):
    """Error Code registry (Section 11.5), carried in STATUS TLVs.  The registry is open:
    ``ErrorCode(n)`` of any other 16-bit ``n`` is a code this receiver does not know
    (``registered`` false), which it handles by its :attr:`error_class` (Section 4.3)."""

    SUCCESS = 0x0000
    # Decoding errors (Section 4.4)
    TRUNCATED = 0x0101
    TRAILING_DATA = 0x0102
    LENGTH_MISMATCH = 0x0103
    UNSUPPORTED_VERSION = 0x0104
    UNKNOWN_MESSAGE_TYPE = 0x0105
    UNKNOWN_CRITICAL_TLV = 0x0106
    DUPLICATE_TLV = 0x0107
    PDU_TOO_LARGE = 0x0108
    MALFORMED_CBOR = 0x0109
    NON_DETERMINISTIC_CBOR = 0x010A
    MALFORMED_COSE = 0x010B
    MISSING_TLV = 0x010C
    INVALID_TLV_LENGTH = 0x010D
    INVALID_TLV_VALUE = 0x010E
    TLV_ORDER = 0x010F
    # Protocol errors (Section 6)
    UNEXPECTED_MESSAGE = 0x0201
    HOLD_TIMER_EXPIRED = 0x0202
    TRANSACTION_TIMEOUT = 0x0203
    CEASE = 0x0204
    CERTIFICATE_UNKNOWN = 0x0205
    MAX_RECORDS_EXCEEDED = 0x020B
    PATH_TOO_LONG = 0x020C
    # Registration errors (Section 5.1)
    UNKNOWN_AGENT = 0x0301
    NAME_CONFLICT = 0x0302
    LEASE_EXPIRED = 0x0303
    # Routing errors (Section 5.3)
    NO_ROUTE = 0x0401
    LOOP_DETECTED = 0x0402
    HOP_LIMIT_EXCEEDED = 0x0403
    TARGET_UNREACHABLE = 0x0404
    # Security errors (Section 10)
    BAD_SIGNATURE = 0x0501
    UNTRUSTED_CERTIFICATE = 0x0502
    IDENTITY_MISMATCH = 0x0503
    REPLAY = 0x0504
    STALE_TIMESTAMP = 0x0505
    INVALID_TOKEN = 0x0506
    TOKEN_EXPIRED = 0x0507
    INSUFFICIENT_SCOPE = 0x0508
    WRONG_AUDIENCE = 0x0509
    TOKEN_KEY_MISMATCH = 0x050A
    CERTIFICATE_REVOKED = 0x050B
    CERTIFICATE_EXPIRED = 0x050C
    POLICY_DENIED = 0x050D
    # Resource errors
    RATE_LIMITED = 0x0601
    RESOURCE_EXHAUSTED = 0x0602
    INTERNAL_ERROR = 0x0603
    QUERY_TOO_LARGE = 0x0604

    @classmethod
    def _missing_(cls, value: object) -> ErrorCode | None:
        """A 16-bit value not in this copy of the registry (Section 4.3)."""
        if type(value) is not int or not 0 <= value <= 0xFFFF:
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNREGISTERED_{value:#06x}"
        member._value_ = value
        return member

    @property
    def registered(self) -> bool:
        """Whether the code is in this copy of the registry."""
        return self._name_ in type(self).__members__

    @property
    def error_class(self) -> ErrorClass | None:
        """The class (high octet) a receiver goes by for a code it does not know; None
        for a class this version does not define (handled as a failure)."""
        high = int(self) >> 8
        return ErrorClass(high) if high in ErrorClass._value2member_map_ else None


class Scope(IntEnum):
    """Discovery scope, the SCOPE TLV (Section 5.2)."""

    LOCAL = 0
    DOMAIN = 1
    FEDERATED = 2


class ConstraintOp(IntEnum):
    """Constraint operators in a discovery query (Section 7.3)."""

    EQ = 0
    NE = 1
    LT = 2
    LE = 3
    GT = 4
    GE = 5
    IN = 6
    EXISTS = 7


class GatewayCaps(IntFlag):
    """Gateway capability bits carried in OPEN's GATEWAY_CAPS TLV (Section 6.4)."""

    ROUTING = 0x0001
    DIGEST_SYNC = 0x0002
    FEDERATION = 0x0004
    OAM = 0x0008


class CoseAlgorithm(IntEnum):
    """COSE algorithms accepted for signed capability records (RFC 9053)."""

    EDDSA = -8
    ES256 = -7


@dataclass(frozen=True, slots=True)
class Timer:
    """A protocol timer with its default value (Section 8)."""

    name: str
    default_s: float
    description: str


#: Protocol timers and their defaults (Section 8, "Timers").
TIMERS: tuple[Timer, ...] = (
    Timer("DEFAULT_LEASE", 3600, "lease an agent asks for when it has no preference"),
    Timer("MAX_LEASE", 86400, "longest lease a gateway grants"),
    Timer("MIN_LEASE", 30, "shortest lease a gateway grants"),
    Timer("REFRESH_FRACTION", 0.5, "fraction of the lease after which an agent refreshes"),
    Timer("FRESHNESS_WINDOW", 300, "allowed clock skew for TIMESTAMP TLVs"),
    Timer("REQUEST_TIMEOUT", 10, "how long a requester waits for an answer"),
    Timer("ROUTE_TIMEOUT", 30, "how long a gateway keeps a forwarded transaction"),
    Timer("FORWARD_FRACTION", 0.9,
          "fraction of its own transaction time a gateway gives the next hop in TIMEOUT"),
    Timer("HOLD_TIME", 90, "peer hold time proposed in OPEN"),
    Timer("MIN_HOLD_TIME", 3, "smallest non-zero hold time a gateway proposes or accepts"),
    Timer("KEEPALIVE_FRACTION", 1 / 3,
          "largest fraction of the hold time between KEEPALIVEs (and agent keepalives)"),
    Timer("PROBE_IDLE_FRACTION", 0.25,
          "fraction of the keepalive interval of silence from a peer after which a gateway "
          "with relayed transactions waiting on it sends ECHO_REQUEST"),
    Timer("PROBE_TIMEOUT_FRACTION", 0.5,
          "fraction of the keepalive interval a probed peer has to be heard from before "
          "its session closes"),
    Timer("DIGEST_INTERVAL", 30, "interval between DIGEST messages on a session"),
    Timer("REDIAL_INITIAL", 0.5, "first delay before a gateway dials a peer again"),
    Timer("REDIAL_MAX", 30, "largest delay between two dials of a peer"),
    Timer("REDIAL_JITTER", 0.25, "random fraction by which each redial delay varies"),
    Timer("RESTART_GRACE", 60,
          "how long a restarted gateway withholds records whose agents have not come back"),
    Timer("AGENT_KEEPALIVE", 5,
          "silence after which an agent sends ECHO_REQUEST to its gateway"),
    Timer("MIN_ADVERTISEMENT_INTERVAL", 2,
          "least time between two ADVERTISEs of one record to one peer"),
    Timer("ACK_DELAY", 0.1, "longest wait before a SYNC_ACK for applied sync messages"),
    Timer("REORDER_TIMEOUT", 2,
          "how long a receiver waits for a missing sequenced sync message"),
    Timer("PURGE_HOLD", 30, "how long a purged record version is remembered"),
    Timer("RETRANSMIT_INITIAL", 0.5, "first retransmission timeout on datagram transports"),
    Timer("RETRANSMIT_MAX", 8, "largest retransmission timeout on datagram transports"),
    Timer("RETRANSMIT_LIMIT", 6, "retransmissions before a request is abandoned"),
    Timer("DUPLICATE_CACHE_TIME", 60, "how long a responder caches answers by transaction id"),
    Timer("QUIC_IDLE_TIMEOUT", 120, "QUIC max_idle_timeout; exceeds HOLD_TIME (Section 9.1)"),
    Timer("SUMMARY_INTERVAL", 1,
          "least time between two SUMMARYs a gateway originates (changes coalesce)"),
    Timer("OWN_SUMMARY_WAIT", 2,
          "how long a gateway awaits its domain's summary before originating its own"),
    Timer("DISCOVERY_CACHE_TTL", 30,
          "how long relayed DISCOVER answers and the routes they give are kept"),
    Timer("QUIC_PING_INTERVAL", 20,
          "interval of the QUIC PINGs a client sends on its connection (Section 9.1)"),
    Timer("QUIC_MAX_ACK_DELAY", 0.025,
          "QUIC max_ack_delay transport parameter every endpoint advertises (Section 9.1)"),
    Timer("QUIC_ACK_DELAY", 0.02,
          "longest wait for a packet to carry the ACK of a 1-RTT packet; below "
          "QUIC_MAX_ACK_DELAY"),
)

#: Default hop limit placed in ROUTE-REQUEST and TRACE-REQUEST (Section 5.3).
DEFAULT_HOP_LIMIT = 64
#: Hops a gateway that starts relaying a FEDERATED DISCOVER adds to the relays along the
#: matching summary's path (Section 5.2.1): room for a path that grew by a detour.
RELAY_HOP_SLACK = 2
#: Implementation bounds, not on the wire: most per-request verdicts a gateway's guard
#: keeps between admission and the node's use of them, and the longest a gateway feeds
#: queued requests round robin in one turn of its event loop, in seconds (Section 10.7).
GUARD_MAX_PENDING = 4096
FAIR_ROUND_QUANTUM = 0.002
#: How long a QUIC client waits for its handshake and its confirmation, and how long a
#: QUIC client pool closing waits for its connections' closing periods.
QUIC_CONNECT_TIMEOUT = 5.0
QUIC_CLOSE_WAIT = 1.0
#: Capability summary Bloom filters (Section 6.9): most hash functions, fewest and most
#: filter bits, and the bits per element a sender aims at (about 1% false positives).
SUMMARY_MAX_HASHES = 16
SUMMARY_MIN_BITS = 64
SUMMARY_MAX_BITS = 65536
SUMMARY_BITS_PER_ELEMENT = 10


#: The timers' defaults by name (read on every transaction).
_TIMER_DEFAULTS: dict[str, float] = {t.name: t.default_s for t in TIMERS}
#: The requests gateways relay (:func:`transaction_time`, on every transaction: a
#: tuple of the members bound once, not two Enum member reads and a tuple per call).
_RELAYED = (MessageType.ROUTE_REQUEST, MessageType.TRACE_REQUEST)


def timer(name: str) -> float:
    """Return the default value of the named timer in seconds (or as a fraction)."""
    return _TIMER_DEFAULTS[name]


def transaction_time(request: MessageType, timeout_ms: int | None = None, *,
                     request_timeout: float | None = None,
                     route_timeout: float | None = None) -> float:
    """The transaction timeout: how long a requester waits for the answer to ``request``,
    on every transport (Section 9.3): REQUEST_TIMEOUT; for ROUTE_REQUEST and
    TRACE_REQUEST, which gateways relay and answer when their own transaction time ends
    (the request's TIMEOUT, ``timeout_ms``, else ROUTE_TIMEOUT), that time plus
    REQUEST_TIMEOUT.  ``request_timeout`` and ``route_timeout`` override the timers."""
    wait = _TIMER_DEFAULTS["REQUEST_TIMEOUT"] if request_timeout is None else request_timeout
    if request in _RELAYED:
        if timeout_ms is not None:
            return wait + timeout_ms / 1000
        return wait + (_TIMER_DEFAULTS["ROUTE_TIMEOUT"] if route_timeout is None
                       else route_timeout)
    return wait


@dataclass(frozen=True, slots=True)
class Limit:
    """A resource limit of a gateway with its default (Section 10.7, "Denial of
    Service"); a deployment may configure another value."""

    name: str
    default: int | float
    unit: str
    description: str


#: Resource limits and their defaults (Section 10.7); the draft's table is generated from
#: this tuple.
LIMITS: tuple[Limit, ...] = (
    Limit("QUIC_RETRY_THRESHOLD", 32, "handshakes",
          "QUIC handshakes in progress above which a new client must first echo a Retry "
          "token (0: always; at least QUIC_MAX_PENDING: never)"),
    Limit("QUIC_RETRY_RATE", 100, "Retries/s",
          "Retry packets sent to one source IP address a second; its further Initials "
          "without a token are dropped"),
    Limit("QUIC_MAX_PENDING", 256, "handshakes",
          "QUIC handshakes in progress at once; further Initials are dropped"),
    Limit("QUIC_HANDSHAKE_TIMEOUT", 10, "s",
          "time a QUIC client has to complete its handshake before it is closed"),
    Limit("QUIC_MAX_CONNECTIONS", 4096, "connections",
          "QUIC connections at once (handshakes included); further Initials are dropped"),
    Limit("QUIC_MAX_PER_ADDRESS", 256, "connections",
          "QUIC connections (handshakes included) from one source IP address"),
    Limit("QUIC_MAX_PER_IDENTITY", 16, "connections",
          "authenticated QUIC connections of one agent or gateway; the oldest is closed"),
    Limit("RATE_AGENT", 2000, "tokens/s",
          "token bucket refill of each agent association; a request costs one token, a "
          "DISCOVER DISCOVER_COST (RATE_LIMITED with RETRY_AFTER beyond)"),
    Limit("RATE_AGENT_BURST", 4000, "tokens", "token bucket size of each agent association"),
    Limit("RATE_PEER", 20000, "tokens/s",
          "token bucket refill of each peer gateway's association (its requests)"),
    Limit("RATE_PEER_BURST", 40000, "tokens", "token bucket size of each peer association"),
    Limit("DISCOVER_COST", 100, "tokens", "what a DISCOVER takes from its sender's bucket"),
    Limit("DISCOVER_BUDGET", 10, "ms",
          "CPU time the evaluation (match and rank) of one DISCOVER may take; beyond it "
          "the DISCOVER is refused with QUERY_TOO_LARGE"),
    Limit("REPLAY_PER_AGENT", 1024, "nonces",
          "nonces of one agent remembered within the freshness window (Section 10.4); "
          "its further requests are refused with RATE_LIMITED"),
    Limit("REPLAY_CAPACITY", 1_000_000, "nonces",
          "nonces remembered in all; further requests are refused with RESOURCE_EXHAUSTED"),
    Limit("TOKEN_MAX_HEADER", 4096, "octets",
          "longest protected header of an access token or origin assertion decoded (room "
          "for an x5c certificate chain); INVALID_TOKEN beyond"),
    Limit("QUERY_MAX_INTENT", 1024, "octets",
          "longest intent of a query (DISCOVER, ROUTE_REQUEST): QUERY_TOO_LARGE beyond"),
    Limit("QUERY_MAX_TERMS", 64, "terms",
          "most skills, tags, modes and constraints of a query together: QUERY_TOO_LARGE "
          "beyond"),
    Limit("PEER_MAX_RECORDS", 20000, "records",
          "records learned through one peer; one more closes the session with NOTIFY "
          "MAX_RECORDS_EXCEEDED"),
    Limit("PEER_MAX_PATH", 64, "gateways",
          "longest path of an advertised record; a longer one closes the session with "
          "NOTIFY PATH_TOO_LONG"),
    Limit("RELAY_MAX_HOPS", 64, "gateways",
          "largest HOP_LIMIT a relayed FEDERATED DISCOVER is sent with (Section 5.2.1)"),
    Limit("LEARN_SLICE", 0.0025, "s",
          "longest a gateway spends between two turns of its other work on checking and "
          "learning the records of UPDATEs (every session's together) and on reading and "
          "decoding large PDUs; what passed is committed, the rest follows in further slices"),
    Limit("WORK_SLICE", 0.002, "s",
          "longest a gateway spends in one step on work over many records (filling the "
          "UPDATEs of a table it sends or of an answer to SYNC_REQUEST, counting what a "
          "summary covers, dropping the routes of a closed session) before it lets other "
          "work run"),
    Limit("PEER_LIMIT_HOLD", 60, "s",
          "how long a gateway neither accepts (ERROR with RETRY_AFTER to its OPEN) nor dials "
          "a peer whose session closed for MAX_RECORDS_EXCEEDED or PATH_TOO_LONG"),
    Limit("DUPLICATE_CACHE_MAX", 65536, "requests",
          "requests a datagram endpoint holds in its duplicate cache (Section 9.3); beyond, "
          "the kept answer closest to expiry is forgotten, or a new request gets ERROR "
          "RESOURCE_EXHAUSTED when none is answered yet"),
    Limit("SESSION_MAX_CERTIFICATES", 64, "certificates",
          "certificates received with CERTIFICATE that a gateway keeps per peer session "
          "(least recently used forgotten first, Section 6.10)"),
    Limit("CERTIFICATE_MAX_SIZE", 4096, "octets",
          "longest CERTIFICATE_DER a gateway checks (Section 6.10); CERTIFICATE_ACK "
          "INVALID_TLV_LENGTH beyond"),
    Limit("CERTIFICATE_RATE", 10, "certificates/s",
          "token bucket refill for the CERTIFICATEs of each peer association (each costs "
          "a chain check); CERTIFICATE_ACK RATE_LIMITED with RETRY_AFTER beyond"),
    Limit("CERTIFICATE_BURST", 64, "certificates",
          "token bucket size for the CERTIFICATEs of each peer association"),
    Limit("LAB_MAX_PEERS", 4096, "associations",
          "lab mode: UDP source addresses associated at once (least recently heard "
          "forgotten first)"),
    Limit("LAB_MAX_UNBOUND", 256, "associations",
          "lab mode: associations bound to no agent or gateway (least recently heard "
          "closed first)"),
    Limit("LAB_UNBOUND_TIMEOUT", 60, "s",
          "lab mode: how long an association bound to nobody may stay silent"),
)


#: The limits' defaults by name.
_LIMIT_DEFAULTS: dict[str, int | float] = {lim.name: lim.default for lim in LIMITS}


def limit(name: str) -> int | float:
    """Return the default value of the named resource limit."""
    return _LIMIT_DEFAULTS[name]
