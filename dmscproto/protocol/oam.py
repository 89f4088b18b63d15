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
from .machine import Handle, Outbox, Refusal, timestamp_ms
from .routing import Local, Onward, Refused, Relay, RelayContext, RelayInput
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


class TraceAction(Enum):
    ANSWER = "append own HOP; answer TRACE_REPLY SUCCESS with every HOP"
    FORWARD = ("append own HOP; send to the next hop with a new transaction id, "
               "HOP_LIMIT - 1 and own id in PATH_VECTOR; start transaction timer")
    REJECT = "append own HOP; answer TRACE_REPLY with the routing error and the HOPs"
    RELAY_REPLY = "pass TRACE_REPLY upstream with the incoming transaction id"
    RELAY_ERROR = "answer TRACE_REPLY upstream with ERROR's STATUS"
    TIMED_OUT = "answer TRACE_REPLY TRANSACTION_TIMEOUT"


_S, _I, _A = TraceState, RelayInput, TraceAction


class TraceRelay(Relay):
    """One TRACE_REQUEST at a gateway (Section 6.8): the gateway where the target is
    registered answers itself (no agent association is needed)."""

    NAME = "trace"
    TITLE = "Trace, one transaction at a gateway"
    State, Action = TraceState, TraceAction
    INITIAL = TraceState.IDLE
    TIMERS = ("ROUTE_TIMEOUT", "FORWARD_FRACTION")
    REPLY = MessageType.TRACE_REPLY
    MESSAGE_INPUTS = {
        MessageType.TRACE_REQUEST: (_I.REQUEST_LOCAL, _I.REQUEST_FORWARD, _I.REQUEST_REFUSED),
        MessageType.TRACE_REPLY: (_I.REPLY,),
        MessageType.ERROR: (_I.ERROR,),
    }
    TABLE = {
        (_S.IDLE, _I.REQUEST_LOCAL): (_A.ANSWER, _S.DONE),
        (_S.IDLE, _I.REQUEST_FORWARD): (_A.FORWARD, _S.FORWARDED),
        (_S.IDLE, _I.REQUEST_REFUSED): (_A.REJECT, _S.DONE),
        (_S.FORWARDED, _I.REPLY): (_A.RELAY_REPLY, _S.DONE),
        (_S.FORWARDED, _I.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.FORWARDED, _I.TIMEOUT): (_A.TIMED_OUT, _S.DONE),
    }

    def __init__(self, outbox: Outbox, ctx: RelayContext, upstream: Handle,
                 request: TraceRequest) -> None:
        super().__init__(outbox, ctx, upstream, request)
        #: The HOP records so far, this gateway's last once the request is classified.
        self.hops: tuple[HopRecord, ...] = request.hops

    def _with_own_hop(self, now: float) -> tuple[HopRecord, ...]:
        req, ctx = self.request, self.ctx
        assert isinstance(req, TraceRequest)
        return (*req.hops, HopRecord(ctx.gateway_id, ctx.domain, timestamp_ms(now), ctx.name))

    def classify(self, now: float) -> StepInput:
        req = self.request
        assert isinstance(req, TraceRequest)
        hop = self.ctx.port.next_hop(req.target_agent, req.hop_limit, req.path, now)
        if isinstance(hop, Refusal):
            return Refused(hop)
        if hop.local:
            return Local(None, req)
        assert hop.dest is not None
        return Onward(hop.dest, replace(req, hop_limit=hop.hop_limit, path=hop.path,
                                        hops=self._with_own_hop(now)))

    def _answer(self, now: float, inp: Local) -> None:
        self.hops = self._with_own_hop(now)
        self.answer(TraceReply(status=ErrorCode.SUCCESS, target_agent=inp.request.target_agent,
                               hops=self.hops, trace=inp.request.trace))

    def _forward(self, now: float, inp: Onward) -> None:
        assert isinstance(inp.request, TraceRequest)
        self.hops = inp.request.hops
        super()._forward(now, inp)

    def _reject(self, now: float, inp: Refused) -> None:
        self.hops = self._with_own_hop(now)
        super()._reject(now, inp)

    def failure(self, status: ErrorCode, diagnostic: str | None) -> TraceReply:
        req = self.request
        assert isinstance(req, TraceRequest)
        return TraceReply(status=status, target_agent=req.target_agent, hops=self.hops,
                          diagnostic=diagnostic, trace=req.trace)
