"""Every row of the datagram reliability layer's two tables, one test each
(draft-dmsc-protocol-00 Section 9.3; :mod:`row_cases`): an endpoint's
:class:`~dmscproto.transport.reliability.Reliability` fed datagrams (PDUs, whole or
cut short), calls and timers; what it sends, reports and counts after each row, and
how it then treats the same transaction (its next state)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from row_cases import RowCases, row_tests
from transport_support import echo, reply_to

from dmscproto.codec.messages import Error
from dmscproto.codec.pdu import decode, encode
from dmscproto.codec.registry import ErrorCode, Flags, MessageType, timer
from dmscproto.codec.wire import HEADER_STRUCT
from dmscproto.transport.reliability import Reliability
from dmscproto.transport.reliability_events import (
    DatagramRejected,
    ReliabilityEvent,
    RequestAbandoned,
    RequestReceived,
    ResponseReceived,
)
from dmscproto.transport.transactions import (
    DuplicateEntry,
    DuplicateInput,
    DuplicateState,
    Retransmission,
    RetransmitInput,
    RetransmitState,
)

SENT = RowCases(Retransmission)
RECEIVED = RowCases(DuplicateEntry)
RS, RI = RetransmitState, RetransmitInput
DS, DI = DuplicateState, DuplicateInput
A = ("10.0.0.1", 1000)
TXID = 7
KEEP = timer("DUPLICATE_CACHE_TIME")


def events(r: Reliability) -> list[ReliabilityEvent]:
    out = []
    while (e := r.next_event()) is not None:
        out.append(e)
    return out


# --- a request sent: retransmitted at 1 s, then 3 s (timeout 1, doubled, at most 2 s),
# at most twice; its transaction time 10 s ------------------------------------------------
def requester(state: RetransmitState, timeout: float = 10) -> Reliability:
    """A request in ``state``: sent at 0 (WAITING), or retransmitted twice (at 1 and 3)
    and given up retransmitting at 5 (LAST_WAIT)."""
    r = Reliability(retransmit_initial=1, retransmit_max=2, retransmit_limit=2)
    if state is not RS.IDLE:
        assert r.send_request(A, echo(1, txid=TXID), 0.0, timeout) == TXID
    if state is RS.LAST_WAIT:
        for t in (1.0, 3.0, 5.0):
            r.handle_timer(t)
        assert r.get_timer() == timeout
    r.datagrams_to_send()
    return r


def flags(data: bytes) -> int:
    return int(HEADER_STRUCT.unpack_from(data)[2])


def answer() -> bytes:
    return encode(replace(reply_to(echo(1)), transaction_id=TXID))


def gone(r: Reliability, *expect: ReliabilityEvent) -> None:
    """The transaction is over (DONE): reported as ``expect``, nothing left to send or
    time, and an answer now is a stray."""
    assert events(r) == list(expect)
    assert r.outstanding() == 0 and r.get_timer() is None and r.datagrams_to_send() == []
    strays = r.counters.stray_answers
    r.receive(A, answer(), 9.0)
    assert events(r) == [] and r.counters.stray_answers == strays + 1


@SENT.row(RS.IDLE, RI.SEND)
def _send(state: RetransmitState, tmp_path: Path) -> None:
    r = requester(state)
    r.send_request(A, echo(1, txid=TXID), 0.0)
    [(data, peer)] = r.datagrams_to_send()
    assert peer == A and decode(data) == echo(1, txid=TXID)
    assert not flags(data) & Flags.RETRANSMISSION
    assert r.outstanding() == 1 and r.get_timer() == 1.0 and r.counters.requests_sent == 1
    r.handle_timer(1.0)  # waiting: retransmitted
    assert len(r.datagrams_to_send()) == 1


@SENT.row(RS.WAITING, RI.RETRANSMIT_DUE)
def _retransmit(state: RetransmitState, tmp_path: Path) -> None:
    r = requester(state)
    r.handle_timer(1.0)
    [(data, _)] = r.datagrams_to_send()
    assert flags(data) & Flags.RETRANSMISSION
    assert decode(data) == replace(echo(1, txid=TXID), flags=Flags.RETRANSMISSION)
    assert r.get_timer() == 3.0 and r.counters.retransmissions == 1 and r.outstanding() == 1
    r.handle_timer(3.0)  # still waiting: retransmitted again
    assert len(r.datagrams_to_send()) == 1 and r.counters.retransmissions == 2


@SENT.row(RS.WAITING, RI.EXHAUSTED)
def _stop_retransmitting(state: RetransmitState, tmp_path: Path) -> None:
    """RETRANSMIT_LIMIT reached: no more datagrams; the transaction timer still runs."""
    r = requester(state)
    r.handle_timer(1.0)
    r.handle_timer(3.0)
    assert len(r.datagrams_to_send()) == 2
    r.handle_timer(5.0)
    assert r.datagrams_to_send() == [] and events(r) == []
    assert r.get_timer() == 10 and r.outstanding() == 1
    r.handle_timer(10)
    [abandoned] = events(r)
    assert isinstance(abandoned, RequestAbandoned)
    assert abandoned.code is ErrorCode.TRANSACTION_TIMEOUT


@SENT.row(RS.WAITING, RI.EXHAUSTED_UNTIMED)
def _time_out_untimed(state: RetransmitState, tmp_path: Path) -> None:
    """No transaction time: given up after the last retransmission's timeout."""
    r = requester(state, timeout=math.inf)
    for t in (1.0, 3.0, 5.0):
        r.handle_timer(t)
    r.datagrams_to_send()
    [abandoned] = events(r)
    assert isinstance(abandoned, RequestAbandoned)
    assert abandoned.code is ErrorCode.TRANSACTION_TIMEOUT and r.counters.timeouts == 1
    gone(r)


