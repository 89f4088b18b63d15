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
* ``accept_certificate(source, der, now)`` checks a peer's CERTIFICATE, which the
  session then keeps in ``certificates`` until it closes (Section 6.10; default: none
  accepted);
* ``export_for(domain)`` and ``discovery_policy(source)`` filter what peers and
  requesters are shown (Section 7.4);
* ``replication(domain)`` says whether a peer domain's gateways get records or only
  capability summaries (Section 6.9, :mod:`~dmscproto.protocol.summary`; our own
  domain always gets records), ``summary_mode`` whether any peer domain gets only
  summaries in this gateway's configuration (then our domain's summary also goes to
  our own domain's gateways, to pass on); ``summary_check(source, domain)`` whether a peer may
  advertise summaries of that domain, ``transit(peer_domain, domain)`` whether
  summaries (and relayed answers) of ``domain`` are shown to ``peer_domain``.

Summaries are originated, learned and re-advertised by a
:class:`~dmscproto.protocol.summary.SummaryExchange`; a FEDERATED DISCOVER (and a
ROUTE_REQUEST whose QUERY no held record matches) is relayed to the domains whose
summary matches by a :class:`~dmscproto.protocol.federated.FederatedDiscovery`
transaction once any summary is held.

:meth:`dmscproto.security.guard.GatewayGuard.node_hooks` supplies all of them.

Each relayed ROUTE_REQUEST or TRACE_REQUEST answered is reported as
:class:`~dmscproto.protocol.events.TransactionEnded`, unless ``transaction_events`` is
False (a caller that reads none: then none is made).

The node's bases hold its other two parts: :class:`~.dispatch.NodeDispatch` takes each
received message to the machine whose table has an input for it, and
:class:`~.node_ports.NodePorts` answers what the machines ask of the gateway (their
ports).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable

from ..codec.changes import TableChanges
from ..codec.messages import Error, Message
from ..codec.registry import MAX_PDU_SIZE, ErrorCode, MessageType, limit, timer
from ..protocol.certificates import CertificateCheck, SessionCertificates
from ..protocol.discovery import DiscoveryResponder, PolicyFor
from ..protocol.dispatch import dispatch_table
from ..protocol.events import (
    AgentRegistered,
    AgentRemoved,
    ProtocolEvent,
    ProtocolViolation,
    SessionClosed,
    SessionEstablished,
    TableChanged,
    TransactionEnded,
)
from ..protocol.federated import DiscoveryContext, FederatedDiscovery, QueryResolved
from ..protocol.machine import (
    Handle,
    Outbox,
    ProtocolError,
    Refusal,
    TransactionIds,
    earliest,
    learning_budget,
    refusal_answer,
    slice_of,
)
from ..protocol.oam import EchoResponder
from ..protocol.peering import (
    HELD_AFTER,
    ExportFor,
    LocalGateway,
    OpenCheck,
    PeerSession,
    PeerState,
    SessionTimers,
)
from ..protocol.ports import Admission
from ..protocol.registration import GatewayRegistration, RecordVerifier, verify_signature
from ..protocol.routing import Outgoing, Relay, RelayContext, RouteRelay
from ..protocol.summary import (
    Replication,
    SummaryCheck,
    SummaryExchange,
    SummaryPeer,
    SummaryTransit,
)
from ..protocol.sync import PeerSync
from ..protocol.tracecontext import HopTracer, W3CHops
from .core import GatewayCore
from .deadlines import Deadlines
from .dispatch import NodeDispatch
from .drops import PeerDrops
from .limits import Budget, RequestLimits
from .restart import RestartGrace

#: The messages of relayed calls, which move no timer but the relays' and sessions'.
_RELAYED = frozenset({MessageType.ROUTE_REQUEST, MessageType.ROUTE_REPLY})
#: A relay's timer, read through the class once (twice a routed call: never specialised).
_relay_timer = Relay.get_timer


