"""Reliability for datagram transports (draft-dmsc-protocol-00, Section 9.3), sans-I/O with
a fake clock, and lab-mode cleartext UDP (Section 9.4) on loopback."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from transport_support import echo, fast_retransmission, reply_to, run

from dmscproto.codec.messages import Error, Keepalive, Message, RouteReply
from dmscproto.codec.pdu import decode, encode
from dmscproto.codec.registry import ANSWER_TO, ONE_WAY, ErrorCode, Flags, MessageType, timer
from dmscproto.testing.examples import by_type, examples
from dmscproto.transport import udp
from dmscproto.transport.datagram import PeerInfo
from dmscproto.transport.errors import TransportError
from dmscproto.transport.reliability import PduTooLarge, Reliability
from dmscproto.transport.reliability_events import (
    DatagramRejected,
    MessageReceived,
    ReliabilityEvent,
    RequestAbandoned,
    RequestReceived,
    ResponseReceived,
)
from interop.relay import Impairment, Relay

EX = examples()
A, B = ("10.0.0.1", 1000), ("10.0.0.2", 2000)



def events(r: Reliability) -> list[ReliabilityEvent]:
    out: list[ReliabilityEvent] = []
    while (ev := r.next_event()) is not None:
        out.append(ev)
    return out


# --- the request/response table ------------------------------------------------------------
def test_every_message_type_is_classified() -> None:
    known = set(ANSWER_TO) | set(ANSWER_TO.values()) | ONE_WAY | {MessageType.ERROR}
    assert known == set(MessageType)
    assert MessageType.ERROR not in ANSWER_TO
    assert not set(ANSWER_TO) & ONE_WAY


def test_example_requests_have_example_answers() -> None:
    types = by_type()
    for request, response in ANSWER_TO.items():
        assert types[request] and types[response]


def test_a_transaction_id_set_in_the_pdu_is_the_messages_encoding_with_it() -> None:
    """Reliability sets the transaction id of a request sent without one, and of an
    answer to a request, in the encoded header: the octets are those of the message
    with that id, for every example request and answer (no TLV repeats the id)."""
    ex, types = examples(), by_type()
    for request_type, answer_type in ANSWER_TO.items():
        for name in types[request_type]:
            r = Reliability(max_pdu=1 << 16)
            txid = r.send_request(A, replace(ex[name], transaction_id=0), 0.0)
            [(sent, _)] = r.datagrams_to_send()
            assert txid and sent == encode(replace(ex[name], transaction_id=txid)), name
        for name in types[answer_type]:
            r = Reliability(max_pdu=1 << 16)
            request = replace(ex[types[request_type][0]], transaction_id=7)
            r.respond(A, request, replace(ex[name], transaction_id=0), 0.0)
            [(sent, _)] = r.datagrams_to_send()
            assert sent == encode(replace(ex[name], transaction_id=7)), name


# --- requester: retransmission schedule --------------------------------------------------
def run_schedule(r: Reliability, timeout: float | None) -> tuple[list[tuple[float, int]], float]:
    """Drive one unanswered request with a fake clock: (time, flags) of every send and the
    time it was abandoned."""
    now = 0.0
    r.send_request(A, echo(1, txid=7), now, timeout)
    sends = [(now, decode(d).flags) for d, _ in r.datagrams_to_send()]
    while (at := r.get_timer()) is not None:
        now = at
        r.handle_timer(now)
        sends += [(now, decode(d).flags) for d, _ in r.datagrams_to_send()]
        evs = events(r)
        if evs:
            assert isinstance(evs[0], RequestAbandoned)
            assert evs[0].code is ErrorCode.TRANSACTION_TIMEOUT
            return sends, now
    raise AssertionError("never abandoned")


def test_retransmission_backoff_follows_the_timers() -> None:
    initial, cap = timer("RETRANSMIT_INITIAL"), timer("RETRANSMIT_MAX")
    limit = int(timer("RETRANSMIT_LIMIT"))
    r = Reliability()
    sends, gave_up = run_schedule(r, timeout=math.inf)
    expected, t, rto = [0.0], 0.0, initial
    for _ in range(limit):
        t += rto
        expected.append(t)
        rto = min(2 * rto, cap)
    assert [s[0] for s in sends] == pytest.approx(expected)
    assert gave_up == pytest.approx(expected[-1] + rto)
    assert sends[0][1] == 0
    assert all(flags & Flags.RETRANSMISSION for _, flags in sends[1:])
    c = r.counters
    assert (c.requests_sent, c.retransmissions, c.timeouts) == (1, limit, 1)


def test_request_timeout_bounds_the_schedule() -> None:
    sends, gave_up = run_schedule(Reliability(), timeout=None)
    assert gave_up == pytest.approx(timer("REQUEST_TIMEOUT"))
    assert all(t < gave_up for t, _ in sends)


def test_relayed_request_waits_its_whole_transaction_time() -> None:
    """Section 9.3: a ROUTE_REQUEST's requester waits the gateway's transaction time plus
    REQUEST_TIMEOUT, past the end of the retransmission schedule, then gives up."""
    wait = timer("ROUTE_TIMEOUT") + timer("REQUEST_TIMEOUT")
    r = Reliability()
    sends, gave_up = run_schedule(r, timeout=wait)
    assert gave_up == pytest.approx(wait)
    assert len(sends) == 1 + int(timer("RETRANSMIT_LIMIT")) and sends[-1][0] < wait - 8
    assert r.counters.timeouts == 1


def test_timer_overrides() -> None:
    sends, gave_up = run_schedule(
        Reliability(retransmit_initial=0.1, retransmit_max=0.2, retransmit_limit=3), math.inf)
    assert [t for t, _ in sends] == pytest.approx([0, 0.1, 0.3, 0.5])
    assert gave_up == pytest.approx(0.7)


# --- requester: matching answers ---------------------------------------------------------
def test_answers_match_by_peer_transaction_id_and_type() -> None:
    r = Reliability()
    txid = r.send_request(A, echo(1), 0.0)
    assert txid != 0
    r.receive(B, encode(replace(reply_to(echo(1)), transaction_id=txid)), 0.1)  # other peer
    r.receive(A, encode(replace(reply_to(echo(1)), transaction_id=txid + 1)), 0.1)
    r.receive(A, encode(RouteReply(transaction_id=txid, status=ErrorCode.SUCCESS)), 0.1)
    assert events(r) == []
    assert r.counters.stray_answers == 3
    answer = replace(reply_to(echo(1)), transaction_id=txid)
    r.receive(A, encode(answer), 0.2)
    r.receive(A, encode(answer), 0.3)  # a duplicated answer is dropped
    evs = events(r)
    assert len(evs) == 1 and isinstance(evs[0], ResponseReceived)
    assert evs[0].response == answer
    assert r.outstanding() == 0 and r.get_timer() is None


def test_error_answers_any_request() -> None:
    r = Reliability()
    txid = r.send_request(A, EX["register"], 0.0)
    r.receive(A, encode(Error(transaction_id=txid, status=ErrorCode.RATE_LIMITED)), 0.1)
    [ev] = events(r)
    assert isinstance(ev, ResponseReceived) and ev.response.TYPE is MessageType.ERROR


def test_raw_request_octets_are_retransmitted_with_the_flag() -> None:
    r = Reliability()
    pdu = encode(echo(1, txid=77))
    assert r.send_request_bytes(A, pdu, 0.0) == 77
    [(first, _)] = r.datagrams_to_send()
    r.handle_timer(timer("RETRANSMIT_INITIAL"))
    [(again, _)] = r.datagrams_to_send()
    assert first == pdu
    assert decode(again) == replace(echo(1, txid=77), flags=Flags.RETRANSMISSION)
    unknown = bytearray(encode(echo(1, txid=78)))
    unknown[1] = 0x66  # no such type: only ERROR can answer it
    r.send_request_bytes(A, bytes(unknown), 0.0)
    r.receive(A, encode(replace(reply_to(echo(1)), transaction_id=78)), 0.1)
    assert events(r) == []
    r.receive(A, encode(Error(transaction_id=78, status=ErrorCode.UNKNOWN_MESSAGE_TYPE)), 0.1)
    [ev] = events(r)
    assert isinstance(ev, ResponseReceived) and ev.transaction_id == 78
    with pytest.raises(ValueError, match="header"):
        r.send_request_bytes(A, pdu[:10], 0.0)


def test_only_requests_are_retransmitted() -> None:
    r = Reliability()
    with pytest.raises(ValueError, match="not a request"):
        r.send_request(A, EX["register-ack"], 0.0)
    r.send_message(A, Keepalive())
    assert len(r.datagrams_to_send()) == 1
    assert r.get_timer() is None


# --- responder: duplicate cache ----------------------------------------------------------
def test_duplicate_request_gets_the_cached_answer_and_no_second_call() -> None:
    r = Reliability()
    request = encode(echo(5, txid=99))
    retransmitted = encode(replace(echo(5, txid=99), flags=Flags.RETRANSMISSION))
    r.receive(A, request, 0.0)
    [ev] = events(r)
    assert isinstance(ev, RequestReceived)
    r.receive(A, retransmitted, 0.1)  # still being processed: dropped, not re-delivered
    assert events(r) == [] and r.datagrams_to_send() == []
    assert r.counters.duplicates_in_progress == 1
    r.respond(A, ev.message, reply_to(echo(5)), 0.2)
    [(answer, peer)] = r.datagrams_to_send()
    assert peer == A and decode(answer).transaction_id == 99
    r.receive(A, retransmitted, 1.0)
    assert events(r) == []
    assert r.datagrams_to_send() == [(answer, A)]
    assert r.counters.duplicates_answered == 1
    # the same transaction id from another peer is another transaction
    r.receive(B, request, 1.0)
    assert [type(e) for e in events(r)] == [RequestReceived]


def test_duplicate_cache_expires_after_its_time() -> None:
    r = Reliability()
    r.receive(A, encode(echo(1, txid=5)), 0.0)
    [ev] = events(r)
    assert isinstance(ev, RequestReceived)
    r.respond(A, ev.message, reply_to(echo(1)), 0.0)
    r.datagrams_to_send()
    assert r.get_timer() == pytest.approx(timer("DUPLICATE_CACHE_TIME"))
    r.handle_timer(timer("DUPLICATE_CACHE_TIME"))
    assert r.cached_answers() == 0
    r.receive(A, encode(echo(1, txid=5)), timer("DUPLICATE_CACHE_TIME") + 1)
    assert [type(e) for e in events(r)] == [RequestReceived]


def test_transaction_id_reused_by_another_request_is_an_error() -> None:
    r = Reliability()
    r.receive(A, encode(echo(1, txid=5)), 0.0)
    events(r)
    r.receive(A, encode(echo(2, txid=5)), 0.1)
    assert events(r) == []
    [(data, _)] = r.datagrams_to_send()
    err = decode(data)
    assert isinstance(err, Error) and err.status is ErrorCode.UNEXPECTED_MESSAGE


def test_full_cache_evicts_answered_entries_first() -> None:
    r = Reliability(max_cache_entries=2)
    for txid in (1, 2):
        r.receive(A, encode(echo(txid, txid=txid)), 0.0)
        [ev] = events(r)
        assert isinstance(ev, RequestReceived)
        if txid == 1:
            r.respond(A, ev.message, reply_to(echo(1)), 0.0)
    r.datagrams_to_send()
    r.receive(A, encode(echo(3, txid=3)), 0.1)  # evicts answered 1, not in-progress 2
    assert [type(e) for e in events(r)] == [RequestReceived]
    r.receive(A, encode(echo(4, txid=4)), 0.1)  # only in-progress entries left
    assert events(r) == []
    [(data, _)] = r.datagrams_to_send()
    assert decode(data).status is ErrorCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_malformed_request_is_answered_with_its_decoding_error() -> None:
    r = Reliability()
    r.receive(A, encode(echo(1, txid=42))[:-3], 0.0)  # cut short
    [rejected] = events(r)
    assert isinstance(rejected, DatagramRejected)
    [(answer, _)] = r.datagrams_to_send()
    err = decode(answer)
    assert isinstance(err, Error) and err.transaction_id == 42
    assert err.status is ErrorCode.TRUNCATED and err.offending_type == MessageType.ECHO_REQUEST
    # a PDU of an unknown message type is answered too
    unknown = bytearray(encode(echo(1, txid=43)))
    unknown[1] = 0x66
    r.receive(A, bytes(unknown), 0.0)
    [(answer, _)] = r.datagrams_to_send()
    assert decode(answer).status is ErrorCode.UNKNOWN_MESSAGE_TYPE  # type: ignore[attr-defined]
    # a malformed answer, one-way message or ERROR is never answered (no ERROR ping-pong)
    for msg in (reply_to(echo(1)), EX["keepalive"], EX["error"]):
        r.receive(A, encode(msg)[:-1], 0.0)
    assert r.datagrams_to_send() == []


def test_malformed_answer_fails_the_request() -> None:
    r = Reliability()
    txid = r.send_request(A, echo(1), 0.0)
    r.datagrams_to_send()
    r.receive(A, encode(replace(reply_to(echo(1)), transaction_id=txid))[:-2], 0.1)
    failed = [e for e in events(r) if isinstance(e, RequestAbandoned)]
    assert len(failed) == 1 and failed[0].code is ErrorCode.TRUNCATED
    assert r.outstanding() == 0 and r.datagrams_to_send() == []


def test_one_way_messages_are_delivered_not_answered() -> None:
    r = Reliability()
    r.receive(A, encode(EX["update"]), 0.0)
    r.receive(A, encode(EX["keepalive"]), 0.0)
    assert [type(e) for e in events(r)] == [MessageReceived, MessageReceived]
    assert r.datagrams_to_send() == []


def test_pdu_larger_than_a_datagram_is_refused() -> None:
    r = Reliability(max_pdu=200)
    with pytest.raises(PduTooLarge):
        r.send_request(A, echo(1, payload=bytes(300)), 0.0)
    r.receive(A, encode(echo(1, txid=3)), 0.0)
    [ev] = events(r)
    assert isinstance(ev, RequestReceived)
    r.respond(A, ev.message, reply_to(echo(1, payload=bytes(300))), 0.0)
    [(data, _)] = r.datagrams_to_send()
    err = decode(data)
    assert isinstance(err, Error) and err.status is ErrorCode.PDU_TOO_LARGE
    assert err.offending_type == MessageType.ECHO_REPLY and len(data) <= 200


# --- both ends over a simulated lossy link -----------------------------------------------
def test_lossy_link_every_request_completes_once() -> None:
    """Two Reliability instances joined by a link that loses 30 %, duplicates 20 % and
    reorders (random delays), fake clock: every request is answered, each handled once."""
    rng = random.Random(1)
    client, server = Reliability(), Reliability()
    in_flight: list[tuple[float, Reliability, tuple[str, int], bytes]] = []
    handled: Counter[int] = Counter()
    answers: dict[int, Message] = {}
    now = 0.0

    def carry(src: Reliability, dst: Reliability, src_addr: tuple[str, int]) -> None:
        for data, _ in src.datagrams_to_send():
            for _copy in range(2 if rng.random() < 0.2 else 1):
                if rng.random() >= 0.3:
                    in_flight.append((now + rng.uniform(0.001, 0.3), dst, src_addr, data))

    for seq in range(1, 51):
        client.send_request(B, echo(seq, txid=seq), now, timeout=math.inf)
    for _ in range(100000):
        carry(client, server, A)
        carry(server, client, B)
        for ev in events(server):
            assert isinstance(ev, RequestReceived)
            handled[ev.message.transaction_id] += 1
            server.respond(ev.peer, ev.message, reply_to(ev.message), now)  # type: ignore[arg-type]
        for ev in events(client):
            assert isinstance(ev, ResponseReceived)
            answers[ev.transaction_id] = ev.response
        carry(server, client, B)
        timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
        timers += [f[0] for f in in_flight]
        if client.outstanding() == 0 or not timers:
            break
        now = min(timers)
        due = [f for f in in_flight if f[0] <= now]
        in_flight[:] = [f for f in in_flight if f[0] > now]
        for _t, dst, src_addr, data in due:
            dst.receive(src_addr, data, now)
        client.handle_timer(now)
        server.handle_timer(now)
    assert sorted(answers) == list(range(1, 51))
    assert all(answers[s].sequence == s for s in answers)  # type: ignore[attr-defined]
    assert set(handled.values()) == {1} and len(handled) == 50
    assert client.counters.retransmissions > 0
    assert server.counters.duplicates_answered + server.counters.duplicates_in_progress > 0


# --- lab UDP on loopback -----------------------------------------------------------------
async def respond_with_examples(msg: Message, peer: PeerInfo) -> Message:
    answer_type = ANSWER_TO[msg.TYPE]
    return EX[by_type()[answer_type][0]]


def test_lab_mode_must_be_explicit() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="lab=True"):
            await udp.serve("127.0.0.1", 0, respond_with_examples, lab=False)
        with pytest.raises(ValueError, match="lab=True"):
            await udp.connect("127.0.0.1", udp.UDP_PORT, lab=1)  # type: ignore[arg-type]
    run(main())


def test_lab_udp_examples_round_trip(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="dmscproto.transport.udp"):
            server = await udp.serve("127.0.0.1", 0, respond_with_examples, lab=True)
            conn = await udp.connect(*server.address, lab=True)
        assert sum("CLEARTEXT" in r.getMessage() for r in caplog.records) == 2
        try:
            for request_type in ANSWER_TO:
                for name in by_type()[request_type]:
                    answer = await conn.request(EX[name])
                    assert answer.TYPE is ANSWER_TO[request_type]
                    assert answer.transaction_id == EX[name].transaction_id
            [peer] = server.connections.values()
            assert peer.peer.identity is None and peer.peer.address == conn.node.address
        finally:
            conn.close()
            server.close()
    run(main())


def test_lab_udp_malformed_request_gets_error() -> None:
    async def main() -> None:
        server = await udp.serve("127.0.0.1", 0, respond_with_examples, lab=True)
        conn = await udp.connect(*server.address, lab=True)
        try:
            answer = await conn.request_bytes(encode(echo(1, txid=9))[:-2])
            assert isinstance(answer, Error) and answer.transaction_id == 9
            assert answer.status is ErrorCode.TRUNCATED
        finally:
            conn.close()
            server.close()
    run(main())


def test_lab_udp_through_lossy_relay_no_duplicate_side_effects() -> None:
    async def main() -> None:
        calls: Counter[int] = Counter()

        async def handler(msg: Message, peer: PeerInfo) -> Message:
            calls[msg.transaction_id] += 1
            return reply_to(msg)  # type: ignore[arg-type]
        server = await udp.serve("127.0.0.1", 0, handler, lab=True)
        relay = await Relay.start(("127.0.0.1", 0), server.address, Impairment(
            loss=0.1, duplicate=0.1, reorder=0.1, jitter_ms=2, seed=1))
        conn = await udp.connect(*relay.address, lab=True,
                                 reliability=fast_retransmission())
        try:
            answers = await asyncio.gather(*(
                conn.request(echo(i, txid=i)) for i in range(1, 41)))
        finally:
            conn.close()
            relay.close()
            server.close()
        assert [a.sequence for a in answers] == list(range(1, 41))  # type: ignore[attr-defined]
        assert sorted(calls) == list(range(1, 41)) and set(calls.values()) == {1}
        assert relay.counters.up.dropped + relay.counters.down.dropped > 0
        assert relay.counters.up.duplicated + relay.counters.down.duplicated > 0
    run(main())


def test_lab_request_times_out_with_transaction_timeout() -> None:
    async def main() -> None:
        server = await udp.serve("127.0.0.1", 0, respond_with_examples, lab=True)
        relay = await Relay.start(("127.0.0.1", 0), server.address, Impairment(loss=1.0))
        conn = await udp.connect(*relay.address, lab=True)
        try:
            with pytest.raises(TransportError) as info:
                await conn.request(echo(1), timeout=0.3)
            assert info.value.code is ErrorCode.TRANSACTION_TIMEOUT
        finally:
            conn.close()
            relay.close()
            server.close()
    run(main())