@SENT.row((RS.WAITING, RS.LAST_WAIT), RI.ANSWER)
def _deliver(state: RetransmitState, tmp_path: Path) -> None:
    r = requester(state)
    r.receive(A, answer(), 6.0)
    gone(r, ResponseReceived(A, TXID, decode(answer())))


@SENT.row((RS.WAITING, RS.LAST_WAIT), RI.BAD_ANSWER)
def _fail_malformed(state: RetransmitState, tmp_path: Path) -> None:
    r = requester(state)
    r.receive(A, answer()[:-2], 6.0)
    rejected, abandoned = events(r)
    assert isinstance(rejected, DatagramRejected)
    assert isinstance(abandoned, RequestAbandoned) and abandoned.transaction_id == TXID
    assert abandoned.code is rejected.error.code is ErrorCode.TRUNCATED
    gone(r)


@SENT.row((RS.WAITING, RS.LAST_WAIT), RI.TRANSACTION_TIMER)
def _time_out(state: RetransmitState, tmp_path: Path) -> None:
    """The transaction time ends (in WAITING: before the first retransmission)."""
    r = requester(state, timeout=0.5 if state is RS.WAITING else 10)
    r.handle_timer(r.get_timer() or 0.0)
    [abandoned] = events(r)
    assert isinstance(abandoned, RequestAbandoned)
    assert abandoned.code is ErrorCode.TRANSACTION_TIMEOUT
    gone(r)


@SENT.row((RS.WAITING, RS.LAST_WAIT), RI.CANCEL)
def _drop(state: RetransmitState, tmp_path: Path) -> None:
    r = requester(state)
    r.cancel(A, TXID)
    gone(r)  # nothing reported


@SENT.row((RS.WAITING, RS.LAST_WAIT), RI.PEER_GONE)
def _unreachable(state: RetransmitState, tmp_path: Path) -> None:
    r = requester(state)
    r.forget_peer(A, "association closed")
    gone(r, RequestAbandoned(A, TXID, ErrorCode.TARGET_UNREACHABLE, "association closed"))


# --- a request received (the duplicate cache holds two) ------------------------------------
def request(txid: int = TXID, seq: int = 1) -> bytes:
    return encode(echo(seq, txid=txid))


def responder(state: DuplicateState) -> Reliability:
    """The request TXID from A received at 0 (PROCESSING) and answered (ANSWERED)."""
    r = Reliability(max_cache_entries=2)
    if state is not DS.NEW:
        r.receive(A, request(), 0.0)
    if state is DS.ANSWERED:
        r.respond(A, echo(1, txid=TXID), reply_to(echo(1)), 0.0)
    r.datagrams_to_send()
    events(r)
    return r


def passed_up(r: Reliability, data: bytes, at: float) -> None:
    """``data`` is new to the cache: handed up."""
    r.receive(A, data, at)
    assert events(r) == [RequestReceived(A, decode(data))]


def answers(r: Reliability) -> list[object]:
    return [decode(d) for d, _ in r.datagrams_to_send()]


@RECEIVED.row(DS.NEW, DI.REQUEST)
def _pass_up(state: DuplicateState, tmp_path: Path) -> None:
    r = responder(state)
    passed_up(r, request(), 0.0)
    assert r.cached_answers() == 1 and r.datagrams_to_send() == []
    r.receive(A, request(), 0.5)  # processing: a repeat waits for the answer
    assert events(r) == [] and r.datagrams_to_send() == []


@RECEIVED.row(DS.PROCESSING, DI.REPEAT)
def _ignore_repeat(state: DuplicateState, tmp_path: Path) -> None:
    r = responder(state)
    r.receive(A, request(), 0.5)
    assert events(r) == [] and r.datagrams_to_send() == []
    assert r.counters.duplicates_in_progress == 1
    r.respond(A, echo(1, txid=TXID), reply_to(echo(1)), 0.6)  # still processing: kept
    r.datagrams_to_send()
    r.receive(A, request(), 0.7)
    assert answers(r) == [replace(reply_to(echo(1)), transaction_id=TXID)]


