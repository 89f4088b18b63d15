"""Routing at a gateway, one machine per transaction (draft-dmsc-protocol-00, Section 5.3).

About 500 lines, kept in one module: the generic :class:`Relay`, RouteRelay's table and
the inputs its classification builds are read together (h2's ``stream.py`` is the model).

A ROUTE_REQUEST is classified in the draft's order (a request names TARGET_AGENT or
QUERY; a QUERY is resolved to the best record; then the port's decision: loop, local
target, route, hop limit) into one input carrying what its action needs: delivered to
the local agent, forwarded to the next hop, or refused with the routing error.  A
request to be forwarded first passes the gateway's ``outgoing`` hook
(:class:`RelayContext`), which may rewrite it (the origin gateway replaces an agent's
ACCESS_TOKEN with an origin assertion, Section 10.6) or refuse it (the import policy,
once a QUERY is resolved to a remote target): a refusal is its own input.  A delivered
or forwarded request gets a new transaction id towards the next hop; the machine keeps
the incoming association and transaction id (the return path) until the answer comes
back or the transaction timer (ROUTE_TIMEOUT, or the request's TIMEOUT if smaller)
expires.  What a relay sends on is made with :func:`~dmscproto.codec.pdu.rewrite`:
the received octets are kept and only the TLVs it changes are encoded again (the relay
fast path; the checks of the request are those of the full decode, unchanged).

A ROUTE_REQUEST's origin assertion names the origin gateway's certificate by thumbprint
(Section 6.10): the hook also gives the certificate (DER), which the relay keeps.  When
the next hop answers CERTIFICATE_UNKNOWN, the relay sends it the certificate in
CERTIFICATE (state CERTIFYING) and, once CERTIFICATE_ACK confirms it, the request again
with a new transaction id; once per transaction, and within the transaction time already
running, so that no call is lost to a cache that forgot.

The machines are :class:`~.typed.TypedMachine`\\ s written against the
:class:`~.ports.RoutingPort`: the table and the actions are the whole behaviour, the
timer is started and stopped only by actions.  :class:`Relay` is what ROUTE_REQUEST and
TRACE_REQUEST relaying (:class:`~.oam.TraceRelay`) share: the inputs, the return path,
the transaction timer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from ..codec.messages import (
    Certificate,
    CertificateAck,
    Error,
    Message,
    RouteReply,
    RouteRequest,
    TraceReply,
    TraceRequest,
)
from ..codec.pdu import rewrite
from ..codec.registry import ErrorCode, MessageType, timer
from ..fsm import slot_stores
from .certificates import thumbprint
from .events import RelayEvent, TransactionEnded
from .machine import Handle, Outbox, Refusal, TransactionIds
from .ports import NextHop, RoutingPort
from .tracecontext import Hop, HopTracer, W3CHops
from .typed import StepInput, TypedMachine

#: Read for every answer relayed, bound once: an Enum member read is ~60 ns on 3.11 (timeit).
_CERTIFICATE_UNKNOWN = ErrorCode.CERTIFICATE_UNKNOWN
#: The replies a relay passes on, a tuple made once (``RouteReply | TraceReply`` makes a
#: union at every test: 1.8k against 1.2k instructions, callgrind).
_REPLIES = (RouteReply, TraceReply)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A ROUTE_REQUEST to forward and the certificate (DER) its origin assertion names
    by thumbprint, sent to a next hop that answers CERTIFICATE_UNKNOWN (Section 6.10)."""

    request: RouteRequest
    certificate: bytes


#: The ``outgoing`` hook: given the association a ROUTE_REQUEST came from, the request as
#: it will be forwarded (resolved target, the next hop's HOP_LIMIT, PATH_VECTOR and
#: TIMEOUT), the incoming transaction id and ``now``, the request to send (with the
#: certificate its origin assertion names, if it has one), or a refusal.
Outgoing = Callable[[Handle, RouteRequest, int, float], RouteRequest | Outbound | Refusal]


@dataclass
class RelayContext:
    """What relayed transactions of one gateway share."""

    port: RoutingPort
    txids: TransactionIds
    #: The gateway's id and domain and its name in HOP records (Section 6.8.2).
    gateway_id: bytes
    domain: str
    name: str | None = None
    route_timeout: float = timer("ROUTE_TIMEOUT")
    #: A forwarded request's TIMEOUT is this fraction of the forwarding gateway's own
    #: transaction time, so the next hop's error answer arrives before that time is up.
    forward_fraction: float = timer("FORWARD_FRACTION")
    #: Prepares or refuses each ROUTE_REQUEST forwarded to a peer (module docstring).
    outgoing: Outgoing | None = None
    #: Each relayed transaction is one hop of its trace (Section 7.5).
    tracer: HopTracer = field(default_factory=W3CHops)
    #: Whether each transaction's end is reported (:class:`TransactionEnded`): only
    #: when something reads it (a gateway runtime's observer), not made for nothing on
    #: every relayed call.
    report_ends: bool = True


