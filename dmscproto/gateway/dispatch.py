"""How a gateway node takes a received message: admission, then the machine whose table
has an input for it (:mod:`dmscproto.protocol.dispatch`; draft-dmsc-protocol-00,
Sections 5 and 6)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..codec.messages import (
    Discover,
    Message,
    Refresh,
    RouteRequest,
    Summary,
    TraceRequest,
)
from ..codec.registry import (
    ANSWER_TO,
    SESSION_MESSAGES,
    ErrorCode,
    MessageType,
    Scope,
    timer,
)
from ..protocol.discovery import DiscoveryResponder, PolicyFor
from ..protocol.dispatch import Receiver, Role, Take
from ..protocol.events import LateMessage
from ..protocol.federated import DiscoveryContext, FederatedDiscovery
from ..protocol.machine import Handle, ProtocolError, refusal_answer
from ..protocol.oam import EchoResponder, TraceRelay
from ..protocol.peering import LocalGateway, PeerSession, PeerState, SessionTimers
from ..protocol.ports import Admission
from ..protocol.registration import GatewayRegistration
from ..protocol.routing import Relay, RelayContext, RouteRelay
from ..protocol.summary import SummaryExchange, SummaryPeer
from .deadlines import Deadlines
from .limits import RequestLimits
from .node_ports import NodePorts

#: The query limit a ROUTE_REQUEST's QUERY is relayed with (only the best is used).
_RESOLVE_LIMIT = 1
#: How long after its session closed a message over an association is late (6.1).
_LATE = timer("REQUEST_TIMEOUT")


class NodeDispatch(NodePorts):
    """The receiving half of :class:`~.node.GatewayNode` (its base), which sets the
    attributes declared here."""

    local: LocalGateway
    session_timers: Callable[[Handle], SessionTimers]
    admit: Admission | None
    limits: RequestLimits | None
    echo: EchoResponder
    sessions: dict[Handle, PeerSession]
    _session_timers: Deadlines[Handle]
    _unanswered: dict[Relay, None]
    _relay_timers: Deadlines[Relay]
    ctx: RelayContext
    summaries: SummaryExchange
    discovery_policy: PolicyFor
    fed_ctx: DiscoveryContext
    discoveries: dict[tuple[Handle, int], FederatedDiscovery]
    _relaying: list[FederatedDiscovery]
    _takers: dict[MessageType, tuple[Take, ...]]
    _release: Callable[[Iterable[bytes], float], None]
    #: Associations whose peer session closed, and when (oldest first; Section 6.1).
    _closed: dict[Handle, float]

    def _session(self, handle: Handle) -> PeerSession:
        s = self.sessions.get(handle)
        if s is None:
            self._closed.pop(handle, None)
            s = PeerSession(self._out, handle, self.local, self, self.txids,
                            timers=self.session_timers(handle))
            self.sessions[handle] = s
        self._session_timers.stale(handle)  # the caller is about to run it
        return s

    def _receivers(self) -> tuple[Receiver, ...]:
        """The node's machines, in the order they are asked for a message (an answer
        goes to the transaction it matches first); :func:`dispatch_table` derives the
        takers of each message type from their tables."""
        return (
            Receiver(RouteRelay, Role.CONTINUE, self._to_relay),
            Receiver(TraceRelay, Role.CONTINUE, self._to_relay),
            Receiver(FederatedDiscovery, Role.CONTINUE, self._to_federated),
            Receiver(PeerSession, Role.CONTINUE, self._to_session),
            Receiver(PeerSession, Role.START, self._open_session),
            Receiver(FederatedDiscovery, Role.START, self._relay_discover),
            Receiver(DiscoveryResponder, Role.ALL, self._discover),
            Receiver(GatewayRegistration, Role.ALL, self._register),
            Receiver(EchoResponder, Role.ALL, self._echo),
            Receiver(RouteRelay, Role.START, self._route),
            Receiver(TraceRelay, Role.START, self._trace),
        )

    def _closing(self, handle: Handle, now: float) -> None:
        """The peer session over ``handle`` closed: what still arrives over it is late
        for REQUEST_TIMEOUT (:meth:`_late`); older closes are forgotten."""
        closed = self._closed
        while closed:
            first = next(iter(closed))
            if closed[first] + _LATE >= now:
                break
            del closed[first]
        closed.pop(handle, None)
        closed[handle] = now

    def _late(self, source: Handle, msg: Message, now: float) -> bool:
        """Whether ``msg`` is late (Section 6.1): one-way or an answer, over an
        association whose session closed at most REQUEST_TIMEOUT ago; then it is dropped
        and reported as :class:`LateMessage` (not a protocol violation).  A request is
        answered as usual, so that no requester waits."""
        closed = self._closed.get(source)
        if closed is None or now > closed + _LATE or msg.TYPE in ANSWER_TO:
            return False
        self._out.emit(LateMessage(source, msg.TYPE))
        return True

    def _dispatch(self, source: Handle, msg: Message, now: float) -> None:
        t = msg.TYPE
        if self._closed and self._late(source, msg, now):
            return
        if self.limits is not None and t in ANSWER_TO \
                and (t not in SESSION_MESSAGES or t is MessageType.CERTIFICATE):
            limited = self.limits.check(source, msg, source in self.sessions, now)
            if limited is not None:  # before any cryptography the admission would do
                answer = refusal_answer(msg, limited.code, limited.diagnostic,
                                        limited.retry_after)
                if answer is not None:
                    self._out.send(source, answer)
                raise ProtocolError(limited.code, limited.diagnostic, t)
        admit = self.admit  # a hook held by the node: a method load of it is not specialised
        if admit is not None:
            refused = admit(source, msg, now)
            if refused is not None:
                answer = refusal_answer(msg, refused.code, refused.diagnostic)
                if answer is not None:
                    self._out.send(source, answer)
                if refused.code is ErrorCode.CERTIFICATE_UNKNOWN:
                    return  # the sender passes the certificate and asks again (6.10)
                raise ProtocolError(refused.code, refused.diagnostic, t)
        for take in self._takers.get(t, ()):
            if take(source, msg, now):
                return
        raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"{t.name} matches no transaction", t)

    # --- the takers (:meth:`_receivers`) --------------------------------------------------------
    def _to_relay(self, source: Handle, msg: Message, now: float) -> bool:
        relay = self.relays.pop((source, msg.transaction_id), None)
        if relay is None:
            return False
        try:
            relay.receive(source, msg, now)
        finally:
            done = self._ran(relay)
        if not done and relay.downstream is not None:  # sent on again (6.10)
            self.relays[relay.downstream] = relay
        return True

    def _to_federated(self, source: Handle, msg: Message, now: float) -> bool:
        fed = self.discoveries.pop((source, msg.transaction_id), None)
        if fed is None:
            return False
        fed.receive(source, msg, now)
        return True

    def _to_session(self, source: Handle, msg: Message, now: float) -> bool:
        """A message of an existing session; a SUMMARY then goes to the summaries."""
        if source not in self.sessions:
            if msg.TYPE in SESSION_MESSAGES:
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE,
                                    f"{msg.TYPE.name} outside a peer session", msg.TYPE)
            return False  # an answer no session waits for
        if msg.TYPE is MessageType.CERTIFICATE_ACK and not self.sessions[source].awaits(msg):
            return False  # answers no offer of the session (Section 6.10)
        self._open_session(source, msg, now)
        if isinstance(msg, Summary):
            self._summary(source, msg, now)
        return True

    def _open_session(self, source: Handle, msg: Message, now: float) -> bool:
        session = self._session(source)
        try:
            session.receive(msg, now)
        finally:
            if session.state is PeerState.IDLE:  # refused or closed: forget it
                self.sessions.pop(source, None)
        return True

    def _relay_discover(self, source: Handle, msg: Message, now: float) -> bool:
        """A FEDERATED DISCOVER, once summaries are held, may be relayed."""
        if not (isinstance(msg, Discover) and msg.scope is Scope.FEDERATED
                and self.summaries.foreign()):
            return False
        self._federated(FederatedDiscovery(self._out, self.fed_ctx, source, msg,
                                           self.discovery_policy(source)), now)
        return True

    def _discover(self, source: Handle, msg: Message, now: float) -> bool:
        self.discovery.receive(source, msg, now)
        return True

    def _register(self, source: Handle, msg: Message, now: float) -> bool:
        self.registration.receive(source, msg, now)
        if isinstance(msg, Refresh) and self.registration.handles.get(msg.agent_id) == source:
            self._release([msg.agent_id], now)
        return True

    def _echo(self, source: Handle, msg: Message, now: float) -> bool:
        self.echo.receive(source, msg, now)
        return True

    def _route(self, source: Handle, msg: Message, now: float) -> bool:
        """A ROUTE_REQUEST: relayed; one with a QUERY first goes through a relayed
        DISCOVER (once summaries are held), relayed when no held record matches it."""
        assert isinstance(msg, RouteRequest)
        if msg.query is not None and msg.target_agent is None and self.summaries.foreign():
            self._federated(FederatedDiscovery(
                self._out, self.fed_ctx, source, Discover(
                    transaction_id=msg.transaction_id, query=msg.query,
                    scope=Scope.FEDERATED, max_results=_RESOLVE_LIMIT, trace=msg.trace),
                self.resolving_policy(source), resolving=msg), now)
        else:
            self._relay(RouteRelay(self._out, self.ctx, source, msg), now)
        return True

    def _trace(self, source: Handle, msg: Message, now: float) -> bool:
        assert isinstance(msg, TraceRequest)
        self._relay(TraceRelay(self._out, self.ctx, source, msg), now)
        return True

    # --- capability summaries and relayed discovery (Sections 5.2.1, 6.9) ---------------------
    def _summary(self, source: Handle, msg: Summary, now: float) -> None:
        """After the session machine (a SUMMARY establishes the session in OPEN_CONFIRM,
        as a sync message does, and restarts the hold timer): the summaries."""
        s = self.sessions.get(source)
        if s is None or s.state is not PeerState.ESTABLISHED or s.peer_id is None \
                or s.peer_domain is None:
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE,
                                "SUMMARY outside an established peer session", msg.TYPE)
        refused = self.summaries.receive(SummaryPeer(source, s.peer_id, s.peer_domain), msg,
                                         now)
        if refused is not None:
            raise ProtocolError(refused.code, refused.diagnostic, msg.TYPE)

    def _federated(self, fed: FederatedDiscovery, now: float) -> None:
        fed.start(now)
        for key in fed.pending:
            self.discoveries[key] = fed
        if fed.pending:
            self._relaying.append(fed)

    def _relay(self, relay: Relay, now: float) -> None:
        relay.start(now)
        self._ran(relay)
        if relay.downstream is not None:
            self.relays[relay.downstream] = relay
            session = self.sessions.get(relay.downstream[0])
            if session is not None:  # probe the next hop while it is waited on
                session.watch(now)
                self._session_timers.stale(relay.downstream[0])  # its probe timer

    def _ran(self, relay: Relay) -> bool:
        """A relay ran: its timer may have moved, and an answered one is forgotten.
        Whether it is done."""
        self._relay_timers.put(relay, relay.deadline)
        if relay.done:
            self._unanswered.pop(relay, None)
            return True
        self._unanswered[relay] = None
        return False