@RECEIVED.row(DS.PROCESSING, DI.RESPOND)
@RECEIVED.row(DS.ANSWERED, DI.REPEAT)
def _keep_answer(state: DuplicateState, tmp_path: Path) -> None:
    """The answer goes out and is kept: a repeat gets it again, not the application."""
    r = responder(DS.PROCESSING)
    r.respond(A, echo(1, txid=TXID), reply_to(echo(1)), 0.5)
    reply = replace(reply_to(echo(1)), transaction_id=TXID)
    assert answers(r) == [reply]
    for n, at in enumerate((1.0, 2.0), 1):
        r.receive(A, request(), at)
        assert events(r) == [] and answers(r) == [reply]
        assert r.counters.duplicates_answered == n


@RECEIVED.row((DS.NEW, DS.ANSWERED), DI.RESPOND)
def _send_answer(state: DuplicateState, tmp_path: Path) -> None:
    """An answer to a request not held, or again: sent, not kept (a repeat still gets
    the answer kept first, which expires when it did)."""
    r = responder(state)
    before = r.cached_answers()
    r.respond(A, echo(1, txid=TXID), reply_to(echo(2)), 0.5)
    assert answers(r) == [replace(reply_to(echo(2)), transaction_id=TXID)]
    assert r.cached_answers() == before
    if state is DS.NEW:
        assert r.get_timer() is None
        return
    assert r.get_timer() == KEEP
    r.receive(A, request(), 1.0)
    assert answers(r) == [replace(reply_to(echo(1)), transaction_id=TXID)]


@RECEIVED.row((DS.PROCESSING, DS.ANSWERED), DI.REUSED)
def _refuse_reuse(state: DuplicateState, tmp_path: Path) -> None:
    r = responder(state)
    r.receive(A, request(seq=2), 0.5)
    [err] = answers(r)
    assert isinstance(err, Error) and (err.transaction_id, err.status) == \
        (TXID, ErrorCode.UNEXPECTED_MESSAGE)
    assert events(r) == []
    r.receive(A, request(), 1.0)  # the request held is as it was
    assert answers(r) == ([] if state is DS.PROCESSING
                          else [replace(reply_to(echo(1)), transaction_id=TXID)])


@RECEIVED.row(DS.ANSWERED, DI.EXPIRE)
def _forget(state: DuplicateState, tmp_path: Path) -> None:
    """After DUPLICATE_CACHE_TIME the answer is forgotten: the request is new again."""
    r = responder(state)
    assert r.get_timer() == KEEP
    r.handle_timer(KEEP)
    assert r.cached_answers() == 0 and r.get_timer() is None
    assert r.datagrams_to_send() == [] and events(r) == []
    assert r.counters.duplicates_in_progress == r.counters.duplicates_answered == 0
    passed_up(r, request(), KEEP + 1)


@RECEIVED.row(DS.ANSWERED, DI.EVICT)
def _evict(state: DuplicateState, tmp_path: Path) -> None:
    """The cache is full: the kept answer closest to expiry makes room (and, once 8 is
    answered, 8's makes room for TXID again: its answer was forgotten, so it is new)."""
    r = responder(state)
    passed_up(r, request(txid=8), 1.0)
    passed_up(r, request(txid=9), 1.0)
    assert r.cached_answers() == 2 and r.datagrams_to_send() == []
    assert r.counters.duplicates_in_progress == r.counters.duplicates_answered == 0
    r.respond(A, echo(1, txid=8), reply_to(echo(1)), 1.5)
    r.datagrams_to_send()
    passed_up(r, request(), 2.0)


@RECEIVED.row(DS.NEW, DI.REQUEST_FULL)
def _refuse_full(state: DuplicateState, tmp_path: Path) -> None:
    """Full of requests not yet answered: RESOURCE_EXHAUSTED, nothing handed up."""
    r = responder(state)
    passed_up(r, request(txid=8), 0.0)
    passed_up(r, request(txid=9), 0.0)
    r.receive(A, request(), 0.0)
    [err] = answers(r)
    assert isinstance(err, Error) and (err.transaction_id, err.status) == \
        (TXID, ErrorCode.RESOURCE_EXHAUSTED)
    assert events(r) == [] and r.cached_answers() == 2


@RECEIVED.row(DS.NEW, DI.MALFORMED)
def _answer_error(state: DuplicateState, tmp_path: Path) -> None:
    """A request cut short: ERROR with the decoding error, kept like any answer."""
    r = responder(state)
    r.receive(A, request()[:-3], 0.0)
    [rejected] = events(r)
    assert isinstance(rejected, DatagramRejected)
    [err] = answers(r)
    assert isinstance(err, Error) and err.transaction_id == TXID
    assert (err.status, err.offending_type) == (rejected.error.code,
                                                int(MessageType.ECHO_REQUEST))
    r.receive(A, request()[:-3], 1.0)
    assert answers(r) == [err] and r.counters.duplicates_answered == 1


test_row, test_every_row_has_a_case = row_tests(SENT, RECEIVED)
