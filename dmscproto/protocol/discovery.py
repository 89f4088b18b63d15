"""Discovery, responder side (draft-dmsc-protocol-00, Section 5.2).

The requester side is a :class:`~.requester.Requester` transaction.  The responder
answers every DISCOVER from the records the gateway holds, in IAIP's order (filter,
rank, policy, limit: :meth:`GatewayCore.discover`), with fewer RESULTs when all would
not fit into one PDU.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from ..codec.messages import Discover, DiscoverReply, Message
from ..codec.registry import HEADER_SIZE, MAX_PDU_SIZE, TLV_HEADER_SIZE, ErrorCode, MessageType
from ..codec.values import CapabilityRecord
from ..codec.wire import Result
from ..gateway.core import GatewayCore
from .machine import Handle, Machine, Outbox, ProtocolError, expect

#: The caller's policy for a requester: which records it may see (None: all).
PolicyFor = Callable[[Handle], Callable[[CapabilityRecord], bool] | None]

#: Room left in a DISCOVER_REPLY for RESULTs: the header, STATUS and a TRACE_CONTEXT.
_RESULT_BUDGET = MAX_PDU_SIZE - HEADER_SIZE - 1024


class ResponderState(Enum):
    READY = "READY"


class ResponderInput(Enum):
    DISCOVER = "DISCOVER"


class ResponderAction(Enum):
    ANSWER = "match, rank, apply policy and limit; answer DISCOVER_REPLY"


class DiscoveryResponder(Machine):
    """Answers DISCOVER at a gateway; it has one state and never refuses."""

    NAME = "discovery-responder"
    TITLE = "Discovery, responder side (gateway)"
    State, Input, Action = ResponderState, ResponderInput, ResponderAction
    INITIAL = ResponderState.READY
    MESSAGE_INPUTS = {MessageType.DISCOVER: (ResponderInput.DISCOVER,)}
    TABLE = {(ResponderState.READY, ResponderInput.DISCOVER):
             (ResponderAction.ANSWER, ResponderState.READY)}

    def __init__(self, outbox: Outbox, core: GatewayCore,
                 policy: PolicyFor = lambda _source: None) -> None:
        super().__init__(outbox)
        self.core = core
        self.policy = policy
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
        found = self.core.discover(d.query, d.scope, d.max_results, now,
                                   self.policy(self._source))
        self.outbox.send(self._source, DiscoverReply(
            transaction_id=d.transaction_id, status=ErrorCode.SUCCESS,
            results=fit_results(found), trace=d.trace))


def fit_results(results: list[Result]) -> tuple[Result, ...]:
    """The leading results that fit into one PDU (Section 5.2)."""
    used = 0
    for n, r in enumerate(results):
        used += TLV_HEADER_SIZE + 2 + len(r.record.encode())
        if used > _RESULT_BUDGET:
            return tuple(results[:n])
    return tuple(results)
