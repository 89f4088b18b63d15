"""The transactions of the datagram reliability layer as tables (draft-dmsc-protocol-00,
Section 9.3; draft-dmsc-state-machines-00).

:class:`Retransmission` is one request an endpoint sent: it is retransmitted after
RETRANSMIT_INITIAL, the timeout doubling up to RETRANSMIT_MAX, at most RETRANSMIT_LIMIT
times, until its answer (its answer type or ERROR) comes, or its transaction time ends
(TRANSACTION_TIMEOUT).  :class:`DuplicateEntry` is one request an endpoint received,
by (peer, transaction id): handed up once, its answer kept for DUPLICATE_CACHE_TIME and
sent again for a repeat.

Both are :class:`~dmscproto.fsm.TableMachine`\\ s: :class:`~.reliability.Reliability`
classifies each datagram, call and timer into one of their inputs, and their actions
write the datagrams to send, the events and the counters into the endpoint's
:class:`Sink`; the tables are the whole behaviour.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from ..codec.errors import DecodeError
from ..codec.messages import Error, Message
from ..codec.pdu import encode
from ..codec.registry import HEADER_SIZE, ErrorCode, Flags
from ..codec.wire import HEADER_STRUCT
from ..fsm import StepInput, TableMachine
from .reliability_events import (
    Address,
    Counters,
    ReliabilityEvent,
    RequestAbandoned,
    RequestReceived,
    ResponseReceived,
)


@dataclass(slots=True)
class Sink:
    """What the machines of one endpoint write: datagrams to send, events, counters, and
    the expiry times of kept answers (a heap of ``(time, order, (peer, txid))``)."""

    out: list[tuple[bytes, Address]] = field(default_factory=list)
    events: deque[ReliabilityEvent] = field(default_factory=deque)
    counters: Counters = field(default_factory=Counters)
    expiry: list[tuple[float, int, tuple[Address, int]]] = field(default_factory=list)
    order: itertools.count[int] = field(default_factory=itertools.count)


# --- requester side ------------------------------------------------------------------------
class RetransmitState(Enum):
    IDLE = "IDLE"
    WAITING = "WAITING"
    LAST_WAIT = "LAST_WAIT"
    DONE = "DONE"


class RetransmitInput(Enum):
    SEND = "send_request()"
    ANSWER = "its answer type or ERROR"
    BAD_ANSWER = "its answer type or ERROR, not decodable"
    RETRANSMIT_DUE = "retransmission timer [retransmissions left]"
    EXHAUSTED = "retransmission timer [RETRANSMIT_LIMIT reached]"
    EXHAUSTED_UNTIMED = "retransmission timer [RETRANSMIT_LIMIT reached, no transaction time]"
    TRANSACTION_TIMER = "transaction timer"
    CANCEL = "cancel()"
    PEER_GONE = "forget_peer()"


class RetransmitAction(Enum):
    SEND = "send the request; start the retransmission timer (RETRANSMIT_INITIAL)"
    RETRANSMIT = ("send the request again with the RETRANSMISSION flag; double the "
                  "timeout, up to RETRANSMIT_MAX")
    STOP_RETRANSMITTING = "stop the retransmission timer; wait until the transaction timer"
    DELIVER = "report ResponseReceived"
    FAIL_MALFORMED = "report RequestAbandoned with the decoding error code"
    TIME_OUT = "report RequestAbandoned TRANSACTION_TIMEOUT"
    UNREACHABLE = "report RequestAbandoned TARGET_UNREACHABLE"
    DROP = "nothing (the answer is no longer wanted)"


_R, _RI, _RA = RetransmitState, RetransmitInput, RetransmitAction
_ACTIVE = (_R.WAITING, _R.LAST_WAIT)


@dataclass(frozen=True, slots=True)
class Send(StepInput):
    KIND = _RI.SEND


@dataclass(frozen=True, slots=True)
class Answered(StepInput):
    KIND = _RI.ANSWER
    answer: Message


@dataclass(frozen=True, slots=True)
class BadAnswer(StepInput):
    KIND = _RI.BAD_ANSWER
    error: DecodeError


@dataclass(frozen=True, slots=True)
class RetransmitDue(StepInput):
    KIND = _RI.RETRANSMIT_DUE


@dataclass(frozen=True, slots=True)
class Exhausted(StepInput):
    KIND = _RI.EXHAUSTED


@dataclass(frozen=True, slots=True)
class ExhaustedUntimed(StepInput):
    KIND = _RI.EXHAUSTED_UNTIMED


@dataclass(frozen=True, slots=True)
class TransactionTimer(StepInput):
    KIND = _RI.TRANSACTION_TIMER


@dataclass(frozen=True, slots=True)
class Cancel(StepInput):
    KIND = _RI.CANCEL


@dataclass(frozen=True, slots=True)
class PeerGone(StepInput):
    KIND = _RI.PEER_GONE
    reason: str


#: The inputs that carry no data, made once (each transaction is stepped with them).
SEND, RETRANSMIT_DUE, EXHAUSTED = Send(), RetransmitDue(), Exhausted()
EXHAUSTED_UNTIMED, TRANSACTION_TIMER, CANCEL = ExhaustedUntimed(), TransactionTimer(), Cancel()


class Retransmission(TableMachine):
    """One request sent to ``peer`` as ``data`` (module doc)."""

    __slots__ = (
        "answers",
        "data",
        "deadline",
        "due",
        "limit",
        "next_at",
        "peer",
        "retransmissions",
        "rto",
        "rto_max",
        "sink",
        "transaction_time",
        "txid",
    )

    NAME = "datagram-requester"
    TITLE = "Datagram reliability, one request sent"
    State, Input, Action = RetransmitState, RetransmitInput, RetransmitAction
    INITIAL = RetransmitState.IDLE
    TIMERS = ("RETRANSMIT_INITIAL", "RETRANSMIT_MAX", "RETRANSMIT_LIMIT", "REQUEST_TIMEOUT")
    TABLE = {
        (_R.IDLE, _RI.SEND): (_RA.SEND, _R.WAITING),
        (_R.WAITING, _RI.RETRANSMIT_DUE): (_RA.RETRANSMIT, _R.WAITING),
        (_R.WAITING, _RI.EXHAUSTED): (_RA.STOP_RETRANSMITTING, _R.LAST_WAIT),
        (_R.WAITING, _RI.EXHAUSTED_UNTIMED): (_RA.TIME_OUT, _R.DONE),
        **{(s, _RI.ANSWER): (_RA.DELIVER, _R.DONE) for s in _ACTIVE},
        **{(s, _RI.BAD_ANSWER): (_RA.FAIL_MALFORMED, _R.DONE) for s in _ACTIVE},
        **{(s, _RI.TRANSACTION_TIMER): (_RA.TIME_OUT, _R.DONE) for s in _ACTIVE},
        **{(s, _RI.CANCEL): (_RA.DROP, _R.DONE) for s in _ACTIVE},
        **{(s, _RI.PEER_GONE): (_RA.UNREACHABLE, _R.DONE) for s in _ACTIVE},
    }

    def __init__(self, sink: Sink, peer: Address, txid: int, answers: tuple[int, int],
                 data: bytes, rto: float, rto_max: float, limit: int,
                 transaction_time: float) -> None:
        super().__init__()
        self.sink = sink
        self.peer = peer
        self.txid = txid
        #: The answer's message type code, and ERROR's.
        self.answers = answers
        self.data = data
        self.rto = rto
        self.rto_max = rto_max
        self.limit = limit
        #: How long the request may wait for its answer (math.inf: until the last
        #: retransmission's timeout).
        self.transaction_time = transaction_time
        #: When the retransmission timer and the transaction timer run out, and the
        #: earlier of the two.
        self.next_at = self.deadline = self.due = math.inf
        self.retransmissions = 0

    def classify_timer(self, now: float) -> StepInput | None:
        """The timer input due at ``now``, if any."""
        if now < self.due:
            return None
        exhausted = self.retransmissions >= self.limit
        if now >= self.deadline:
            return TRANSACTION_TIMER
        if exhausted:
            return EXHAUSTED if math.isfinite(self.deadline) else EXHAUSTED_UNTIMED
        return RETRANSMIT_DUE

    def get_timer(self) -> float:
        return self.due

    def _abandon(self, code: ErrorCode, reason: str) -> None:
        self.sink.events.append(RequestAbandoned(self.peer, self.txid, code, reason))

    # --- actions --------------------------------------------------------------------------
    def _send(self, now: float, inp: Send) -> None:
        self.next_at = now + self.rto
        self.deadline = now + self.transaction_time
        self.due = min(self.next_at, self.deadline)
        self.sink.out.append((self.data, self.peer))
        self.sink.counters.requests_sent += 1

    def _retransmit(self, now: float, inp: RetransmitDue) -> None:
        if self.retransmissions == 0:
            version, mtype, flags, length, txid = HEADER_STRUCT.unpack_from(self.data)
            self.data = HEADER_STRUCT.pack(version, mtype, flags | Flags.RETRANSMISSION,
                                           length, txid) + self.data[HEADER_SIZE:]
        self.retransmissions += 1
        self.sink.counters.retransmissions += 1
        self.rto = min(2 * self.rto, self.rto_max)
        self.next_at = now + self.rto
        self.due = min(self.next_at, self.deadline)
        self.sink.out.append((self.data, self.peer))

    def _stop_retransmitting(self, now: float, inp: Exhausted) -> None:
        self.next_at = self.due = self.deadline

    def _deliver(self, now: float, inp: Answered) -> None:
        self.sink.events.append(ResponseReceived(self.peer, self.txid, inp.answer))

    def _fail_malformed(self, now: float, inp: BadAnswer) -> None:
        self._abandon(inp.error.code, f"malformed answer: {inp.error}")

    def _time_out(self, now: float, inp: TransactionTimer | ExhaustedUntimed) -> None:
        self.sink.counters.timeouts += 1
        self._abandon(ErrorCode.TRANSACTION_TIMEOUT,
                      f"no answer after {self.retransmissions} retransmissions")

    def _unreachable(self, now: float, inp: PeerGone) -> None:
        self._abandon(ErrorCode.TARGET_UNREACHABLE, inp.reason)

    def _drop(self, now: float, inp: Cancel) -> None:
        """The requester gave up: nothing is reported."""


# --- responder side ------------------------------------------------------------------------
class DuplicateState(Enum):
    NEW = "NEW"
    PROCESSING = "PROCESSING"
    ANSWERED = "ANSWERED"


class DuplicateInput(Enum):
    REQUEST = "a request"
    REQUEST_FULL = "a request [duplicate cache full, no answer to evict]"
    MALFORMED = "a request (or unknown type) that does not decode"
    REPEAT = "the same request again"
    REUSED = "another request with its transaction id"
    RESPOND = "respond()"
    EXPIRE = "duplicate cache timer"
    EVICT = "duplicate cache full: the kept answer closest to expiry"


class DuplicateAction(Enum):
    PASS_UP = "report RequestReceived"
    REFUSE_FULL = "answer ERROR RESOURCE_EXHAUSTED"
    ANSWER_ERROR = ("answer ERROR with the decoding error code; keep the answer for "
                    "DUPLICATE_CACHE_TIME")
    KEEP_ANSWER = ("send the answer (ERROR PDU_TOO_LARGE if it does not fit one datagram); "
                   "keep it for DUPLICATE_CACHE_TIME")
    SEND_ANSWER = "send the answer (ERROR PDU_TOO_LARGE if it does not fit one datagram)"
    IGNORE_REPEAT = "nothing (the answer goes out when it is ready)"
    RESEND = "send the kept answer again"
    REFUSE_REUSE = "answer ERROR UNEXPECTED_MESSAGE"
    FORGET = "forget the kept answer"


_D, _DI, _DA = DuplicateState, DuplicateInput, DuplicateAction
_HELD = (_D.PROCESSING, _D.ANSWERED)


@dataclass(frozen=True, slots=True)
class Request(StepInput):
    KIND = _DI.REQUEST
    message: Message


@dataclass(frozen=True, slots=True)
class RequestFull(StepInput):
    KIND = _DI.REQUEST_FULL


@dataclass(frozen=True, slots=True)
class Malformed(StepInput):
    KIND = _DI.MALFORMED
    message_type: int
    error: DecodeError


@dataclass(frozen=True, slots=True)
class Repeat(StepInput):
    KIND = _DI.REPEAT


@dataclass(frozen=True, slots=True)
class Reused(StepInput):
    KIND = _DI.REUSED


@dataclass(frozen=True, slots=True)
class Respond(StepInput):
    """The answer, as it goes out (ERROR PDU_TOO_LARGE in its place if it did not fit)."""

    KIND = _DI.RESPOND
    data: bytes


@dataclass(frozen=True, slots=True)
class Expire(StepInput):
    KIND = _DI.EXPIRE


@dataclass(frozen=True, slots=True)
class Evict(StepInput):
    KIND = _DI.EVICT


#: The inputs that carry no data, made once.
REQUEST_FULL, REPEAT, REUSED, EXPIRE, EVICT = RequestFull(), Repeat(), Reused(), Expire(), Evict()


class DuplicateEntry(TableMachine):
    """One request received from ``peer`` with ``txid`` (module doc); ``fingerprint``
    identifies it apart from its header flags."""

    __slots__ = ("answer", "expires", "fingerprint", "keep", "peer", "sink", "txid")

    NAME = "datagram-responder"
    TITLE = "Datagram reliability, one request received (duplicate cache)"
    State, Input, Action = DuplicateState, DuplicateInput, DuplicateAction
    INITIAL = DuplicateState.NEW
    TIMERS = ("DUPLICATE_CACHE_TIME",)
    TABLE = {
        (_D.NEW, _DI.REQUEST): (_DA.PASS_UP, _D.PROCESSING),
        (_D.NEW, _DI.REQUEST_FULL): (_DA.REFUSE_FULL, _D.NEW),
        (_D.NEW, _DI.MALFORMED): (_DA.ANSWER_ERROR, _D.ANSWERED),
        (_D.NEW, _DI.RESPOND): (_DA.SEND_ANSWER, _D.NEW),
        (_D.PROCESSING, _DI.RESPOND): (_DA.KEEP_ANSWER, _D.ANSWERED),
        (_D.PROCESSING, _DI.REPEAT): (_DA.IGNORE_REPEAT, _D.PROCESSING),
        (_D.ANSWERED, _DI.REPEAT): (_DA.RESEND, _D.ANSWERED),
        (_D.ANSWERED, _DI.RESPOND): (_DA.SEND_ANSWER, _D.ANSWERED),
        (_D.ANSWERED, _DI.EXPIRE): (_DA.FORGET, _D.NEW),
        (_D.ANSWERED, _DI.EVICT): (_DA.FORGET, _D.NEW),
        **{(s, _DI.REUSED): (_DA.REFUSE_REUSE, s) for s in _HELD},
    }

    def __init__(self, sink: Sink, peer: Address, txid: int, fingerprint: bytes,
                 keep: float) -> None:
        super().__init__()
        self.sink = sink
        self.peer = peer
        self.txid = txid
        self.fingerprint = fingerprint
        #: How long an answer is kept (DUPLICATE_CACHE_TIME).
        self.keep = keep
        self.answer: bytes | None = None
        self.expires = math.inf

    def _send(self, data: bytes) -> None:
        self.sink.out.append((data, self.peer))

    def _error(self, code: ErrorCode, diagnostic: str) -> None:
        self._send(encode(Error(transaction_id=self.txid, status=code, diagnostic=diagnostic)))

    def _keep(self, now: float, data: bytes) -> None:
        """Keep the answer; the duplicate cache timer starts."""
        self.answer, self.expires = data, now + self.keep
        heapq.heappush(self.sink.expiry, (self.expires, next(self.sink.order),
                                          (self.peer, self.txid)))
        self._send(data)

    # --- actions --------------------------------------------------------------------------
    def _pass_up(self, now: float, inp: Request) -> None:
        self.sink.events.append(RequestReceived(self.peer, inp.message))

    def _refuse_full(self, now: float, inp: RequestFull) -> None:
        self._error(ErrorCode.RESOURCE_EXHAUSTED, "duplicate cache full")

    def _answer_error(self, now: float, inp: Malformed) -> None:
        self._keep(now, encode(Error(
            transaction_id=self.txid, status=inp.error.code, offending_type=inp.message_type,
            diagnostic=inp.error.reason[:200])))

    def _keep_answer(self, now: float, inp: Respond) -> None:
        self._keep(now, inp.data)

    def _send_answer(self, now: float, inp: Respond) -> None:
        self._send(inp.data)

    def _ignore_repeat(self, now: float, inp: Repeat) -> None:
        self.sink.counters.duplicates_in_progress += 1

    def _resend(self, now: float, inp: Repeat) -> None:
        assert self.answer is not None
        self.sink.counters.duplicates_answered += 1
        self._send(self.answer)

    def _refuse_reuse(self, now: float, inp: Reused) -> None:
        self._error(ErrorCode.UNEXPECTED_MESSAGE, "transaction id reused by a different request")

    def _forget(self, now: float, inp: Expire | Evict) -> None:
        self.answer, self.expires = None, math.inf


#: The machines of the reliability layer, for the draft's diagrams and the table tests
#: (:data:`dmscproto.protocol.catalog.MACHINES` lists the protocol's).
MACHINES: tuple[type[TableMachine], ...] = (Retransmission, DuplicateEntry)
