"""Events the protocol machines report (draft-dmsc-state-machines-00).

Small frozen dataclasses, drained from an :class:`~.machine.Outbox` with ``next_event()``,
in the style of aioquic's ``QuicEvent``: every event is a :class:`ProtocolEvent`, and the
events of each machine share its own base (its ``EVENTS``: :class:`RegistrationEvent`
for an agent's registration, :class:`RequestEvent` for a requester transaction, and so
on), so a consumer can tell by type which machine spoke.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codec.messages import Message, RouteRequest
from ..codec.registry import ErrorCode, MessageType
from ..codec.wire import VersionedId
from ..fsm import slot_stores
from .machine import Handle


@dataclass(frozen=True, slots=True)
class ProtocolEvent:
    """Base of every event a protocol machine, a gateway node or an agent reports."""


@dataclass(frozen=True, slots=True)
class RegistrationEvent(ProtocolEvent):
    """What an agent's registration reports (:class:`~.agent_registration.AgentRegistration`)."""


@dataclass(frozen=True, slots=True)
class RequestEvent(ProtocolEvent):
    """What a requester transaction reports (:class:`~.requester.Requester`)."""


@dataclass(frozen=True, slots=True)
class AgentEvent(ProtocolEvent):
    """What an agent's client reports of its gateway (:class:`~.agent.AgentClient`, its
    watch :class:`~.liveness.GatewayLiveness`)."""


@dataclass(frozen=True, slots=True)
class GatewayRegistrationEvent(ProtocolEvent):
    """What a gateway's registration reports (:class:`~.registration.GatewayRegistration`)."""


@dataclass(frozen=True, slots=True)
class RelayEvent(ProtocolEvent):
    """What a relayed transaction reports (:class:`~.routing.RouteRelay`,
    :class:`~.oam.TraceRelay`, :class:`~.federated.FederatedDiscovery`)."""


@dataclass(frozen=True, slots=True)
class SessionEvent(ProtocolEvent):
    """What a peer session reports (:class:`~.peering.PeerSession`)."""


@dataclass(frozen=True, slots=True)
class SyncEvent(ProtocolEvent):
    """What the record exchange on a session reports (:class:`~.sync_in.SyncIn`)."""


@dataclass(frozen=True, slots=True)
class NodeEvent(ProtocolEvent):
    """What a gateway node reports itself (:class:`~dmscproto.gateway.node.GatewayNode`)."""



# --- registration, agent side (Section 5.1) -------------------------------------------------
@dataclass(frozen=True, slots=True)
class Registered(RegistrationEvent):
    """REGISTER_ACK with SUCCESS: the agent is registered until ``expires_at``."""

    agent_id: bytes
    lease: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class LeaseRefreshed(RegistrationEvent):
    """REFRESH_ACK with SUCCESS: the lease now ends at ``expires_at``."""

    lease: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class RegistrationLost(RegistrationEvent):
    """The gateway no longer holds the registration (REFRESH refused, or the lease ended
    before a REFRESH was answered); the agent registers again."""

    status: ErrorCode


@dataclass(frozen=True, slots=True)
class RegistrationFailed(RegistrationEvent):
    """REGISTER was refused (``status``), answered with ERROR, or timed out
    (TRANSACTION_TIMEOUT); the agent is not registered."""

    status: ErrorCode
    diagnostic: str | None = None
    #: The answer's RETRY_AFTER (ms, Section 10.7), if it had one.
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class Deregistered(RegistrationEvent):
    """DEREGISTER was answered (``status``) or timed out (TRANSACTION_TIMEOUT)."""

    status: ErrorCode


# --- requester transactions (Sections 5.2, 5.3, 6.8) -----------------------------------------
@slot_stores  # one a request (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class RequestCompleted(RequestEvent):
    """A request got its answer message; ``rtt`` is the round-trip time in seconds."""

    transaction_id: int
    request: Message
    answer: Message
    rtt: float


