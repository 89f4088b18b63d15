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
from dataclasses import replace
from enum import Enum

from ..codec.messages import Discover, DiscoverReply, Message
from ..codec.pdu import encode
from ..codec.registry import MAX_PDU_SIZE, TLV_HEADER_SIZE, ErrorCode, MessageType
from ..codec.values import CapabilityRecord
from ..codec.wire import Result
from .machine import Handle, Machine, Outbox, ProtocolError, expect
from .ports import DiscoveryTable
from .tracecontext import HopTracer, W3CHops

#: The caller's policy for a requester: which records it may see (None: all).
PolicyFor = Callable[[Handle], Callable[[CapabilityRecord], bool] | None]

#: The largest PDU the transport of an association carries (Sections 4.1, 9.2).
PduLimit = Callable[[Handle], int]


class ResponderState(Enum):
    READY = "READY"


class ResponderInput(Enum):
    DISCOVER = "DISCOVER"


class ResponderAction(Enum):
    ANSWER = ("match, rank, apply policy and limit; answer DISCOVER_REPLY (QUERY_TOO_LARGE "
              "if that takes more than DISCOVER_BUDGET)")


class DiscoveryResponder(Machine):
    """Answers DISCOVER at a gateway; it has one state and refuses only a DISCOVER whose
    evaluation exceeds its budget (QUERY_TOO_LARGE, Section 10.7)."""

    NAME = "discovery-responder"
    TITLE = "Discovery, responder side (gateway)"
    State, Input, Action = ResponderState, ResponderInput, ResponderAction
    INITIAL = ResponderState.READY
    MESSAGE_INPUTS = {MessageType.DISCOVER: (ResponderInput.DISCOVER,)}
    TABLE = {(ResponderState.READY, ResponderInput.DISCOVER):
             (ResponderAction.ANSWER, ResponderState.READY)}

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
        self._source: Handle = None

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        try:
            if msg.TYPE is not MessageType.DISCOVER:
                raise self.unexpected(msg)
            self._source = source
            self.step(ResponderInput.DISCOVER, now, msg)
        except ProtocolError as err:
            self.refuse(source, msg, err)
            raise

    def _answer(self, now: float, msg: Message | None) -> None:
        d = expect(msg, Discover)
        hop = self.tracer.begin(d.TYPE, d.trace)
        empty = DiscoverReply(transaction_id=d.transaction_id, status=ErrorCode.SUCCESS,
                              trace=d.trace)
        try:
            found = self.core.discover(d.query, d.scope, d.max_results, now,
                                       self.policy(self._source),
                                       (lambda: None) if self.budget is None
                                       else self.budget())
        except ProtocolError as over:  # over its CPU budget (Section 10.7)
            hop.end(over.code, over.diagnostic, source=d.source_agent)
            self.outbox.send(self._source, replace(empty, status=over.code,
                                                   diagnostic=over.diagnostic))
            return
        hop.end(ErrorCode.SUCCESS, source=d.source_agent)
        room = self.pdu_limit(self._source) - len(encode(empty))
        self.outbox.send(self._source, replace(empty, results=fit_results(found, room)))


def fit_results(results: list[Result], room: int) -> tuple[Result, ...]:
    """The leading results whose RESULT TLVs fit into ``room`` octets (Section 5.2: a
    reply that would exceed the transport's PDU limit carries fewer RESULTs)."""
    used = 0
    for n, r in enumerate(results):
        used += TLV_HEADER_SIZE + 2 + len(r.record.encode())
        if used > room:
            return tuple(results[:n])
    return tuple(results)
