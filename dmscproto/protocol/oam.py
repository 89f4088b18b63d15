"""OAM: echo and trace (draft-dmsc-protocol-00, Section 6.8).

The requester side of both is a :class:`~.requester.Requester` transaction (its
RequestCompleted event carries the round-trip time).  :class:`EchoResponder` answers
ECHO_REQUEST; :class:`TraceRelay` handles one TRACE_REQUEST at a gateway: it appends the
gateway's HOP record and routes the request like a ROUTE_REQUEST, except that the gateway
where the target is registered answers TRACE_REPLY itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from ..codec.messages import EchoReply, EchoRequest, Message, TraceReply, TraceRequest
from ..codec.registry import ErrorCode, MessageType
from ..codec.values import HopRecord
from .machine import Handle, Outbox, expect, timestamp_ms
from .ports import DeliverLocal, Forward
from .routing import Relay, RelayContext
from .typed import StepInput, TypedMachine


class EchoState(Enum):
    READY = "READY"


class EchoInput(Enum):
    ECHO_REQUEST = "ECHO_REQUEST"


class EchoAction(Enum):
    ANSWER = "answer ECHO_REPLY with SEQUENCE, TIMESTAMP and PAYLOAD unchanged"


@dataclass(frozen=True, slots=True)
class EchoRequested(StepInput):
    KIND = EchoInput.ECHO_REQUEST
    source: Handle
    request: EchoRequest


class EchoResponder(TypedMachine):
    """Answers ECHO_REQUEST at a gateway (one state; a typed machine, :mod:`.typed`)."""

    NAME = "echo-responder"
    TITLE = "Echo, responder side (gateway)"
    State, Input, Action = EchoState, EchoInput, EchoAction
    INITIAL = EchoState.READY
    MESSAGE_INPUTS = {MessageType.ECHO_REQUEST: (EchoInput.ECHO_REQUEST,)}
    TABLE = {(EchoState.READY, EchoInput.ECHO_REQUEST): (EchoAction.ANSWER, EchoState.READY)}

    def __init__(self, outbox: Outbox, gateway_id: bytes) -> None:
        super().__init__(outbox)
        self.gateway_id = gateway_id

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        if not isinstance(msg, EchoRequest):
            err = self.unexpected(msg)
            self.refuse(source, msg, err)
            raise err
        self.run(EchoRequested(source, msg), now)

    def _answer(self, now: float, inp: EchoRequested) -> None:
        req = inp.request
        self.outbox.send(inp.source, EchoReply(
            transaction_id=req.transaction_id, sequence=req.sequence, timestamp=req.timestamp,
            gateway_id=self.gateway_id, payload=req.payload, trace=req.trace))


class TraceState(Enum):
    IDLE = "IDLE"
    FORWARDED = "FORWARDED"
    DONE = "DONE"


class TraceInput(Enum):
    REQUEST_LOCAL = "TRACE_REQUEST [target local]"
    REQUEST_FORWARD = "TRACE_REQUEST [route]"
    REQUEST_REJECT = "TRACE_REQUEST [refused]"
    REPLY = "TRACE_REPLY"
    ERROR = "ERROR"
    TIMEOUT = "transaction timer"


class TraceAction(Enum):
    ANSWER = "answer TRACE_REPLY SUCCESS with every HOP, own last"
    FORWARD = ("append own HOP; send to the next hop with a new transaction id, "
               "HOP_LIMIT - 1 and own id in PATH_VECTOR; start transaction timer")
    REJECT = "answer TRACE_REPLY with the routing error and the HOPs, own last"
    RELAY_REPLY = "pass TRACE_REPLY upstream with the incoming transaction id"
    RELAY_ERROR = "answer TRACE_REPLY upstream with ERROR's STATUS"
    TIMED_OUT = "answer TRACE_REPLY TRANSACTION_TIMEOUT"


_S, _I, _A = TraceState, TraceInput, TraceAction


class TraceRelay(Relay):
    """One TRACE_REQUEST at a gateway (Section 6.8)."""

    NAME = "trace"
    TITLE = "Trace, one transaction at a gateway"
    State, Input, Action = TraceState, TraceInput, TraceAction
    INITIAL = TraceState.IDLE
    TIMERS = ("ROUTE_TIMEOUT",)
    REQUEST = TraceRequest
    REPLY = MessageType.TRACE_REPLY
    MESSAGE_INPUTS = {
        MessageType.TRACE_REQUEST: (_I.REQUEST_LOCAL, _I.REQUEST_FORWARD, _I.REQUEST_REJECT),
        MessageType.TRACE_REPLY: (_I.REPLY,),
        MessageType.ERROR: (_I.ERROR,),
    }
    TABLE = {
        (_S.IDLE, _I.REQUEST_LOCAL): (_A.ANSWER, _S.DONE),
        (_S.IDLE, _I.REQUEST_FORWARD): (_A.FORWARD, _S.FORWARDED),
        (_S.IDLE, _I.REQUEST_REJECT): (_A.REJECT, _S.DONE),
        (_S.FORWARDED, _I.REPLY): (_A.RELAY_REPLY, _S.DONE),
        (_S.FORWARDED, _I.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.FORWARDED, _I.TIMEOUT): (_A.TIMED_OUT, _S.DONE),
    }

    def __init__(self, outbox: Outbox, ctx: RelayContext, upstream: Handle,
                 request: TraceRequest) -> None:
        super().__init__(outbox, ctx, upstream, request)
        self.hops: tuple[HopRecord, ...] = request.hops

    def classify(self, now: float) -> Enum:
        req = expect(self.request, TraceRequest)
        core = self.ctx.core
        self.hops = (*req.hops, HopRecord(core.gateway_id, core.domain, timestamp_ms(now),
                                          self.ctx.name))
        # The gateway holding the target answers itself: no agent handle is needed.
        self.decision = core.route(req.target_agent, req.hop_limit, req.path)
        if isinstance(self.decision, DeliverLocal):
            return _I.REQUEST_LOCAL
        self.decision = self.decide(req.target_agent, now)
        if isinstance(self.decision, Forward):
            return _I.REQUEST_FORWARD
        return _I.REQUEST_REJECT

    def _answer(self, now: float, msg: Message | None) -> None:
        req = expect(self.request, TraceRequest)
        self.answer(TraceReply(status=ErrorCode.SUCCESS, target_agent=req.target_agent,
                               hops=self.hops, trace=req.trace))

    def _forward(self, now: float, msg: Message | None) -> None:
        d = self.decision
        assert isinstance(d, Forward)
        dest = self.ctx.peer_handle(d.next_hop)
        assert dest is not None
        req = expect(self.request, TraceRequest)
        self.send_on(dest, replace(req, hop_limit=d.hop_limit, path=d.path, hops=self.hops),
                     now)

    def _timed_out(self, now: float, msg: Message | None) -> None:
        self.answer(self.failure(ErrorCode.TRANSACTION_TIMEOUT, "no answer from the next hop"))

    def failure(self, status: ErrorCode, diagnostic: str | None) -> TraceReply:
        req = expect(self.request, TraceRequest)
        return TraceReply(status=status, target_agent=req.target_agent, hops=self.hops,
                          diagnostic=diagnostic, trace=req.trace)
