"""Routing at a gateway, one machine per transaction (draft-dmsc-protocol-00, Section 5.3).

A ROUTE_REQUEST is decided in the draft's order (:meth:`GatewayCore.route`: loop, local
target, route, hop limit) and then delivered to the local agent, forwarded to the next
hop, or answered with the routing error.  A request to be forwarded first passes the
gateway's ``outgoing`` hook (:class:`RelayContext`), which may rewrite it (the origin
gateway replaces an agent's ACCESS_TOKEN with an origin assertion, Section 10.6) or
refuse it (the import policy, once a QUERY is resolved to a remote target).  A
delivered or forwarded request gets a new transaction id towards the next hop; the
machine keeps the incoming association and transaction id (the return path) until the
answer comes back or the transaction timer (ROUTE_TIMEOUT, or the request's TIMEOUT if
smaller) expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from ..codec.messages import Error, Message, RouteReply, RouteRequest, TraceReply, TraceRequest
from ..codec.registry import ErrorCode, MessageType, Scope, timer
from ..gateway.routing import Decision, DeliverLocal, Forward, Reject
from .events import TransactionEnded
from .machine import Handle, Machine, Outbox, ProtocolError, Refusal, TransactionIds, expect
from .ports import query_key
from .tracecontext import Hop, HopTracer, W3CHops

if TYPE_CHECKING:  # the core is passed in; importing it here would be a cycle
    from ..gateway.core import GatewayCore

#: The ``outgoing`` hook: given the association a ROUTE_REQUEST came from, the request as
#: it will be forwarded (resolved target, the next hop's HOP_LIMIT, PATH_VECTOR and
#: TIMEOUT), the incoming transaction id and ``now``, the request to send, or a refusal.
Outgoing = Callable[[Handle, RouteRequest, int, float], RouteRequest | Refusal]


@dataclass
class RelayContext:
    """What relayed transactions of one gateway share."""

    core: GatewayCore
    txids: TransactionIds
    #: The association of an ESTABLISHED peer session with a gateway id, if any.
    peer_handle: Callable[[bytes], Handle | None]
    #: The association of a locally registered agent, if known.
    agent_handle: Callable[[bytes], Handle | None]
    #: The gateway's name in HOP records (Section 7.6).
    name: str | None = None
    route_timeout: float = timer("ROUTE_TIMEOUT")
    #: A forwarded request's TIMEOUT is this fraction of the forwarding gateway's own
    #: transaction time, so the next hop's error answer arrives before that time is up.
    forward_fraction: float = timer("FORWARD_FRACTION")
    #: Prepares or refuses each ROUTE_REQUEST forwarded to a peer (module docstring).
    outgoing: Outgoing | None = None
    #: Each relayed transaction is one hop of its trace (Section 7.5).
    tracer: HopTracer = field(default_factory=W3CHops)


class Relay(Machine):
    """What ROUTE_REQUEST and TRACE_REQUEST relaying share: the decision, the return
    path, the transaction timer.  Subclasses give the table and the answer messages."""

    REQUEST: ClassVar[type[RouteRequest] | type[TraceRequest]]
    REPLY: ClassVar[MessageType]

    def __init__(self, outbox: Outbox, ctx: RelayContext, upstream: Handle,
                 request: RouteRequest | TraceRequest) -> None:
        super().__init__(outbox)
        self.ctx = ctx
        self.upstream = upstream
        self.request = request
        #: Where the request went and with which transaction id, once sent on.
        self.downstream: tuple[Handle, int] | None = None
        self.deadline: float | None = None
        self.decision: Decision = Reject(ErrorCode.NO_ROUTE)
        #: The reason given with a Reject decision, if any.
        self.diagnostic: str | None = None
        #: The target agent, once a QUERY is resolved.
        self.target: bytes | None = None
        #: This gateway's hop of the request's trace (Section 7.5).
        self.hop: Hop = ctx.tracer.begin(request.TYPE, request.trace)

    @property
    def done(self) -> bool:
        return self.state.name == "DONE"

    def start(self, now: float) -> None:
        """Decide the request (the guard of the first transition) and run it."""
        try:
            self.step(self.classify(now), now, self.request)
        except ProtocolError as err:
            self.refuse(self.upstream, self.request, err)
            raise

    def classify(self, now: float) -> Enum:
        raise NotImplementedError

    def decide(self, target: bytes, now: float) -> Decision:
        """The routing decision, with the association the request would go to."""
        core = self.ctx.core
        d = core.route(target, self.request.hop_limit, self.request.path)
        if isinstance(d, Reject) and d.code is ErrorCode.NO_ROUTE:  # a relayed answer's?
            d = core.remote.decide(core.gateway_id, target, self.request.hop_limit,
                                   self.request.path, now) or d
        if isinstance(d, DeliverLocal) and self.ctx.agent_handle(d.agent_id) is None:
            return Reject(ErrorCode.TARGET_UNREACHABLE)
        if isinstance(d, Forward) and self.ctx.peer_handle(d.next_hop) is None:
            return Reject(ErrorCode.NO_ROUTE)
        return d

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        """The answer from downstream (matched by the caller on association and
        transaction id)."""
        try:
            if msg.TYPE is self.REPLY:
                inp = self.Input["REPLY"]
            elif msg.TYPE is MessageType.ERROR:
                inp = self.Input["ERROR"]
            else:
                raise self.unexpected(msg)
            self.step(inp, now, msg)
        except ProtocolError as err:
            self.refuse(source, msg, err)
            raise

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.step(self.Input["TIMEOUT"], now)

    # --- shared actions -------------------------------------------------------------------------
    def timeout(self) -> float:
        """The transaction time: ROUTE_TIMEOUT, or a ROUTE_REQUEST's TIMEOUT if smaller.
        TRACE_REQUEST has no TIMEOUT: each hop along its path waits ``forward_fraction``
        as long as the one before it."""
        if isinstance(self.request, TraceRequest):
            return self.ctx.route_timeout * self.ctx.forward_fraction ** len(self.request.path)
        timeout = self.ctx.route_timeout
        if self.request.timeout_ms is not None:
            timeout = min(timeout, self.request.timeout_ms / 1000)
        return timeout

    def send_on(self, dest: Handle, msg: RouteRequest | TraceRequest, now: float) -> None:
        txid = self.ctx.txids()
        self.downstream = (dest, txid)
        self.deadline = now + self.timeout()
        self.outbox.send(dest, replace(msg, transaction_id=txid, trace=self.hop.context))

    def answer(self, reply: RouteReply | TraceReply, relayed: bool = False) -> None:
        """Send ``reply`` upstream with the incoming transaction id and TRACE_CONTEXT
        (Section 7.5); end the transaction (and the hop: ``relayed`` when the answer
        came from downstream)."""
        self.deadline = None
        reply = replace(reply, transaction_id=self.request.transaction_id,
                        trace=self.request.trace)
        self.hop.end(reply.status, reply.diagnostic, relayed=relayed,
                     source=self.request.source_agent
                     if isinstance(self.request, RouteRequest) else None,
                     target=self.target or self.request.target_agent)
        self.outbox.send(self.upstream, reply)
        self.outbox.emit(TransactionEnded(self.request.TYPE, self.upstream,
                                          self.request.transaction_id, reply.status))

    def _relay_reply(self, now: float, msg: Message | None) -> None:
        assert isinstance(msg, RouteReply | TraceReply)
        self.answer(msg, relayed=True)

    def _relay_error(self, now: float, msg: Message | None) -> None:
        err = expect(msg, Error)
        self.answer(self.failure(err.status, err.diagnostic), relayed=True)

    def _reject(self, now: float, msg: Message | None) -> None:
        assert isinstance(self.decision, Reject)
        self.answer(self.failure(self.decision.code, self.diagnostic))

    def failure(self, status: ErrorCode, diagnostic: str | None) -> RouteReply | TraceReply:
        raise NotImplementedError


class RouteState(Enum):
    IDLE = "IDLE"
    DELIVERED = "DELIVERED"
    FORWARDED = "FORWARDED"
    DONE = "DONE"


class RouteInput(Enum):
    REQUEST_LOCAL = "ROUTE_REQUEST [target local]"
    REQUEST_FORWARD = "ROUTE_REQUEST [route, outgoing hook accepts]"
    REQUEST_REJECT = "ROUTE_REQUEST [refused]"
    REPLY = "ROUTE_REPLY"
    ERROR = "ERROR"
    TIMEOUT = "transaction timer"


class RouteAction(Enum):
    DELIVER = "send to the agent with a new transaction id; start transaction timer"
    FORWARD = ("send to the next hop with a new transaction id, HOP_LIMIT - 1, own id "
               "appended to PATH_VECTOR, TIMEOUT 9/10 of the transaction time and what the "
               "outgoing hook sets (ACCESS_TOKEN: origin assertion); start transaction timer")
    REJECT = ("answer ROUTE_REPLY with the error (NO_ROUTE, LOOP_DETECTED, ..., or the "
              "outgoing hook's refusal and its reason)")
    RELAY_REPLY = "pass ROUTE_REPLY upstream with the incoming transaction id"
    RELAY_ERROR = "answer ROUTE_REPLY upstream with ERROR's STATUS"
    UNREACHABLE = "answer ROUTE_REPLY TARGET_UNREACHABLE"
    TIMED_OUT = "answer ROUTE_REPLY TRANSACTION_TIMEOUT"


_S, _I, _A = RouteState, RouteInput, RouteAction


class RouteRelay(Relay):
    """One ROUTE_REQUEST at a gateway (Section 5.3)."""

    NAME = "routing"
    TITLE = "Routing, one transaction at a gateway"
    State, Input, Action = RouteState, RouteInput, RouteAction
    INITIAL = RouteState.IDLE
    TIMERS = ("ROUTE_TIMEOUT",)
    REQUEST = RouteRequest
    REPLY = MessageType.ROUTE_REPLY
    MESSAGE_INPUTS = {
        MessageType.ROUTE_REQUEST: (_I.REQUEST_LOCAL, _I.REQUEST_FORWARD, _I.REQUEST_REJECT),
        MessageType.ROUTE_REPLY: (_I.REPLY,),
        MessageType.ERROR: (_I.ERROR,),
    }
    TABLE = {
        (_S.IDLE, _I.REQUEST_LOCAL): (_A.DELIVER, _S.DELIVERED),
        (_S.IDLE, _I.REQUEST_FORWARD): (_A.FORWARD, _S.FORWARDED),
        (_S.IDLE, _I.REQUEST_REJECT): (_A.REJECT, _S.DONE),
        (_S.DELIVERED, _I.REPLY): (_A.RELAY_REPLY, _S.DONE),
        (_S.DELIVERED, _I.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.DELIVERED, _I.TIMEOUT): (_A.UNREACHABLE, _S.DONE),
        (_S.FORWARDED, _I.REPLY): (_A.RELAY_REPLY, _S.DONE),
        (_S.FORWARDED, _I.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.FORWARDED, _I.TIMEOUT): (_A.TIMED_OUT, _S.DONE),
    }

    def __init__(self, outbox: Outbox, ctx: RelayContext, upstream: Handle,
                 request: RouteRequest) -> None:
        super().__init__(outbox, ctx, upstream, request)
        #: The request for the next hop, once the outgoing hook accepted it.
        self.forwarded: RouteRequest | None = None

    def classify(self, now: float) -> Enum:
        req = expect(self.request, RouteRequest)
        if req.target_agent is None and req.query is None:
            self.decision = Reject(ErrorCode.MISSING_TLV)
        elif req.target_agent is not None and req.query is not None:
            self.decision = Reject(ErrorCode.INVALID_TLV_VALUE)
        else:
            self.target = req.target_agent
            if self.target is None:
                assert req.query is not None
                best = self.ctx.core.discover(req.query, Scope.FEDERATED, 1, now)
                kept = self.ctx.core.remote.answers(query_key(req.query, 1), now)
                if best:
                    self.target = best[0].record.record.agent_id
                elif kept:
                    self.target = kept[0].record.record.agent_id
            self.decision = (Reject(ErrorCode.NO_ROUTE) if self.target is None
                             else self.decide(self.target, now))
        if isinstance(self.decision, Forward):
            self.forwarded = self._outgoing(self.decision, now)
        if isinstance(self.decision, DeliverLocal):
            return _I.REQUEST_LOCAL
        if isinstance(self.decision, Forward):
            return _I.REQUEST_FORWARD
        return _I.REQUEST_REJECT

    def _outgoing(self, d: Forward, now: float) -> RouteRequest | None:
        """The request for the next hop, through the ``outgoing`` hook; a refusal turns
        the decision into a Reject (None)."""
        budget = int(self.timeout() * self.ctx.forward_fraction * 1000)
        fwd = replace(self._target_only(), hop_limit=d.hop_limit, path=d.path,
                      timeout_ms=budget)
        if self.ctx.outgoing is None:
            return fwd
        out = self.ctx.outgoing(self.upstream, fwd, self.request.transaction_id, now)
        if isinstance(out, Refusal):
            self.decision, self.diagnostic = Reject(out.code), out.diagnostic
            return None
        return out

    def _target_only(self) -> RouteRequest:
        """The request naming its resolved target (a QUERY is resolved once, at the
        first gateway; a request carries TARGET_AGENT or QUERY, never both)."""
        return replace(expect(self.request, RouteRequest), target_agent=self.target, query=None)

    def _deliver(self, now: float, msg: Message | None) -> None:
        assert isinstance(self.decision, DeliverLocal)
        dest = self.ctx.agent_handle(self.decision.agent_id)
        assert dest is not None
        self.send_on(dest, self._target_only(), now)

    def _forward(self, now: float, msg: Message | None) -> None:
        d = self.decision
        assert isinstance(d, Forward) and self.forwarded is not None
        dest = self.ctx.peer_handle(d.next_hop)
        assert dest is not None
        self.send_on(dest, self.forwarded, now)

    def _unreachable(self, now: float, msg: Message | None) -> None:
        self.answer(self.failure(ErrorCode.TARGET_UNREACHABLE, "no answer from the agent"))

    def _timed_out(self, now: float, msg: Message | None) -> None:
        self.answer(self.failure(ErrorCode.TRANSACTION_TIMEOUT, "no answer from the next hop"))

    def failure(self, status: ErrorCode, diagnostic: str | None) -> RouteReply:
        req = expect(self.request, RouteRequest)
        return RouteReply(status=status, path=req.path, diagnostic=diagnostic, trace=req.trace)