class RelayInput(Enum):
    """The inputs of both relays (ROUTE_REQUEST here, TRACE_REQUEST in :mod:`.oam`)."""

    REQUEST_LOCAL = "request [target registered here]"
    REQUEST_FORWARD = "request [route to a peer; ROUTE_REQUEST: the outgoing hook accepts]"
    REQUEST_REFUSED = "request [refused: routing error, or the outgoing hook's refusal]"
    REPLY = "ROUTE_REPLY / TRACE_REPLY"
    ERROR = "ERROR"
    TIMEOUT = "transaction timer"


_I = RelayInput


@dataclass(frozen=True, slots=True)
class Local(StepInput):
    """The target is registered here: ``dest`` is its agent's association (None when
    not known), ``request`` what it is given."""

    KIND: ClassVar[Enum] = _I.REQUEST_LOCAL
    dest: Handle | None
    request: RouteRequest | TraceRequest


@dataclass(frozen=True, slots=True)
class Onward(StepInput):
    """The request as it goes on to the next hop ``dest`` (with the certificate its
    origin assertion names, if any)."""

    KIND: ClassVar[Enum] = _I.REQUEST_FORWARD
    dest: Handle
    request: RouteRequest | TraceRequest
    certificate: bytes | None = None


@dataclass(frozen=True, slots=True)
class Refused(StepInput):
    KIND: ClassVar[Enum] = _I.REQUEST_REFUSED
    refusal: Refusal


@slot_stores  # one a relayed trace (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class Answered(StepInput):
    KIND: ClassVar[Enum] = _I.REPLY
    reply: RouteReply | TraceReply


@dataclass(frozen=True, slots=True)
class Failed(StepInput):
    KIND: ClassVar[Enum] = _I.ERROR
    error: Error


@dataclass(frozen=True, slots=True)
class Expired(StepInput):
    KIND: ClassVar[Enum] = _I.TIMEOUT


class Relay(TypedMachine):
    """The shared part of ROUTE_REQUEST and TRACE_REQUEST relaying (module doc).
    Subclasses give the table, :meth:`classify` and the answer messages."""

    Input: ClassVar[type[Enum]] = RelayInput
    EVENTS = RelayEvent
    REPLY: ClassVar[MessageType]
    #: The classes of the inputs the base makes, of the subclass's ``Input``.
    ANSWERED: ClassVar[type[Answered]] = Answered
    FAILED: ClassVar[type[Failed]] = Failed
    EXPIRED: ClassVar[type[Expired]] = Expired

    def __init__(self, outbox: Outbox, ctx: RelayContext, upstream: Handle,
                 request: RouteRequest | TraceRequest) -> None:
        super().__init__(outbox)
        self.ctx = ctx
        self.upstream = upstream
        self.request = request
        #: Where the request went and with which transaction id, once sent on.
        self.downstream: tuple[Handle, int] | None = None
        self.deadline: float | None = None
        #: The target agent as resolved (a ROUTE_REQUEST's QUERY), once sent on.
        self.target: bytes | None = request.target_agent
        #: This gateway's hop of the request's trace (Section 7.5).
        self.hop: Hop = ctx.tracer.begin(request.TYPE, request.trace)

    #: Whether the transaction is over: :attr:`finished` itself (asked thrice a relayed
    #: call, so not a property calling it).
    done = TypedMachine.finished

    def start(self, now: float) -> None:
        """Classify the request and run its transition."""
        self.run(self.classify(now), now)

    def classify(self, now: float) -> StepInput:
        """The input the request is (reads the port, writes nothing)."""
        raise NotImplementedError

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        """The answer from downstream (matched by the caller on association and
        transaction id); anything else is refused (ProtocolError)."""
        inp = self.answer_input(msg)
        if inp is None or not self.rows_for(inp.KIND):
            err = self.unexpected(msg)
            self.refuse(source, msg, err)
            raise err
        self.run(inp, now)

    def answer_input(self, msg: Message) -> StepInput | None:
        """The input an answer from downstream is (None: none this machine takes)."""
        if isinstance(msg, _REPLIES) and msg.TYPE is self.REPLY:
            return self.ANSWERED(msg)
        if isinstance(msg, Error):
            return self.FAILED(msg)
        return None

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.run(self.EXPIRED(), now)

    # --- helpers (called by classify and by actions) ------------------------------------------
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
        """Send the request on with a new transaction id; start the transaction timer."""
        txid = self.ctx.txids()
        self.downstream = (dest, txid)
        self.target = msg.target_agent
        self.deadline = now + self.timeout()
        self.outbox.send(dest, rewrite(msg, transaction_id=txid, trace=self.hop.context))

    def answer(self, reply: RouteReply | TraceReply, relayed: bool = False) -> None:
        """Send ``reply`` upstream with the incoming transaction id and TRACE_CONTEXT
        (Section 7.5); stop the timer; end the hop (``relayed`` when the answer came
        from downstream)."""
        self.deadline = None
        request = self.request
        reply = rewrite(reply, transaction_id=request.transaction_id, trace=request.trace)
        # its arguments by position (a keyword call is slower on 3.11)
        self.hop.end(reply.status, reply.diagnostic,
                     request.source_agent if isinstance(request, RouteRequest) else None,
                     self.target, relayed)
        self.outbox.send(self.upstream, reply)
        if self.ctx.report_ends:
            self.outbox.emit(TransactionEnded(request.TYPE, self.upstream,
                                              request.transaction_id, reply.status))

    def failure(self, status: ErrorCode, diagnostic: str | None) -> RouteReply | TraceReply:
        raise NotImplementedError

    # --- shared actions -------------------------------------------------------------------------
    def _forward(self, now: float, inp: Onward) -> None:
        self.send_on(inp.dest, inp.request, now)

    def _relay_reply(self, now: float, inp: Answered) -> None:
        self.answer(inp.reply, relayed=True)

    def _relay_error(self, now: float, inp: Failed) -> None:
        self.answer(self.failure(inp.error.status, inp.error.diagnostic), relayed=True)

    def _reject(self, now: float, inp: Refused) -> None:
        self.answer(self.failure(inp.refusal.code, inp.refusal.diagnostic or None))

    def _timed_out(self, now: float, inp: Expired) -> None:
        self.answer(self.failure(ErrorCode.TRANSACTION_TIMEOUT, "no answer from the next hop"))


