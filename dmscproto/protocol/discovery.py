"""Discovery, responder side (draft-dmsc-protocol-00, Section 5.2).

The requester side is a :class:`~.requester.Requester` transaction.  The responder
answers every DISCOVER from the records the gateway holds, in IAIP's order (filter,
rank, policy, limit: :meth:`GatewayCore.discover`), with fewer RESULTs when all would
not fit into one PDU of the requester's transport (MAX_PDU_SIZE, or the datagram limit
of Section 9.2: 1163 octets over DTLS, 1200 over lab UDP).  An evaluation that exceeds
the gateway's budget (:class:`~dmscproto.gateway.limits.Budget`) is refused with
QUERY_TOO_LARGE (Section 10.7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from ..codec.messages import Discover, DiscoverReply, Message
from ..codec.pdu import encode
from ..codec.registry import MAX_PDU_SIZE, TLV_HEADER_SIZE, ErrorCode, MessageType
from ..codec.values import CapabilityRecord
from ..codec.wire import Result
from .machine import Handle, Outbox, ProtocolError, Refusal
from .ports import DiscoveryTable
from .tracecontext import Hop, HopTracer, W3CHops
from .typed import StepInput, TypedMachine

#: The caller's policy for a requester: which records it may see (None: all).
PolicyFor = Callable[[Handle], Callable[[CapabilityRecord], bool] | None]

#: The largest PDU the transport of an association carries (Sections 4.1, 9.2).
PduLimit = Callable[[Handle], int]


class ResponderState(Enum):
    READY = "READY"


class ResponderInput(Enum):
    DISCOVER = "DISCOVER [evaluated within DISCOVER_BUDGET]"
    DISCOVER_TOO_LARGE = "DISCOVER [its evaluation exceeds DISCOVER_BUDGET]"


class ResponderAction(Enum):
    ANSWER = ("answer DISCOVER_REPLY with the records matched, ranked, passed through the "
              "policy and limited (as many RESULTs as fit the requester's PDU)")
    REFUSE = "answer DISCOVER_REPLY QUERY_TOO_LARGE"


_S, _I, _A = ResponderState, ResponderInput, ResponderAction


# --- inputs: the evaluation of one DISCOVER, done by the classification ----------------------
@dataclass(frozen=True, slots=True)
class Evaluated(StepInput):
    """A DISCOVER from ``source`` and the records it found; ``hop`` is this gateway's
    hop of its trace (Section 7.5), begun before the evaluation."""

    KIND = _I.DISCOVER
    source: Handle
    request: Discover
    hop: Hop
    results: list[Result]


@dataclass(frozen=True, slots=True)
class TooLarge(StepInput):
    """A DISCOVER whose evaluation exceeded the gateway's budget (Section 10.7)."""

    KIND = _I.DISCOVER_TOO_LARGE
    source: Handle
    request: Discover
    hop: Hop
    refusal: Refusal


class DiscoveryResponder(TypedMachine):
    """Answers DISCOVER at a gateway, a typed machine (:mod:`.typed`) with one state: the
    classification evaluates the query, and an evaluation over the budget is its own
    input, refused with QUERY_TOO_LARGE (Section 10.7)."""

    NAME = "discovery-responder"
    TITLE = "Discovery, responder side (gateway)"
    State, Input, Action = ResponderState, ResponderInput, ResponderAction
    INITIAL = ResponderState.READY
    MESSAGE_INPUTS = {MessageType.DISCOVER: (_I.DISCOVER, _I.DISCOVER_TOO_LARGE)}
    TABLE = {(_S.READY, _I.DISCOVER): (_A.ANSWER, _S.READY),
             (_S.READY, _I.DISCOVER_TOO_LARGE): (_A.REFUSE, _S.READY)}

    def __init__(self, outbox: Outbox, core: DiscoveryTable,
                 policy: PolicyFor = lambda _source: None,
                 pdu_limit: PduLimit = lambda _source: MAX_PDU_SIZE,
                 tracer: HopTracer | None = None,
                 budget: Callable[[], Callable[[], None]] | None = None) -> None:
        super().__init__(outbox)
        self.core = core
        self.policy = policy
        self.pdu_limit = pdu_limit
        #: Each DISCOVER answered is one hop of its trace (Section 7.5).
        self.tracer = tracer or W3CHops()
        #: Starts the ``spend`` callback of one evaluation (Section 10.7; None: none).
        self.budget = budget

    def classify(self, source: Handle, msg: Message, now: float) -> Evaluated | TooLarge:
        """The DISCOVER evaluated (matched, ranked, policy, limit: the registry's
        :meth:`~.ports.DiscoveryTable.discover`), or refused over the budget;
        ProtocolError for any other message.  Writes nothing of the machine."""
        if not isinstance(msg, Discover):
            raise self.unexpected(msg)
        hop = self.tracer.begin(msg.TYPE, msg.trace)
        try:
            found = self.core.discover(msg.query, msg.scope, msg.max_results, now,
                                       self.policy(source),
                                       (lambda: None) if self.budget is None
                                       else self.budget())
        except ProtocolError as over:  # over its CPU budget (Section 10.7)
            return TooLarge(source, msg, hop, Refusal(over.code, over.diagnostic))
        return Evaluated(source, msg, hop, found)

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        try:
            inp = self.classify(source, msg, now)
        except ProtocolError as err:
            self.refuse(source, msg, err)
            raise
        self.run(inp, now)

    def _answer(self, now: float, inp: Evaluated) -> None:
        d = inp.request
        inp.hop.end(ErrorCode.SUCCESS, source=d.source_agent)
        empty = DiscoverReply(transaction_id=d.transaction_id, status=ErrorCode.SUCCESS,
                              trace=d.trace)
        room = self.pdu_limit(inp.source) - len(encode(empty))
        self.outbox.send(inp.source, replace(empty, results=fit_results(inp.results, room)))

    def _refuse(self, now: float, inp: TooLarge) -> None:
        d, r = inp.request, inp.refusal
        inp.hop.end(r.code, r.diagnostic, source=d.source_agent)
        self.outbox.send(inp.source, DiscoverReply(
            transaction_id=d.transaction_id, status=r.code, diagnostic=r.diagnostic,
            trace=d.trace))


def fit_results(results: list[Result], room: int) -> tuple[Result, ...]:
    """The leading results whose RESULT TLVs fit into ``room`` octets (Section 5.2: a
    reply that would exceed the transport's PDU limit carries fewer RESULTs)."""
    used = 0
    for n, r in enumerate(results):
        used += TLV_HEADER_SIZE + 2 + len(r.record.encode())
        if used > room:
            return tuple(results[:n])
    return tuple(results)
