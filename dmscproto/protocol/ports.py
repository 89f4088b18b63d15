"""The small interfaces the gateway machines are written against (draft-dmsc-state-machines-00).

A machine takes these Protocols, never the concrete
:class:`~dmscproto.gateway.core.GatewayCore`, so its table and its actions are the whole
of its behaviour and a test can drive it with anything that has the same few methods.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..codec import cbor
from ..codec.changes import TableChanges
from ..codec.cose import SignedRecord
from ..codec.messages import Message, Open
from ..codec.registry import ErrorCode, Scope
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..codec.wire import Advertisement, Result, VersionedId
from ..fsm import slot_stores
from .machine import Handle, Refusal
from .terms import RecordTerms, TermCounts

#: The export filter towards a peer (None: export everything; Section 7.4).
ExportFilter = Callable[[CapabilityRecord], bool] | None
#: Checks a message before the gateway dispatches it (Section 10); returns the refusal,
#: or None to accept it.
Admission = Callable[[Handle, Message, float], Refusal | None]


class SyncTable(Protocol):
    """The record table gateway sync reads and changes (Sections 6.2, 6.5, 6.6)."""

    def agent_id_chunks(self) -> Iterator[list[bytes]]:
        """Every record held, local and learned, a chunk at a time, each chunk taken when
        reached: a record held from the first chunk to the last is in one at least
        (maybe two); records added or removed meanwhile are reported as changes."""

    def advertisement(self, agent_id: bytes, to_peer: bytes,
                      allow: ExportFilter) -> Advertisement | None:
        """The ADVERTISE for ``agent_id`` towards ``to_peer`` (this gateway appended to
        the path), or None when it is not exported to that peer."""

    def learn_many(self, ads: Sequence[Advertisement], from_peer: bytes,
                   now: float) -> TableChanges:
        """Learn ADVERTISEs (already checked by the record check) in one commit."""

    def purge_held(self, adv: Advertisement, from_peer: bytes, now: float) -> bool:
        """Whether :meth:`learn_many` ignores ``adv`` for now: a version purged within
        PURGE_HOLD, not straight from its origin."""

    def holds(self, adv: Advertisement, from_peer: bytes) -> bool:
        """Whether learning ``adv`` from ``from_peer`` would change nothing: the same
        signed record, version and path are held through ``from_peer``."""

    def withdraw_many(self, items: Sequence[VersionedId], from_peer: bytes) -> TableChanges:
        """Drop the routes through ``from_peer`` of the given versions or older."""

    def purge_many(self, items: Sequence[VersionedId], now: float) -> TableChanges:
        """Remove learned records of the given versions or older, every route."""

    def route_chunks_via(self, peer: bytes) -> Iterator[list[bytes]]:
        """The Agent IDs this gateway holds a route to through ``peer``, a few hundred
        at a time (taken when needed: no step copies them all)."""


class SyncLink(Protocol):
    """The peer session gateway sync runs on (Section 6.1)."""

    @property
    def handle(self) -> Handle: ...

    @property
    def gateway_id(self) -> bytes: ...

    @property
    def pdu_limit(self) -> int:
        """The largest PDU the session's transport carries (Section 9)."""

    @property
    def allow(self) -> ExportFilter:
        """The export filter towards the peer."""

    def send(self, msg: Message, now: float) -> None:
        """Send on the session."""


