"""The gateway node, sans-I/O: every protocol machine of one gateway composed
(draft-dmsc-protocol-00, Sections 5 and 6; draft-dmsc-state-machines-00).

:class:`GatewayNode` is fed ``(source, message, now)`` with :meth:`GatewayNode.receive`
and timer expiries with :meth:`GatewayNode.handle_timer`; it returns ``(destination,
message)`` pairs from :meth:`GatewayNode.messages_to_send` and events from
:meth:`GatewayNode.next_event`.  ``source`` and ``destination`` are the caller's handles
for associations (agents and peer gateways alike).  It holds the
:class:`~.core.GatewayCore`, the registration, discovery and echo responders, the peer
sessions and the relayed ROUTE_REQUEST / TRACE_REQUEST transactions, and propagates
registry changes to the peers.

Security plugs in through hooks, each returning a :class:`~dmscproto.protocol.machine.Refusal`
(the error code and its reason, sent in STATUS and DIAGNOSTIC) or None:

* ``admit(source, msg, now)`` checks each message before dispatch (identity, freshness,
  tokens; default: none); a refused request is answered as the draft says (its answer
  message with STATUS, or ERROR) and reported as :class:`ProtocolViolation`;
* ``verifier(source, signed, now)`` checks each signed record before it is stored or
  learned, knowing who sent it (default: the COSE signature, BAD_SIGNATURE); a record of
  an UPDATE that fails is skipped and reported (RecordRefused), the others are learned;
* ``accept_open(source, open)`` checks an OPEN, before the node's own check (not
  ourselves, not a gateway already peered over another association);
* ``outgoing(upstream, request, incoming_txid, now)`` prepares or refuses each
  ROUTE_REQUEST forwarded to a peer (:class:`~dmscproto.protocol.routing.RelayContext`;
  the origin assertion of Section 10.6);
* ``export_for(domain)`` and ``discovery_policy(source)`` filter what peers and
  requesters are shown (Section 7.4);
* ``replication(domain)`` says whether a peer domain's gateways get records or only
  capability summaries (Section 6.9, :mod:`~dmscproto.protocol.summary`; our own
  domain always gets records); ``summary_check(source, domain)`` whether a peer may
  advertise summaries of that domain, ``transit(peer_domain, domain)`` whether
  summaries (and relayed answers) of ``domain`` are shown to ``peer_domain``.

Summaries are originated, learned and re-advertised by a
:class:`~dmscproto.protocol.summary.SummaryExchange`; a FEDERATED DISCOVER (and a
ROUTE_REQUEST whose QUERY no held record matches) is relayed to the domains whose
summary matches by a :class:`~dmscproto.protocol.federated.FederatedDiscovery`
transaction once any summary is held.

:meth:`dmscproto.security.guard.GatewayGuard.node_hooks` supplies all of them.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable

from ..codec.changes import TableChanges
from ..codec.messages import (
    Discover,
    Error,
    Message,
    Open,
    Refresh,
    RouteRequest,
    Summary,
    TraceRequest,
)
from ..codec.registry import (
    ANSWER_TO,
    MAX_PDU_SIZE,
    SESSION_MESSAGES,
    ErrorCode,
    Scope,
    limit,
    timer,
)
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..protocol.discovery import DiscoveryResponder, PolicyFor
from ..protocol.dispatch import Receiver, Role, dispatch_table
from ..protocol.events import (
    AgentRegistered,
    AgentRemoved,
    ProtocolViolation,
    SessionClosed,
    SessionEstablished,
    TableChanged,
)
from ..protocol.federated import DiscoveryContext, FederatedDiscovery, QueryResolved
from ..protocol.machine import (
    Handle,
    Outbox,
    ProtocolError,
    Refusal,
    TransactionIds,
    earliest,
    refusal_answer,
)
from ..protocol.oam import EchoResponder, TraceRelay
from ..protocol.peering import (
    HELD_AFTER,
    ExportFor,
    LocalGateway,
    OpenCheck,
    PeerSession,
    PeerState,
    SessionTimers,
)
from ..protocol.ports import Admission, NextHop, query_key
from ..protocol.registration import GatewayRegistration, RecordVerifier, verify_signature
from ..protocol.routing import Outgoing, Relay, RelayContext, RouteRelay
from ..protocol.summary import (
    Replication,
    SummaryCheck,
    SummaryExchange,
    SummaryPeer,
    SummaryTransit,
)
from ..protocol.sync import PeerSync, SyncPeer
from ..protocol.tracecontext import HopTracer, W3CHops
from .core import GatewayCore
from .limits import Budget, RequestLimits
from .restart import RestartGrace
from .routing import DeliverLocal, Forward, Reject

#: The query limit a ROUTE_REQUEST's QUERY is relayed with (only the best is used).
_RESOLVE_LIMIT = 1


class _Deadlines:
    """The earliest timer of the peer sessions, recomputed only for the sessions marked
    stale by what may have moved their timers (a heap with lazy deletion: each change
    costs O(log n), not a walk of every session after each event)."""

    def __init__(self) -> None:
        self._at: dict[Handle, float] = {}
        self._heap: list[tuple[float, int, Handle]] = []
        self._stale: set[Handle] = set()
        self._order = itertools.count()  # ties never compare handles

    def stale(self, handle: Handle) -> None:
        self._stale.add(handle)

    def earliest(self, timer_of: Callable[[Handle], float | None]) -> float | None:
        for handle in self._stale:
            due = timer_of(handle)
            if due is None:
                self._at.pop(handle, None)
            elif self._at.get(handle) != due:
                self._at[handle] = due
                heapq.heappush(self._heap, (due, next(self._order), handle))
        self._stale.clear()
        heap, at = self._heap, self._at
        while heap and at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


class GatewayNode:
    """One Agent Gateway (module doc)."""

    def __init__(self, core: GatewayCore, *, name: str | None = None,
                 hold_time: int = int(timer("HOLD_TIME")),
                 session_timers: Callable[[Handle], SessionTimers] | None = None,
                 verifier: RecordVerifier = verify_signature,
                 admit: Admission | None = None,
                 accept_open: OpenCheck | None = None,
                 export_for: ExportFor = lambda _domain: None,
                 discovery_policy: PolicyFor = lambda _source: None,
                 outgoing: Outgoing | None = None,
                 route_timeout: float = timer("ROUTE_TIMEOUT"),
                 pdu_limit: Callable[[Handle], int] = lambda _handle: MAX_PDU_SIZE,
                 replication: Callable[[str], Replication] = lambda _d: Replication.FULL,
                 summary_check: SummaryCheck = lambda _h, _d: None,
                 transit: SummaryTransit = lambda _p, _d: True,
                 limits: RequestLimits | None = None,
                 tracer: HopTracer | None = None,
                 limit_hold: float = limit("PEER_LIMIT_HOLD"),
                 budget: Budget | None = None,
                 rng: random.Random | None = None,
                 slice_clock: Callable[[], float] | None = None,
                 learn_slice: float = limit("LEARN_SLICE")) -> None:
        self.core = core
        self.name = name
        self.local = LocalGateway(core.gateway_id, core.domain)
        #: The session timers towards the peer behind a handle (default: ``hold_time``).
        self.session_timers = session_timers or (lambda _h: SessionTimers(hold_time))
        self.verifier = verifier
        self.admit = admit
        self.accept_open: OpenCheck = accept_open or (lambda _handle, _msg: None)
        self._export_for = export_for
        self.pdu_limit = pdu_limit
        self.replication = replication
        #: Rate, cost and query limits of requests (Section 10.7; None: none).
        self.limits = limits
        #: A monotonic clock that ends each slice of a large UPDATE (None: one slice).
        self.slice_clock = slice_clock
        self.learn_slice = learn_slice
        self.limit_hold = limit_hold
        #: Peers whose session this gateway closed for exceeding a peer limit, and until
        #: when their OPENs are refused (Section 6.1.1).
        self.held: dict[bytes, tuple[float, ErrorCode]] = {}
        self.txids = TransactionIds(rng)
        #: Begins this gateway's hop of each relayed or answered request's trace.
        self.tracer = tracer or W3CHops()
        self._out = Outbox()                   # what the machines produce
        self._events: deque[object] = deque()  # what the caller sees
        self.registration = GatewayRegistration(self._out, core, verifier)
        self.discovery = DiscoveryResponder(self._out, core, discovery_policy, pdu_limit,
                                            self.tracer,
                                            None if budget is None else budget.start)
        self.echo = EchoResponder(self._out, core.gateway_id)
        self.sessions: dict[Handle, PeerSession] = {}
        self._session_timers = _Deadlines()  # marked stale wherever a session is run
        self.peers: dict[bytes, Handle] = {}   # gateway id -> handle of an established session
        self.relays: dict[tuple[Handle, int], Relay] = {}
        self._unanswered: list[Relay] = []     # relays that may still time out
        #: Local records withheld from peers after a restart (Section 6.1.2), if any.
        self.grace: RestartGrace | None = None
        self.ctx = RelayContext(self, self.txids, core.gateway_id, core.domain, name,
                                route_timeout, outgoing=outgoing, tracer=self.tracer)
        self.summaries = SummaryExchange(self._out, core, export_for=self._shown,
                                         accepts=summary_check, transit=transit,
                                         pdu_limit=pdu_limit)
        self.discovery_policy = discovery_policy
        self.fed_ctx = DiscoveryContext(core, core.remote, self.summaries.table, self.txids,
                                        self.peers.get, verifier, self._peer_domain,
                                        transit, pdu_limit, tracer=self.tracer)
        #: Relayed DISCOVERs by (association, transaction id) of each one sent.
        self.discoveries: dict[tuple[Handle, int], FederatedDiscovery] = {}
        self._relaying: list[FederatedDiscovery] = []  # may still time out
        #: Who takes each message type, in turn (:meth:`_receivers`).
        self._takers = dispatch_table(self._receivers())

    def export_for(self, domain: str) -> Callable[[CapabilityRecord], bool] | None:
        """The records advertised to a peer of ``domain``: none to a domain that gets
        summaries only (``replication``), else the ``export_for`` hook's."""
        if domain != self.core.domain and self.replication(domain) is Replication.SUMMARY:
            return lambda _record: False
        return self._export_for(domain)

    def _shown(self, domain: str) -> Callable[[CapabilityRecord], bool] | None:
        """What a capability summary towards ``domain`` covers: what the ``export_for``
        hook shows it, less the records withheld after a restart."""
        allow = self._export_for(domain)
        return allow if self.grace is None else self.grace.exportable(allow)

    def _peer_domain(self, handle: Handle) -> str | None:
        """The domain of an ESTABLISHED peer session's gateway (None: not a peer)."""
        s = self.sessions.get(handle)
        return None if s is None or s.state is not PeerState.ESTABLISHED else s.peer_domain

    def restarted(self, now: float, grace: float = timer("RESTART_GRACE")) -> int:
        """This gateway restarted on its registry (Section 6.1.2): withhold the local
        records loaded from it from peers until their agents come back or ``grace``
        seconds pass.  Returns how many records are withheld."""
        self.grace = RestartGrace(self.core.agent_ids(local_only=True), now + grace)
        return len(self.grace.stale)

    def _release(self, agent_ids: Iterable[bytes], now: float) -> None:
        """Records no longer stale (their agents came back, or the grace ended)."""
        back = [a for a in agent_ids if self.grace is not None and self.grace.back(a)]
        if back:
            self._announce(TableChanges(advertised=tuple(back)), now)
            self.summaries.changed(now)

    # --- peering (the sessions' PeeringPort) --------------------------------------------------
    def check_open(self, handle: Handle, msg: Open, now: float) -> Refusal | None:
        """The ``accept_open`` hook (identity and federation), then the node's own OPEN
        check: not ourselves, not a gateway already peered over another association, not
        a peer held after exceeding a peer limit (with RETRY_AFTER)."""
        refused = self.accept_open(handle, msg)
        if refused is not None:
            return refused
        until, code = self.held.get(msg.gateway_id, (0.0, ErrorCode.SUCCESS))
        if now < until:
            return Refusal(code, f"held for {until - now:.0f} s after {code.name}",
                           max(1, math.ceil((until - now) * 1000)))
        self.held.pop(msg.gateway_id, None)
        if msg.gateway_id == self.core.gateway_id:
            return Refusal(ErrorCode.IDENTITY_MISMATCH, "OPEN carries our own gateway id")
        other = self.peers.get(msg.gateway_id)
        if other is not None and other != handle:
            return Refusal(ErrorCode.POLICY_DENIED,
                           "a session with that gateway exists on another association")
        return None

    # --- routing (the relays' RoutingPort) ---------------------------------------------------
    def next_hop(self, target: bytes, hop_limit: int, path: tuple[bytes, ...],
                 now: float) -> NextHop | Refusal:
        """The routing table's decision (Section 5.3), else a route kept from relayed
        discovery answers (Section 5.2.1), with the association it goes to."""
        core = self.core
        d = core.route(target, hop_limit, path)
        if isinstance(d, Reject) and d.code is ErrorCode.NO_ROUTE:
            d = core.remote.decide(core.gateway_id, target, hop_limit, path, now) or d
        if isinstance(d, DeliverLocal):
            return NextHop(self.registration.handles.get(d.agent_id), hop_limit, path, True)
        if isinstance(d, Forward):
            dest = self.peers.get(d.next_hop)
            if dest is not None:
                return NextHop(dest, d.hop_limit, d.path)
            d = Reject(ErrorCode.NO_ROUTE)
        return Refusal(d.code, "")

    def resolve(self, query: DiscoveryQuery, now: float) -> bytes | Refusal | None:
        """The best record for a ROUTE_REQUEST's QUERY: held, else kept from relayed
        discovery answers; QUERY_TOO_LARGE over the discovery budget (Section 10.7)."""
        budget = self.discovery.budget
        try:
            best = self.core.discover(query, Scope.FEDERATED, 1, now,
                                      spend=(lambda: None) if budget is None else budget()) \
                or self.core.remote.answers(query_key(query, 1), now)
        except ProtocolError as over:
            return Refusal(over.code, over.diagnostic)
        return best[0].record.record.agent_id if best else None

    def relays_waiting(self, handle: Handle) -> bool:
        """Whether relayed ROUTE_REQUESTs or TRACE_REQUESTs wait on ``handle``."""
        return any(h == handle for h, _ in self.relays)

    def start_sync(self, handle: Handle, gateway_id: bytes, domain: str) -> PeerSync:
        """Record exchange on a session just established (Section 6.5)."""
        allow = self.export_for(domain)
        return PeerSync(self._out, self.core,
                        SyncPeer(handle, gateway_id, domain,
                                 lambda msg, _now: self._out.send(handle, msg),
                                 allow if self.grace is None
                                 else self.grace.exportable(allow), self.pdu_limit(handle)),
                        self.txids, self.verifier, slice_clock=self.slice_clock,
                        learn_slice=self.learn_slice)

    def _session(self, handle: Handle) -> PeerSession:
        s = self.sessions.get(handle)
        if s is None:
            s = PeerSession(self._out, handle, self.local, self, self.txids,
                            timers=self.session_timers(handle))
            self.sessions[handle] = s
        self._session_timers.stale(handle)  # the caller is about to run it
        return s

    def connect(self, handle: Handle, now: float) -> None:
        """Open a peer session over the association ``handle`` (we send OPEN)."""
        self._session(handle).start(now)
        self._settle(now)

    def disconnect(self, handle: Handle, now: float) -> None:
        """Close a peer session with NOTIFY CEASE."""
        self._session_timers.stale(handle)
        self.sessions[handle].close(now)
        self._settle(now)

    # --- input --------------------------------------------------------------------------------
    def receive(self, source: Handle, msg: Message, now: float) -> None:
        """Dispatch one decoded message from ``source``."""
        queued = len(self._out.messages)
        try:
            self._dispatch(source, msg, now)
        except ProtocolError as err:
            self._answer_refused(source, msg, err, queued)
            self._events.append(ProtocolViolation(source, msg.TYPE, err.code, err.diagnostic))
        self._settle(now)

    def _answer_refused(self, source: Handle, msg: Message, err: ProtocolError,
                        queued: int) -> None:
        """A refused request is answered at once (Section 5): its answer message, or ERROR,
        with the refusal's code, unless the machine that refused it has sent ``source``
        its answer (or a session's NOTIFY) since the first ``queued`` messages, so that
        no requester waits for an answer that will never come."""
        if any(dest == source for dest, _ in self._out.messages[queued:]):
            return
        answer = refusal_answer(msg, err.code, err.diagnostic)
        if answer is not None:
            self._out.send(source, answer)

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

    def _dispatch(self, source: Handle, msg: Message, now: float) -> None:
        t = msg.TYPE
        if self.limits is not None and t in ANSWER_TO and t not in SESSION_MESSAGES:
            limited = self.limits.check(source, msg, source in self.sessions, now)
            if limited is not None:  # before any cryptography the admission would do
                answer = refusal_answer(msg, limited.code, limited.diagnostic,
                                        limited.retry_after)
                if answer is not None:
                    self._out.send(source, answer)
                raise ProtocolError(limited.code, limited.diagnostic, t)
        if self.admit is not None:
            refused = self.admit(source, msg, now)
            if refused is not None:
                answer = refusal_answer(msg, refused.code, refused.diagnostic)
                if answer is not None:
                    self._out.send(source, answer)
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
        relay.receive(source, msg, now)
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
        """A ROUTE_REQUEST: relayed, or first resolved by a relayed DISCOVER when no
        held record matches its QUERY (once summaries are held)."""
        assert isinstance(msg, RouteRequest)
        if msg.query is not None and msg.target_agent is None and self.summaries.foreign() \
                and not self.core.discover(msg.query, Scope.FEDERATED, 1, now):
            self._federated(FederatedDiscovery(
                self._out, self.fed_ctx, source, Discover(
                    transaction_id=msg.transaction_id, query=msg.query,
                    scope=Scope.FEDERATED, max_results=_RESOLVE_LIMIT, trace=msg.trace),
                None, resolving=msg), now)
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
        if relay.downstream is not None:
            self.relays[relay.downstream] = relay
            self._unanswered.append(relay)
            session = self.sessions.get(relay.downstream[0])
            if session is not None:  # probe the next hop while it is waited on
                session.watch(now)

    # --- timers -------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        self._unanswered = [r for r in self._unanswered if not r.done]
        self._relaying = [f for f in self._relaying if not f.done]
        return earliest(self.registration.get_timer(), self.summaries.get_timer(),
                        None if self.grace is None else self.grace.get_timer(),
                        self._session_timers.earliest(self._session_timer),
                        *(r.get_timer() for r in self._unanswered),
                        *(f.get_timer() for f in self._relaying))

    def _session_timer(self, handle: Handle) -> float | None:
        s = self.sessions.get(handle)
        return None if s is None else s.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run every machine whose timer is due."""
        due = self.registration.get_timer()
        if due is not None and now >= due:
            self.registration.handle_timer(now)
        if self.grace is not None:
            released = tuple(self.grace.expire(now))
            if released:
                self._announce(TableChanges(advertised=released), now)
                self.summaries.changed(now)
        for handle, s in list(self.sessions.items()):
            due = s.get_timer()
            if due is not None and now >= due:
                self._session_timers.stale(handle)
                s.handle_timer(now)
        for r in self._unanswered:
            if not r.done:
                r.handle_timer(now)
                if r.done and r.downstream is not None:
                    self.relays.pop(r.downstream, None)
        for f in self._relaying:
            if not f.done:
                f.handle_timer(now)
        self.discoveries = {k: f for k, f in self.discoveries.items() if not f.done}
        self.summaries.handle_timer(now)
        self._settle(now)

    # --- output -------------------------------------------------------------------------------
    def has_output(self) -> bool:
        """Whether messages or events are waiting to be drained."""
        return bool(self._out.messages or self._events)

    def messages_to_send(self) -> list[tuple[Handle, Message]]:
        return self._out.messages_to_send()

    def next_event(self) -> object | None:
        return self._events.popleft() if self._events else None

    # --- propagation (Section 6.5) ------------------------------------------------------------
    def _settle(self, now: float) -> None:
        """React to what the machines reported, then pass the events on."""
        while (ev := self._out.next_event()) is not None:
            if isinstance(ev, AgentRegistered):
                if self.grace is not None:
                    self.grace.back(ev.agent_id)
                self._announce(TableChanges(advertised=(ev.agent_id,)), now)
                self.summaries.changed(now)
            elif isinstance(ev, AgentRemoved):
                if self.grace is not None:
                    self.grace.back(ev.withdrawn.agent_id)
                self._announce(TableChanges(purged=(ev.withdrawn,)), now)
                self.summaries.changed(now)
            elif isinstance(ev, TableChanged):
                self._announce(TableChanges(ev.advertised, ev.withdrawn, ev.purged), now)
                if self._peer_domain(ev.from_handle) == self.core.domain:
                    self.summaries.changed(now)
            elif isinstance(ev, SessionEstablished):
                self.peers[ev.gateway_id] = ev.handle
                self.summaries.up(SummaryPeer(ev.handle, ev.gateway_id, ev.domain), now)
            elif isinstance(ev, SessionClosed):
                self.sessions.pop(ev.handle, None)
                self._session_timers.stale(ev.handle)
                if self.limits is not None:
                    self.limits.forget(ev.handle)
                self._fail_relays_via(ev.handle, now)
                if ev.gateway_id is not None and ev.status in HELD_AFTER and not ev.by_peer:
                    self.held[ev.gateway_id] = (now + self.limit_hold, ev.status)
                if ev.gateway_id is not None and self.peers.get(ev.gateway_id) == ev.handle:
                    del self.peers[ev.gateway_id]
                    self.summaries.down(ev.gateway_id, now)
                    self._announce(self.core.drop_peer(ev.gateway_id), now)
            elif isinstance(ev, QueryResolved):  # the query is answered: route it now
                self._relay(RouteRelay(self._out, self.ctx, ev.source, ev.request), now)
                continue
            self._events.append(ev)

    def _fail_relays_via(self, handle: Handle, now: float) -> None:
        """Answer at once the relayed transactions waiting on a peer whose session just
        closed (Section 6.7): TARGET_UNREACHABLE, as if the next hop had said so."""
        for key in [k for k in self.relays if k[0] == handle]:
            relay = self.relays.pop(key)
            relay.receive(handle, Error(transaction_id=key[1],
                                        status=ErrorCode.TARGET_UNREACHABLE,
                                        offending_type=int(relay.request.TYPE),
                                        diagnostic="the session with the next hop closed"),
                          now)

    def _announce(self, changes: TableChanges, now: float) -> None:
        """Tell every session (the one a change came from too: it may now have to
        withdraw what it advertised there, Section 6.3)."""
        for handle, s in list(self.sessions.items()):
            if isinstance(s.sync, PeerSync):
                self._session_timers.stale(handle)
                s.sync.announce(changes, now)