class RouteState(Enum):
    IDLE = "IDLE"
    DELIVERED = "DELIVERED"
    FORWARDED = "FORWARDED"
    CERTIFYING = "CERTIFYING"
    DONE = "DONE"


class RouteInput(Enum):
    """The relay's inputs (:class:`RelayInput`'s, and the certificate exchange's)."""

    REQUEST_LOCAL = _I.REQUEST_LOCAL.value
    REQUEST_FORWARD = _I.REQUEST_FORWARD.value
    REQUEST_REFUSED = _I.REQUEST_REFUSED.value
    REPLY = "ROUTE_REPLY"
    CERTIFICATE_UNKNOWN = ("ROUTE_REPLY CERTIFICATE_UNKNOWN [the certificate not sent yet "
                           "in this transaction]")
    CERTIFIED = "CERTIFICATE_ACK SUCCESS [THUMBPRINT is the certificate's]"
    CERTIFICATE_REFUSED = "CERTIFICATE_ACK [another STATUS or THUMBPRINT]"
    ERROR = _I.ERROR.value
    TIMEOUT = _I.TIMEOUT.value


class RouteAction(Enum):
    DELIVER = "send to the agent with a new transaction id; start transaction timer"
    FORWARD = ("send to the next hop with a new transaction id, HOP_LIMIT - 1, own id "
               "appended to PATH_VECTOR, TIMEOUT 9/10 of the transaction time and what the "
               "outgoing hook sets (ACCESS_TOKEN: origin assertion; keep its certificate, "
               "offered on the next hop's session first unless it is ours); start "
               "transaction timer")
    REJECT = ("answer ROUTE_REPLY with the refusal (NO_ROUTE, LOOP_DETECTED, "
              "TARGET_UNREACHABLE, ..., or the outgoing hook's code and reason)")
    RELAY_REPLY = "pass ROUTE_REPLY upstream with the incoming transaction id; stop the timer"
    RELAY_ERROR = "answer ROUTE_REPLY upstream with ERROR's STATUS; stop the timer"
    CERTIFICATE_REFUSED = ("answer ROUTE_REPLY upstream with CERTIFICATE_ACK's STATUS "
                           "(INVALID_TLV_VALUE for another THUMBPRINT); stop the timer")
    SEND_CERTIFICATE = ("send the kept certificate to the next hop in CERTIFICATE with a new "
                        "transaction id")
    RETRY = ("send the request to the next hop again with a new transaction id, TIMEOUT 9/10 "
             "of the time left")
    UNREACHABLE = "answer ROUTE_REPLY TARGET_UNREACHABLE"
    TIMED_OUT = "answer ROUTE_REPLY TRANSACTION_TIMEOUT"


