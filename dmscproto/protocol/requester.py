"""The requester side of one transaction (draft-dmsc-protocol-00, Sections 3.3, 5.2, 5.3,
6.8): send a request, wait REQUEST_TIMEOUT for its answer message or ERROR.  A typed
machine (:mod:`.typed`): its inputs carry the answer or the ERROR.

Agents use it for DISCOVER, ROUTE_REQUEST, ECHO_REQUEST and TRACE_REQUEST; the answer is
matched by transaction id and by being the request's answer type (Section 3.3).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import Enum

from ..codec.messages import Error, Message
from ..codec.registry import ANSWER_TO, ErrorCode, MessageType, timer
from ..fsm import slot_stores
from .events import RequestCompleted, RequestEvent, RequestFailed
from .machine import Handle, Outbox, ProtocolError
from .typed import StepInput, TypedMachine


class RequesterState(Enum):
    IDLE = "IDLE"
    WAITING = "WAITING"
    DONE = "DONE"


class RequesterInput(Enum):
    SEND = "request()"
    ANSWER = "answer message"
    ERROR = "ERROR"
    TIMEOUT = "request timer"
    CANCEL = "cancel()"


class RequesterAction(Enum):
    SEND = "send the request, start request timer"
    COMPLETE = "report RequestCompleted with the round-trip time"
    FAIL = "report RequestFailed (ERROR's STATUS, or TRANSACTION_TIMEOUT)"
    ABANDON = "stop request timer; report nothing (the requester gave up)"


_S, _I, _A = RequesterState, RequesterInput, RequesterAction
#: module constants for the per-request reads: an enum member read through its class
#: costs ~120 ns on Python 3.11
_WAITING, _DONE = _S.WAITING, _S.DONE


# --- inputs (typed: each carries what its action needs) --------------------------------------
@dataclass(frozen=True, slots=True)
class Send(StepInput):
    KIND = _I.SEND


@slot_stores  # one an answer (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class Answered(StepInput):
    KIND = _I.ANSWER
    answer: Message


@dataclass(frozen=True, slots=True)
class Refused(StepInput):
    KIND = _I.ERROR
    error: Error


@dataclass(frozen=True, slots=True)
class Expired(StepInput):
    KIND = _I.TIMEOUT


@dataclass(frozen=True, slots=True)
class Cancelled(StepInput):
    KIND = _I.CANCEL


#: The inputs that carry nothing (one each, not one per request).
_SEND, _EXPIRED, _CANCELLED = Send(), Expired(), Cancelled()


class Requester(TypedMachine):
    """One outstanding request to ``dest``."""

    NAME = "requester"
    TITLE = "Requester transaction (DISCOVER, ROUTE_REQUEST, ECHO_REQUEST, TRACE_REQUEST)"
    EVENTS = RequestEvent
    State, Input, Action = RequesterState, RequesterInput, RequesterAction
    INITIAL = RequesterState.IDLE
    TIMERS = ("REQUEST_TIMEOUT", "ROUTE_TIMEOUT")
    #: The answers to the requests it is used for; a transaction takes only its own.
    MESSAGE_INPUTS = {
        **{t: (_I.ANSWER,) for t in (MessageType.DISCOVER_REPLY, MessageType.ROUTE_REPLY,
                                     MessageType.ECHO_REPLY, MessageType.TRACE_REPLY)},
        MessageType.ERROR: (_I.ERROR,),
    }
    TABLE = {
        (_S.IDLE, _I.SEND): (_A.SEND, _S.WAITING),
        (_S.WAITING, _I.ANSWER): (_A.COMPLETE, _S.DONE),
        (_S.WAITING, _I.ERROR): (_A.FAIL, _S.DONE),
        (_S.WAITING, _I.TIMEOUT): (_A.FAIL, _S.DONE),
        (_S.WAITING, _I.CANCEL): (_A.ABANDON, _S.DONE),
    }

    def __init__(self, outbox: Outbox, dest: Handle, request: Message,
                 timeout: float = timer("REQUEST_TIMEOUT")) -> None:
        if request.TYPE not in ANSWER_TO:
            raise ValueError(f"{request.TYPE.name} is not a request")
        super().__init__(outbox)
        self.dest = dest
        self.request = request
        #: The request's transaction id and the type of its answer (read with every
        #: answer and event: attributes, not properties).
        self.transaction_id: int = request.transaction_id
        self.answer_type = ANSWER_TO[request.TYPE]
        self.timeout = timeout
        self.sent_at = 0.0
        self.deadline: float | None = None

    def send(self, now: float) -> None:
        self.run(_SEND, now)

    def classify(self, msg: Message) -> Answered | Refused:
        """The input a received message is (its answer type, or ERROR); ProtocolError
        for anything else, or when the state has no row for it."""
        if msg.transaction_id != self.transaction_id:
            raise self.unexpected(msg, "another transaction id")
        inp: Answered | Refused
        if msg.TYPE is self.answer_type:
            inp = Answered(msg)
        elif isinstance(msg, Error):
            inp = Refused(msg)
        else:
            raise self.unexpected(msg, f"not an answer to {self.request.TYPE.name}")
        if not self.rows_for(inp.KIND):
            raise self.unexpected(msg)
        return inp

    def receive(self, msg: Message, now: float) -> None:
        if msg.TYPE is self.answer_type and self.state is _WAITING \
                and msg.transaction_id == self.transaction_id:
            # its answer, in the one state with a row for it: not classified (once a
            # request, every routed call)
            self.run(Answered(msg), now)
            return
        try:
            inp = self.classify(msg)
        except ProtocolError as err:
            self.refuse(self.dest, msg, err)
            raise
        self.run(inp, now)

    def cancel(self, now: float) -> None:
        """The requester no longer wants the answer (a local deadline, a cancelled
        task): a late answer is then refused as matching no request."""
        self.run(_CANCELLED, now)

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.run(_EXPIRED, now)

    # --- actions: the only places the request timer starts and stops ----------------------
    def _send(self, now: float, inp: Send) -> None:
        self.sent_at, self.deadline = now, now + self.timeout
        self.outbox.send(self.dest, self.request)

    def _complete(self, now: float, inp: Answered) -> None:
        self.deadline = None
        self.outbox.emit(RequestCompleted(self.transaction_id, self.request, inp.answer,
                                          now - self.sent_at))

    def _abandon(self, now: float, inp: Cancelled) -> None:
        self.deadline = None

    def _fail(self, now: float, inp: Refused | Expired) -> None:
        self.deadline = None
        if isinstance(inp, Expired):
            self.outbox.emit(RequestFailed(self.transaction_id, self.request,
                                           ErrorCode.TRANSACTION_TIMEOUT))
        else:
            self.outbox.emit(RequestFailed(self.transaction_id, self.request,
                                           inp.error.status, inp.error.diagnostic,
                                           inp.error.retry_after))


class Requests:
    """The outstanding :class:`Requester` transactions of one endpoint, by transaction
    id, and their deadlines in a heap (the earliest is asked for once per event-loop
    turn: with many requests outstanding, a walk of them all each time would cost)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._open: dict[int, Requester] = {}
        #: (deadline, transaction id) of each request when it was sent; an entry whose
        #: request has ended (or whose id was reused since) is dropped when it surfaces.
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, txid: object) -> bool:
        return txid in self._open

    def start(self, dest: Handle, request: Message, now: float,
              timeout: float = timer("REQUEST_TIMEOUT")) -> Requester:
        txid = request.transaction_id
        if txid in self._open:
            raise ValueError(f"transaction id {txid} is outstanding")
        req = Requester(self.outbox, dest, request, timeout)
        req.send(now)
        self._open[txid] = req
        heap = self._deadlines
        if req.deadline is not None:
            heapq.heappush(heap, (req.deadline, txid))
        if len(heap) > 2 * len(self._open) + 64:  # ended ones behind one still waiting
            heap[:] = [(r.deadline, t) for t, r in self._open.items() if r.deadline is not None]
            heapq.heapify(heap)
        return req

    def receive(self, msg: Message, now: float) -> None:
        """An answer; one that matches no outstanding request raises
        :class:`ProtocolError` and is dropped (Section 9.3)."""
        if not self.take(msg, now):
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE,
                                f"{msg.TYPE.name} matches no outstanding request", msg.TYPE)

    def take(self, msg: Message, now: float) -> bool:
        """:meth:`receive`, but False (and nothing done) when ``msg`` matches no
        outstanding request (another machine may take it)."""
        txid = msg.transaction_id
        req = self._open.get(txid)
        if req is None:
            return False
        req.receive(msg, now)
        if req.state is _DONE:
            del self._open[txid]
        return True

    def cancel(self, txid: int, now: float) -> bool:
        """Abandon the outstanding request ``txid``; False if there is none."""
        req = self._open.pop(txid, None)
        if req is None:
            return False
        req.cancel(now)
        return True

    def get_timer(self) -> float | None:
        heap, open_ = self._deadlines, self._open
        while heap:
            at, txid = heap[0]
            req = open_.get(txid)
            if req is not None and req.deadline == at:
                return at
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        for txid, req in list(self._open.items()):
            req.handle_timer(now)
            if req.state is _DONE:
                del self._open[txid]