class GatewayNode(NodeDispatch):
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
                 accept_certificate: CertificateCheck = lambda _h, _der, _now: Refusal(
                     ErrorCode.UNTRUSTED_CERTIFICATE, "no certificate is accepted here"),
                 certificates: SessionCertificates | None = None,
                 route_timeout: float = timer("ROUTE_TIMEOUT"),
                 pdu_limit: Callable[[Handle], int] = lambda _handle: MAX_PDU_SIZE,
                 replication: Callable[[str], Replication] = lambda _d: Replication.FULL,
                 summary_mode: bool = False,
                 summary_check: SummaryCheck = lambda _h, _d: None,
                 transit: SummaryTransit = lambda _p, _d: True,
                 limits: RequestLimits | None = None,
                 tracer: HopTracer | None = None,
                 limit_hold: float = limit("PEER_LIMIT_HOLD"),
                 budget: Budget | None = None,
                 relay_max_hops: int = int(limit("RELAY_MAX_HOPS")),
                 rng: random.Random | None = None,
                 slice_clock: Callable[[], float] | None = None,
                 learn_slice: float = limit("LEARN_SLICE"),
                 work_slice: float = limit("WORK_SLICE"),
                 learn_budget: Callable[[float], float] | None = None,
                 transaction_events: bool = True) -> None:
        self.core = core
        self.name = name
        self.local = LocalGateway(core.gateway_id, core.domain)
        #: The session timers towards the peer behind a handle (default: ``hold_time``).
        self.session_timers = session_timers or (lambda _h: SessionTimers(hold_time))
        self.verifier = verifier
        self.admit = admit
        self.accept_open: OpenCheck = accept_open or (lambda _handle, _msg: None)
        self.accept_certificate = accept_certificate
        #: The certificates each peer session received (Section 6.10).
        self.certificates = certificates or SessionCertificates()
        self._export_for = export_for
        self.pdu_limit = pdu_limit
        self.replication = replication
        #: Rate, cost and query limits of requests (Section 10.7; None: none).
        self.limits = limits
        #: A monotonic clock that ends each slice of a large UPDATE (None: one slice).
        self.slice_clock = slice_clock
        self.learn_slice = learn_slice
        #: The time left for learning records in a step (every session's UPDATEs share
        #: it): ``learn_budget`` if given (a gateway process: its event loop's turn
        #: budget), else ``learn_slice`` of ``slice_clock`` per step (None: no slices).
        self.learn_budget = learning_budget(learn_budget, slice_clock, learn_slice)
        #: The most one step spends on work over many records (WORK_SLICE).
        self.work_slice = work_slice
        self.limit_hold = limit_hold
        #: Peers whose session this gateway closed for exceeding a peer limit, and until
        #: when their OPENs are refused (Section 6.1.1).
        self.held: dict[bytes, tuple[float, ErrorCode]] = {}
        self.txids = TransactionIds(rng)
        #: Begins this gateway's hop of each relayed or answered request's trace.
        self.tracer = tracer or W3CHops()
        self._out = Outbox()                   # what the machines produce
        #: What the machines queued, taken (the outbox's own method, not a forward of
        #: it: a call fewer per drain, twice a routed call).
        self.messages_to_send = self._out.messages_to_send
        #: The earliest timer of the machines a relayed ROUTE_REQUEST or ROUTE_REPLY never
        #: moves (registration, summaries, route drops, restart grace), while known:
        #: forgotten by every other input, and every event but TransactionEnded.
        self._steady: float | None = None
        self._steady_known = False
        self._events: deque[ProtocolEvent] = deque()  # what the caller sees
        self.registration = GatewayRegistration(self._out, core, verifier)
        self.discovery = DiscoveryResponder(self._out, core, discovery_policy, pdu_limit,
                                            self.tracer,
                                            None if budget is None else budget.start)
        self.echo = EchoResponder(self._out, core.gateway_id)
        self.sessions: dict[Handle, PeerSession] = {}
        self._closed: dict[Handle, float] = {}
        self._dialled: set[Handle] = set()  # associations whose session we started
        self._session_timers = Deadlines[Handle]()  # marked stale wherever one is run
        self.peers: dict[bytes, Handle] = {}   # gateway id -> handle of an established session
        self.relays: dict[tuple[Handle, int], Relay] = {}
        self._unanswered: dict[Relay, None] = {}  # relays that may still time out
        self._relay_timers = Deadlines[Relay]()  # put wherever one is run (_ran)
        #: Routes of closed sessions still to drop, and when the next slice is due.
        self.drops = PeerDrops()
        #: The sync machine of each established session (freed in slices after it).
        self.syncs: dict[Handle, PeerSync] = {}
        self._drop_at: float | None = None
        #: Local records withheld from peers after a restart (Section 6.1.2), if any.
        self.grace: RestartGrace | None = None
        self.ctx = RelayContext(self, self.txids, core.gateway_id, core.domain, name,
                                route_timeout, outgoing=outgoing, tracer=self.tracer,
                                report_ends=transaction_events)
        self.summaries = SummaryExchange(self._out, core, export_for=export_for,
                                         withheld=self._withheld, inside=summary_mode,
                                         accepts=summary_check, transit=transit,
                                         pdu_limit=pdu_limit, slice_clock=slice_clock,
                                         slice_s=work_slice)
        self.discovery_policy = discovery_policy
        self.fed_ctx = DiscoveryContext(core, core.remote, self.summaries.table, self.txids,
                                        self.peers.get, verifier, self._peer_domain,
                                        transit, pdu_limit, tracer=self.tracer,
                                        max_hops=relay_max_hops,
                                        budget=None if budget is None else budget.start)
        #: Relayed DISCOVERs by (association, transaction id) of each one sent.
        self.discoveries: dict[tuple[Handle, int], FederatedDiscovery] = {}
        self._relaying: list[FederatedDiscovery] = []  # may still time out
        #: Who takes each message type, in turn (:meth:`_receivers`).
        self._takers = dispatch_table(self._receivers())

    def _withheld(self) -> set[bytes]:
        """The local records withheld from peers after a restart (Section 6.1.2)."""
        return set() if self.grace is None else self.grace.stale

    def _peer_domain(self, handle: Handle) -> str | None:
        """The domain of an ESTABLISHED peer session's gateway (None: not a peer)."""
        s = self.sessions.get(handle)
        return None if s is None or s.state is not PeerState.ESTABLISHED else s.peer_domain

    def restarted(self, now: float, grace: float = timer("RESTART_GRACE")) -> int:
        """This gateway restarted on its registry (Section 6.1.2): withhold the local
        records loaded from it from peers until their agents come back or ``grace``
        seconds pass.  Returns how many records are withheld."""
        self._steady_known = False
        self.grace = RestartGrace(self.core.agent_ids(local_only=True), now + grace)
        return len(self.grace.stale)

    def _release(self, agent_ids: Iterable[bytes], now: float) -> None:
        """Records no longer stale (their agents came back, or the grace ended)."""
        back = [a for a in agent_ids if self.grace is not None and self.grace.back(a)]
        if back:
            self._announce(TableChanges(advertised=tuple(back)), now)
            self.summaries.released(back, now)

    def connect(self, handle: Handle, now: float) -> None:
        """Open a peer session over the association ``handle`` (we send OPEN)."""
        self._steady_known = False
        self._dialled.add(handle)
        self._session(handle).start(now)
        self._settle(now)

    def disconnect(self, handle: Handle, now: float) -> None:
        """Close a peer session with NOTIFY CEASE."""
        self._steady_known = False
        self._session_timers.stale(handle)
        self.sessions[handle].close(now)
        self._settle(now)

    # --- input --------------------------------------------------------------------------------
    def receive(self, source: Handle, msg: Message, now: float) -> None:
        """Dispatch one decoded message from ``source``."""
        if msg.TYPE not in _RELAYED:
            self._steady_known = False
        queued = len(self._out.messages)
        try:
            self._dispatch(source, msg, now)
        except ProtocolError as err:
            self._answer_refused(source, msg, err, queued)
            self._events.append(ProtocolViolation(source, msg.TYPE, err.code, err.diagnostic))
        if self._out.events:  # none, on a routed call's messages: no call to find that
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

    # --- timers -------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        # asked for after every turn that ran the node (twice a routed call): no list
        # or generator made when there is nothing to make it of, and the timers a
        # relayed message never moves kept from the last turn that may have moved them
        if not self._steady_known:
            self._steady_known = True
            self._steady = earliest(self.registration.get_timer(), self.summaries.get_timer(),
                                    self._drop_at,
                                    None if self.grace is None else self.grace.get_timer())
        at = self._relay_timers.earliest(
            _relay_timer, self._session_timers.earliest(self._session_timer, self._steady))
        if self._relaying:
            self._relaying = [f for f in self._relaying if not f.done]
            return earliest(at, *(f.get_timer() for f in self._relaying))
        return at

    def _session_timer(self, handle: Handle) -> float | None:
        s = self.sessions.get(handle)
        return None if s is None else s.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run every machine whose timer is due."""
        self._steady_known = False
        due = self.registration.get_timer()
        if due is not None and now >= due:
            self.registration.handle_timer(now)
        if self.grace is not None:
            released = tuple(self.grace.expire(now, slice_of(self.slice_clock,
                                                             self.work_slice)))
            if released:
                self._announce(TableChanges(advertised=released), now)
                self.summaries.released(released, now)
        for handle, s in list(self.sessions.items()):
            due = s.get_timer()
            if due is not None and now >= due:
                self._session_timers.stale(handle)
                s.handle_timer(now)
        for r in [r for r in self._unanswered if (at := r.get_timer()) is not None and now >= at]:
            r.handle_timer(now)
            if r.done and r.downstream is not None:
                self.relays.pop(r.downstream, None)
            self._ran(r)
        for f in self._relaying:
            if not f.done:
                f.handle_timer(now)
        self.discoveries = {k: f for k, f in self.discoveries.items() if not f.done}
        self.summaries.handle_timer(now)
        if self._drop_at is not None and now >= self._drop_at:
            self._drop_slice(now)
        self._settle(now)

    # --- output -------------------------------------------------------------------------------
    def has_output(self) -> bool:
        """Whether messages or events are waiting to be drained."""
        return bool(self._out.messages or self._events)

    def next_event(self) -> ProtocolEvent | None:
        return self._events.popleft() if self._events else None

    # --- propagation (Section 6.5) ------------------------------------------------------------
    def _settle(self, now: float) -> None:
        """React to what the machines reported, then pass the events on."""
        events = self._out.events
        while events:
            ev = events.popleft()
            if type(ev) is TransactionEnded:  # every relayed call's: only passed on
                self._events.append(ev)
                continue
            self._steady_known = False  # what follows may move them
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
                loser = self._collision_loser(ev)
                if loser != ev.handle:
                    self.peers[ev.gateway_id] = ev.handle
                    self.drops.cancel(ev.gateway_id)
                    self.summaries.up(SummaryPeer(ev.handle, ev.gateway_id, ev.domain), now)
                if loser is not None:  # its routes are the winner's: none is dropped
                    self._session_timers.stale(loser)
                    self.sessions[loser].close(now)
            elif isinstance(ev, SessionClosed):
                self.sessions.pop(ev.handle, None)
                self._dialled.discard(ev.handle)
                self._closing(ev.handle, now)
                self.certificates.drop(ev.handle)
                self._session_timers.stale(ev.handle)
                if self.limits is not None:
                    self.limits.forget(ev.handle)
                self._fail_relays_via(ev.handle, now)
                if ev.gateway_id is not None and ev.status in HELD_AFTER and not ev.by_peer:
                    self.held[ev.gateway_id] = (now + self.limit_hold, ev.status)
                if ev.gateway_id is not None and self.peers.get(ev.gateway_id) == ev.handle:
                    del self.peers[ev.gateway_id]
                    self.summaries.down(ev.gateway_id, now)
                    self.drops.start(ev.gateway_id, self.core.route_chunks_via(ev.gateway_id))
                sync = self.syncs.pop(ev.handle, None)
                if sync is not None:
                    self.drops.free(sync)
                self._drop_slice(now)
            elif isinstance(ev, QueryResolved):  # the query is answered: route it now
                self._relay(RouteRelay(self._out, self.ctx, ev.source, ev.request), now)
                continue
            self._events.append(ev)

    def _collision_loser(self, ev: SessionEstablished) -> Handle | None:
        """When ``ev`` establishes a second session with one gateway (each dialled the
        other at once, Section 6.1.1), the one to close: the session over the association
        that the gateway with the lower Gateway ID dialled, so that both ends keep the
        same one (RFC 4271, Section 6.8, is the model), else the newer."""
        other = self.peers.get(ev.gateway_id)
        if other is None or other == ev.handle or other not in self.sessions:
            return None
        ours_higher = self.core.gateway_id > ev.gateway_id
        kept = [h for h in (other, ev.handle) if (h in self._dialled) == ours_higher]
        return other if kept == [ev.handle] else ev.handle

    def _drop_slice(self, now: float) -> None:
        """Drop routes of closed sessions for one slice (:class:`.drops.PeerDrops`) and
        propagate what changed; the rest at the next timer."""
        dropped = self.drops.work(self.core, slice_of(self.slice_clock, self.work_slice))
        self._drop_at = now if self.drops else None
        if dropped:
            self.summaries.changed(now)
            self._announce(dropped, now)

    def _fail_relays_via(self, handle: Handle, now: float) -> None:
        """Answer at once the relayed transactions waiting on a peer whose session just
        closed (Section 6.1.1): TARGET_UNREACHABLE, as if the next hop had said so."""
        for key in [k for k in self.relays if k[0] == handle]:
            relay = self.relays.pop(key)
            relay.receive(handle, Error(transaction_id=key[1],
                                        status=ErrorCode.TARGET_UNREACHABLE,
                                        offending_type=int(relay.request.TYPE),
                                        diagnostic="the session with the next hop closed"),
                          now)
            self._ran(relay)

    def _announce(self, changes: TableChanges, now: float) -> None:
        """Tell every session (the one a change came from too: it may now have to
        withdraw what it advertised there, Section 6.3)."""
        for handle, s in list(self.sessions.items()):
            if isinstance(s.sync, PeerSync):
                self._session_timers.stale(handle)
                s.sync.announce(changes, now)