_S, _R, _A = RouteState, RouteInput, RouteAction


# --- the relay's inputs: those of :class:`Relay`, of kinds of :class:`RouteInput` -----------
@slot_stores  # one a call delivered here (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class RouteLocal(Local):
    KIND = _R.REQUEST_LOCAL


@dataclass(frozen=True, slots=True)
class RouteOnward(Onward):
    KIND = _R.REQUEST_FORWARD


@dataclass(frozen=True, slots=True)
class RouteRefused(Refused):
    KIND = _R.REQUEST_REFUSED


@slot_stores  # one a routed call (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class RouteAnswered(Answered):
    KIND = _R.REPLY


@dataclass(frozen=True, slots=True)
class RouteFailed(Failed):
    KIND = _R.ERROR


@dataclass(frozen=True, slots=True)
class RouteExpired(Expired):
    KIND = _R.TIMEOUT


@dataclass(frozen=True, slots=True)
class CertificateUnknown(StepInput):
    KIND = _R.CERTIFICATE_UNKNOWN
    reply: RouteReply


@dataclass(frozen=True, slots=True)
class Certified(StepInput):
    KIND = _R.CERTIFIED
    ack: CertificateAck


@dataclass(frozen=True, slots=True)
class CertificateRefused(StepInput):
    KIND = _R.CERTIFICATE_REFUSED
    ack: CertificateAck