# --- peering (Sections 6.1, 6.4) -------------------------------------------------------------
class SessionSync(Protocol):
    """The record exchange running on an established session (Sections 6.5, 6.6)."""

    def start(self, now: float) -> None: ...

    def receive(self, msg: Message, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class PeeringPort(Protocol):
    """What a peer session needs from its gateway."""

    def check_open(self, handle: Handle, msg: Open, now: float) -> Refusal | None:
        """Identity, federation policy, duplicate sessions, a peer held after exceeding
        its limits: the refusal to answer, or None to accept."""

    def relays_waiting(self, handle: Handle) -> bool:
        """Whether relayed transactions wait on the session over ``handle`` (it probes
        the peer while any does)."""

    def start_sync(self, handle: Handle, gateway_id: bytes, domain: str) -> SessionSync:
        """The sync machine for a session just established with ``gateway_id``."""

    def check_certificate(self, handle: Handle, der: bytes, now: float) -> Refusal | None:
        """A CERTIFICATE's certificate (Section 6.10): the refusal to answer, or None
        to keep it."""

    def keep_certificate(self, handle: Handle, der: bytes) -> bytes:
        """Keep an accepted certificate for the session over ``handle``; returns its
        thumbprint."""


# --- the agent keepalive (Section 6.8.3) ----------------------------------------------------
class LivenessPort(Protocol):
    """What the watch needs from the agent."""

    def probe(self, now: float) -> None:
        """Send ECHO_REQUEST to the home gateway."""


# --- registration and discovery (Sections 5.1, 5.2) -----------------------------------------
@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """The answer to REGISTER or REFRESH: a status and, on success, the lease granted."""

    status: ErrorCode
    lease: int = 0
    diagnostic: str | None = None


class RegistrationTable(Protocol):
    """The registry the gateway's registration machine changes (Section 5.1): every
    method that changes it returns only after the change is committed."""

    def get(self, agent_id: bytes) -> HeldRecord | None: ...

    def register(self, signed: SignedRecord, requested_lease: int,
                 now: float) -> RegisterOutcome: ...

    def refresh(self, agent_id: bytes, requested_lease: int, now: float) -> RegisterOutcome: ...

    def deregister(self, agent_id: bytes, now: float) -> ErrorCode: ...

    def expire(self, now: float) -> list[VersionedId]:
        """Remove every local registration due at ``now`` (one commit); return them."""

    def next_expiry(self) -> float | None: ...


class DiscoveryTable(Protocol):
    """The records a DISCOVER is answered from (Section 5.2)."""

    def discover(self, query: DiscoveryQuery, scope: Scope, max_results: int, now: float,
                 allow: ExportFilter = None, spend: Callable[[], None] = ...
                 ) -> list[Result]:
        """Matching records, best first; ``spend`` raises to stop an evaluation over its
        budget (Section 10.7)."""


# --- what a gateway's guard reads (Section 10) ---------------------------------------------
class HeldRecord(Protocol):
    """A record the gateway holds: local (``origin`` None, with a lease) or learned."""

    @property
    def signed(self) -> SignedRecord: ...

    @property
    def origin(self) -> bytes | None: ...

    @property
    def expires_at(self) -> float: ...

    @property
    def version(self) -> int: ...

    @property
    def path(self) -> tuple[bytes, ...]: ...

    @property
    def next_hop(self) -> bytes | None: ...


class RelayedRecord(Protocol):
    """A record known from a relayed DISCOVER answer (Section 5.2.1)."""

    @property
    def record(self) -> SignedRecord: ...


class RelayedRecords(Protocol):
    def get(self, agent_id: bytes) -> RelayedRecord | None: ...


class GuardedTable(Protocol):
    """What the admission and policy checks of a gateway read of its records: its domain,
    the records it holds and those known from relayed answers."""

    @property
    def domain(self) -> str: ...

    @property
    def remote(self) -> RelayedRecords: ...

    def get(self, agent_id: bytes) -> HeldRecord | None: ...

    def domain_record(self, agent_id: bytes) -> CapabilityRecord | None:
        """The record held for ``agent_id`` (``get(...).signed.record``, without the
        rest of the entry)."""
        ...


# --- forwarding decisions (Section 5.3) -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeliverLocal:
    """Hand the request to the local agent."""

    agent_id: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request on to ``next_hop`` with the new hop limit and path."""

    next_hop: bytes
    hop_limit: int
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the request with ``code``."""

    code: ErrorCode


Decision = DeliverLocal | Forward | Reject


# --- capability summaries and relayed discovery (Sections 5.2.1, 6.9) ------------------------
class RecordIndex(DiscoveryTable, Protocol):
    """The records a gateway holds, as summaries and relayed discovery read them."""

    @property
    def gateway_id(self) -> bytes: ...

    @property
    def domain(self) -> str: ...

    def __len__(self) -> int: ...

    def __contains__(self, agent_id: object) -> bool: ...


class SummarySource(Protocol):
    """What a gateway's capability summaries are built from (Section 6.9): the summary
    terms of its domain's records, kept on write, so that no summary walks the table."""

    @property
    def gateway_id(self) -> bytes: ...

    @property
    def domain(self) -> str: ...

    @property
    def domain_terms(self) -> TermCounts:
        """The terms of every record of the domain held, with their counts (live)."""

    def domain_ids(self) -> list[bytes]:
        """The records of the domain held, a snapshot."""

    def take_domain_changes(self) -> Collection[bytes]:
        """The records of the domain added, replaced or removed since the last call."""

    def summary_terms(self, agent_id: bytes) -> RecordTerms | None:
        """The summary terms of a record of the domain (None: not held)."""

    def domain_record(self, agent_id: bytes) -> CapabilityRecord | None:
        """A record held, for an export filter (None: not held)."""


def query_key(query: DiscoveryQuery, max_results: int) -> bytes:
    """Under which a relayed answer is kept: the query's CBOR and the limit."""
    return cbor.dumps(query.to_cbor()) + max_results.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Relayed:
    """A record from a relayed answer: its score there and the peer it came from."""

    score: int
    record: SignedRecord
    next_hop: bytes


class AnswerCache(Protocol):
    """Relayed DISCOVER answers kept for DISCOVERY_CACHE_TTL, by query key (Section 5.2.1)."""

    def answers(self, query_key: bytes, now: float,
                reach: tuple[tuple[bytes, int], ...] = ()) -> tuple[Relayed, ...] | None:
        """The answers kept for the query, or None when none are (any more) or they came
        from relaying that did not reach as far as ``reach`` (next hop, HOP_LIMIT) asks:
        a next hop not answered, or answered with a lower HOP_LIMIT."""

    def put(self, query_key: bytes, answers: tuple[Relayed, ...], now: float,
            reached: dict[bytes, int]) -> None:
        """Keep the answers of the next hops in ``reached`` (with the HOP_LIMIT each was
        sent)."""

    def expire(self, now: float) -> None:
        """Forget the answers whose time is up."""


# --- routing (Section 5.3) -------------------------------------------------------------------
@slot_stores  # one a relayed call (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a relayed request goes: ``local``, to the agent registered here (``dest`` its
    association, None when it has none), or to the peer gateway whose association is
    ``dest``, with the next hop's HOP_LIMIT and PATH_VECTOR."""

    dest: Handle | None
    hop_limit: int
    path: tuple[bytes, ...]
    local: bool = False


class RoutingPort(Protocol):
    """What relaying ROUTE_REQUEST and TRACE_REQUEST needs from its gateway."""

    def next_hop(self, target: bytes, hop_limit: int, path: tuple[bytes, ...],
                 now: float) -> NextHop | Refusal:
        """The forwarding decision in Section 5.3's order (loop, local target, route,
        hop limit; a route learned from relayed discovery answers too): the next hop, or
        the routing error (NO_ROUTE also when the next hop has no established session)."""

    def resolve(self, query: DiscoveryQuery, now: float,
                requester: Handle) -> bytes | Refusal | None:
        """The Agent ID of the best record matching a ROUTE_REQUEST's QUERY (held, or
        kept from relayed discovery answers) that ``requester`` may be shown (a gateway:
        what its domain is shown, Section 10.6), if any; a refusal when evaluating the
        query exceeds the discovery budget (QUERY_TOO_LARGE, Section 10.7)."""

    def offer_certificate(self, dest: Handle, der: bytes, now: float) -> None:
        """A ROUTE_REQUEST about to be forwarded to ``dest`` carries an origin assertion
        naming the certificate ``der``: unless the peer holds it from the handshake (it
        is this gateway's), its session offers it once (Section 6.10)."""