@dataclass(frozen=True, slots=True)
class RequestFailed(RequestEvent):
    """A request got ERROR (its ``status``) or no answer in time (TRANSACTION_TIMEOUT)."""

    transaction_id: int
    request: Message
    status: ErrorCode
    diagnostic: str | None = None
    #: The ERROR's RETRY_AFTER (ms, Section 10.7), if it had one.
    retry_after: int | None = None


@slot_stores  # one a request (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class RouteRequestReceived(AgentEvent):
    """A ROUTE_REQUEST delivered to this agent; answer it with ``AgentClient.reply``."""

    transaction_id: int
    source_agent: bytes
    payload: bytes
    request: RouteRequest


@dataclass(frozen=True, slots=True)
class GatewayLost(AgentEvent):
    """Nothing came from the home gateway for the agent hold time (``silent_s`` seconds,
    Section 6.8.3): the agent closes the association and reconnects."""

    silent_s: float


# --- gateway side ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgentRegistered(GatewayRegistrationEvent):
    """A REGISTER was accepted and committed; ``handle`` reaches the agent.  ``replaced``
    is the other association the agent's registration was bound to until now (another
    process holding the same identity), which no longer gets its requests (Section
    5.1): the runtime closes it with NAME_CONFLICT."""

    agent_id: bytes
    lease: int
    handle: Handle
    replaced: Handle | None = None


@dataclass(frozen=True, slots=True)
class AgentRemoved(GatewayRegistrationEvent):
    """A registration ended: DEREGISTER (``status`` SUCCESS) or its lease ran out
    (LEASE_EXPIRED); ``withdrawn`` is what peers are told.  ``bound`` is the association
    the registration was bound to when the DEREGISTER came over another one (Section
    5.1): the runtime closes it with UNKNOWN_AGENT, so that the agent registers again."""

    withdrawn: VersionedId
    status: ErrorCode
    bound: Handle | None = None


@dataclass(frozen=True, slots=True)
class TransactionEnded(RelayEvent):
    """A relayed ROUTE_REQUEST or TRACE_REQUEST was answered upstream with ``status``."""

    request_type: MessageType
    upstream: Handle
    transaction_id: int
    status: ErrorCode


@dataclass(frozen=True, slots=True)
class SessionEstablished(SessionEvent):
    """A peer session reached ESTABLISHED with the negotiated hold time (seconds) and
    this end's keepalive interval (None: no KEEPALIVEs)."""

    handle: Handle
    gateway_id: bytes
    domain: str
    hold_time: int
    keepalive: float | None = None


@dataclass(frozen=True, slots=True)
class SessionClosed(SessionEvent):
    """A peer session went back to IDLE: ``status`` is the NOTIFY code sent or received
    (``by_peer`` says which)."""

    handle: Handle
    gateway_id: bytes | None
    status: ErrorCode
    by_peer: bool


@dataclass(frozen=True, slots=True)
class TableChanged(SyncEvent):
    """Records learned, withdrawn or purged through a peer, to propagate to the other
    peers: ``advertised`` have a new version or best route, ``withdrawn`` lost their
    last route, ``purged`` were removed by their origin (Section 6.5)."""

    from_handle: Handle
    advertised: tuple[bytes, ...]
    withdrawn: tuple[VersionedId, ...]
    purged: tuple[VersionedId, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordRefused(SyncEvent):
    """An ADVERTISEd record failed the record check (signature, import policy; Sections
    6.5, 10.5) and was not learned; the rest of its UPDATE was applied."""

    handle: Handle
    agent_id: bytes
    status: ErrorCode
    diagnostic: str


@dataclass(frozen=True, slots=True)
class LateMessage(NodeEvent):
    """A one-way message or an answer arrived over an association whose peer session
    closed less than REQUEST_TIMEOUT before (the peer sent it before it learned of the
    close): dropped (draft-dmsc-protocol-00, Section 6.1)."""

    handle: Handle
    message_type: MessageType


@dataclass(frozen=True, slots=True)
class ProtocolViolation(NodeEvent):
    """A message was refused with ``status`` (and answered as the draft says)."""

    handle: Handle
    message_type: MessageType
    status: ErrorCode
    diagnostic: str