class RouteRelay(Relay):
    """One ROUTE_REQUEST at a gateway (Section 5.3; the certificate exchange of Section
    6.10, module docstring)."""

    NAME = "routing"
    TITLE = "Routing, one transaction at a gateway"
    State, Input, Action = RouteState, RouteInput, RouteAction
    INITIAL = RouteState.IDLE
    TIMERS = ("ROUTE_TIMEOUT", "FORWARD_FRACTION")
    REPLY = MessageType.ROUTE_REPLY
    ANSWERED, FAILED, EXPIRED = RouteAnswered, RouteFailed, RouteExpired
    MESSAGE_INPUTS = {
        MessageType.ROUTE_REQUEST: (_R.REQUEST_LOCAL, _R.REQUEST_FORWARD, _R.REQUEST_REFUSED),
        MessageType.ROUTE_REPLY: (_R.REPLY, _R.CERTIFICATE_UNKNOWN),
        MessageType.CERTIFICATE_ACK: (_R.CERTIFIED, _R.CERTIFICATE_REFUSED),
        MessageType.ERROR: (_R.ERROR,),
    }
    TABLE = {
        (_S.IDLE, _R.REQUEST_LOCAL): (_A.DELIVER, _S.DELIVERED),
        (_S.IDLE, _R.REQUEST_FORWARD): (_A.FORWARD, _S.FORWARDED),
        (_S.IDLE, _R.REQUEST_REFUSED): (_A.REJECT, _S.DONE),
        (_S.DELIVERED, _R.REPLY): (_A.RELAY_REPLY, _S.DONE),
        (_S.DELIVERED, _R.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.DELIVERED, _R.TIMEOUT): (_A.UNREACHABLE, _S.DONE),
        (_S.FORWARDED, _R.REPLY): (_A.RELAY_REPLY, _S.DONE),
        (_S.FORWARDED, _R.CERTIFICATE_UNKNOWN): (_A.SEND_CERTIFICATE, _S.CERTIFYING),
        (_S.FORWARDED, _R.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.FORWARDED, _R.TIMEOUT): (_A.TIMED_OUT, _S.DONE),
        (_S.CERTIFYING, _R.CERTIFIED): (_A.RETRY, _S.FORWARDED),
        (_S.CERTIFYING, _R.CERTIFICATE_REFUSED): (_A.CERTIFICATE_REFUSED, _S.DONE),
        (_S.CERTIFYING, _R.ERROR): (_A.RELAY_ERROR, _S.DONE),
        (_S.CERTIFYING, _R.TIMEOUT): (_A.TIMED_OUT, _S.DONE),
    }

    #: The request as forwarded and the certificate its origin assertion names (class
    #: defaults until :meth:`_forward`: no ``__init__`` of its own, one per routed call).
    forwarded: RouteRequest | None = None
    certificate: bytes | None = None
    #: Whether the certificate was sent in this transaction (it is, at most once).
    certified = False

    def classify(self, now: float) -> StepInput:
        req = self.request
        assert isinstance(req, RouteRequest)
        if req.target_agent is None and req.query is None:
            return RouteRefused(Refusal(ErrorCode.MISSING_TLV, ""))
        if req.target_agent is not None and req.query is not None:
            return RouteRefused(Refusal(ErrorCode.INVALID_TLV_VALUE, ""))
        port = self.ctx.port
        target = req.target_agent
        if target is None:
            assert req.query is not None
            resolved = port.resolve(req.query, now, self.upstream)
            if resolved is None or isinstance(resolved, Refusal):
                return RouteRefused(resolved or Refusal(ErrorCode.NO_ROUTE, ""))
            target = resolved
        hop = port.next_hop(target, req.hop_limit, req.path, now)
        if isinstance(hop, Refusal):
            return RouteRefused(hop)
        # a QUERY is resolved once, at the first gateway: the request names its target
        named = req if req.query is None else rewrite(req, target_agent=target, query=None)
        if hop.local:
            return (RouteRefused(Refusal(ErrorCode.TARGET_UNREACHABLE, "")) if hop.dest is None
                    else RouteLocal(hop.dest, named))
        return self._outgoing(named, hop, now)

    def _outgoing(self, named: RouteRequest, hop: NextHop, now: float) -> StepInput:
        """The request for the next hop, through the ``outgoing`` hook."""
        assert hop.dest is not None
        budget = int(self.timeout() * self.ctx.forward_fraction * 1000)
        fwd = rewrite(named, hop_limit=hop.hop_limit, path=hop.path, timeout_ms=budget)
        out = fwd if self.ctx.outgoing is None else \
            self.ctx.outgoing(self.upstream, fwd, self.request.transaction_id, now)
        if isinstance(out, Refusal):
            return RouteRefused(out)
        if isinstance(out, Outbound):
            return RouteOnward(hop.dest, out.request, out.certificate)
        return RouteOnward(hop.dest, out)

    def answer_input(self, msg: Message) -> StepInput | None:
        if isinstance(msg, RouteReply) and msg.status is _CERTIFICATE_UNKNOWN \
                and self.certificate is not None and not self.certified:
            return CertificateUnknown(msg)
        if isinstance(msg, CertificateAck):
            ok = msg.status is ErrorCode.SUCCESS and self.certificate is not None \
                and msg.thumbprint == thumbprint(self.certificate)
            return Certified(msg) if ok else CertificateRefused(msg)
        return Relay.answer_input(self, msg)  # no super object made (one a routed call)

    def _forward(self, now: float, inp: Onward) -> None:
        assert isinstance(inp.request, RouteRequest)
        self.forwarded, self.certificate = inp.request, inp.certificate
        if inp.certificate is not None:
            self.ctx.port.offer_certificate(inp.dest, inp.certificate, now)
        super()._forward(now, inp)

    def _send_certificate(self, now: float, inp: CertificateUnknown) -> None:
        assert self.downstream is not None and self.certificate is not None
        dest, txid = self.downstream[0], self.ctx.txids()
        self.certified = True
        self.downstream = (dest, txid)
        self.outbox.send(dest, Certificate(transaction_id=txid, certificate=self.certificate))

    def _retry(self, now: float, inp: Certified) -> None:
        assert self.downstream is not None and self.forwarded is not None
        assert self.deadline is not None
        dest, txid = self.downstream[0], self.ctx.txids()
        self.downstream = (dest, txid)
        budget = int(max(0.0, self.deadline - now) * self.ctx.forward_fraction * 1000)
        self.outbox.send(dest, rewrite(self.forwarded, transaction_id=txid,
                                       timeout_ms=budget, trace=self.hop.context))

    def _certificate_refused(self, now: float, inp: CertificateRefused) -> None:
        ack = inp.ack
        status = ErrorCode.INVALID_TLV_VALUE if ack.status is ErrorCode.SUCCESS \
            else ack.status
        self.answer(self.failure(status, ack.diagnostic or "THUMBPRINT is not the "
                                 "certificate's"), relayed=True)

    def _deliver(self, now: float, inp: Local) -> None:
        assert inp.dest is not None
        self.send_on(inp.dest, inp.request, now)

    def _unreachable(self, now: float, inp: Expired) -> None:
        self.answer(self.failure(ErrorCode.TARGET_UNREACHABLE, "no answer from the agent"))

    def failure(self, status: ErrorCode, diagnostic: str | None) -> RouteReply:
        req = self.request
        assert isinstance(req, RouteRequest)
        return RouteReply(status=status, path=req.path, diagnostic=diagnostic, trace=req.trace)
