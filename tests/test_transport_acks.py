"""Delayed and piggybacked QUIC ACKs (draft Section 9.1, RFC 9000 Section 13.2), on two
sans-I/O connections with a manual clock: real handshakes, real packets, no sockets."""

from __future__ import annotations

import asyncio

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from transport_support import Pki

from dmscproto.codec.registry import timer
from dmscproto.transport.driver import EndOfTurn
from dmscproto.transport.tls import DmscQuicConnection

CLIENT, SERVER = ("10.0.0.1", 4433), ("10.0.0.2", 4433)
ACK_DELAY = timer("QUIC_ACK_DELAY")


class Pair:
    """A client and a server connection, datagrams carried by hand."""

    def __init__(self, pki: Pki) -> None:
        self.now = 1000.0
        self.client = DmscQuicConnection(
            configuration=pki.agent.configuration(is_client=True), verifier=pki.agent.verifier())
        self.server = DmscQuicConnection(
            configuration=pki.gateway.configuration(is_client=False),
            verifier=pki.gateway.verifier(),
            original_destination_connection_id=self.client.original_destination_connection_id)
        self.client.connect(SERVER, now=self.now)
        while self.flight(self.client, self.server) + self.flight(self.server, self.client):
            pass
        self.tick(0.1)  # everything of the handshake acknowledged by now
        while self.flight(self.client, self.server) + self.flight(self.server, self.client):
            pass
        assert self.client._handshake_confirmed and self.server._handshake_confirmed

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for conn in (self.client, self.server):
            due = conn.get_timer()
            if due is not None and due <= self.now:
                conn.handle_timer(self.now)

    def flight(self, sender: QuicConnection, receiver: QuicConnection,
               drop: int | None = None, order: slice = slice(None)) -> int:
        """Carry what ``sender`` has to send (but datagram ``drop``, reordered by
        ``order``); the number of datagrams sent."""
        datagrams = [d for d, _ in sender.datagrams_to_send(self.now)]
        kept = [d for i, d in enumerate(datagrams) if i != drop][order]
        for data in kept:
            receiver.receive_datagram(data, CLIENT if sender is self.client else SERVER,
                                      self.now)
        return len(datagrams)

    def request(self, payload: bytes = b"x" * 100) -> int:
        """A new stream with ``payload`` and FIN, 1 ms later (QUIC's pacing lets no
        two packets leave at the same instant)."""
        self.now += 0.001
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_stream_data(stream_id, payload, end_stream=True)
        return stream_id


def test_the_ack_of_a_request_travels_with_the_answer(pki: Pki) -> None:
    pair = Pair(pki)
    for _ in range(3):  # steady state: each of the 2 datagrams acknowledges the other
        stream_id = pair.request()
        assert pair.flight(pair.client, pair.server) == 1
        assert pair.flight(pair.server, pair.client) == 0  # nothing yet: the ACK waits
        pair.tick(0.001)
        assert pair.flight(pair.server, pair.client) == 0
        pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
        assert pair.flight(pair.server, pair.client) == 1  # answer and ACK together
        assert pair.client._loss.bytes_in_flight == 0  # the request is acknowledged


def test_a_lone_ack_waits_no_longer_than_the_ack_delay(pki: Pki) -> None:
    pair = Pair(pki)
    pair.request()
    pair.flight(pair.client, pair.server)
    due = pair.server.get_timer()
    assert due is not None and due <= pair.now + ACK_DELAY
    pair.tick(ACK_DELAY / 2)
    assert pair.flight(pair.server, pair.client) == 0
    pair.tick(ACK_DELAY / 2)
    assert pair.flight(pair.server, pair.client) == 1  # an ACK alone, within the delay
    assert pair.client._loss.bytes_in_flight == 0


def test_every_second_ack_eliciting_packet_is_acknowledged_at_once(pki: Pki) -> None:
    pair = Pair(pki)
    pair.request()
    pair.flight(pair.client, pair.server)
    pair.request()
    pair.flight(pair.client, pair.server)
    assert pair.flight(pair.server, pair.client) == 1
    assert pair.client._loss.bytes_in_flight == 0


def test_a_gap_or_reordering_is_acknowledged_at_once(pki: Pki) -> None:
    pair = Pair(pki)
    pair.request()
    first = [data for data, _ in pair.client.datagrams_to_send(pair.now)]  # held back
    pair.request()
    pair.flight(pair.client, pair.server)  # the second, after a gap
    assert pair.flight(pair.server, pair.client) == 1
    for data in first:  # the first, out of order
        pair.server.receive_datagram(data, CLIENT, pair.now)
    assert pair.flight(pair.server, pair.client) == 1
    assert pair.client._loss.bytes_in_flight == 0


def test_a_ping_is_acknowledged_at_once(pki: Pki) -> None:
    pair = Pair(pki)
    pair.client.send_ping(7)
    pair.flight(pair.client, pair.server)
    assert pair.flight(pair.server, pair.client) == 1
    assert pair.client._loss.bytes_in_flight == 0


def test_max_ack_delay_is_advertised_from_the_registry(pki: Pki) -> None:
    pair = Pair(pki)
    for conn in (pair.client, pair.server):
        assert conn._loss.max_ack_delay == timer("QUIC_MAX_ACK_DELAY")
    assert timer("QUIC_MAX_ACK_DELAY") > ACK_DELAY


def test_a_lost_request_is_retransmitted_as_before(pki: Pki) -> None:
    pair = Pair(pki)
    stream_id = pair.request()
    pair.client.datagrams_to_send(pair.now)  # lost
    received = b""
    for _ in range(20):
        pair.tick(0.05)
        pair.flight(pair.client, pair.server)
        pair.flight(pair.server, pair.client)
        while (event := pair.server.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived) and event.stream_id == stream_id:
                received += event.data
    assert received == b"x" * 100


def test_one_failing_transmit_does_not_hold_back_the_others() -> None:
    """The connections due in one event-loop turn transmit together: an exception in
    one is logged and the others still send (each used to have a callback of its own)."""
    loop = asyncio.new_event_loop()
    sent: list[str] = []

    class Conn:
        def __init__(self, name: str) -> None:
            self.name = name

        def transmit(self) -> None:
            if self.name == "broken":
                raise RuntimeError("boom")
            sent.append(self.name)

    try:
        turn = EndOfTurn(loop)
        for name in ("first", "broken", "last"):
            turn.add(Conn(name).transmit)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert sent == ["first", "last"]


def test_work_added_while_a_reader_holds_the_turn_runs_when_it_is_done() -> None:
    """A socket's reader holds the end-of-turn work (driver.EndOfTurn.held): what it adds
    runs at its release, in the same loop callback, each piece once; work already given
    a loop callback runs then too, not twice."""
    loop = asyncio.new_event_loop()
    ran: list[str] = []
    try:
        turn = EndOfTurn(loop)
        turn.add(lambda: ran.append("before"))
        assert not turn.held
        turn.held = True  # a reader holds it
        for name in ("first", "second"):
            work = (lambda n: lambda: ran.append(n))(name)
            turn.add(work)
            turn.add(work)
        assert ran == []
        turn.release()
        assert ran == ["before", "first", "second"]
        assert all(h.cancelled() for h in loop._ready)  # type: ignore[attr-defined]
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == ["before", "first", "second"]
        turn.add(lambda: ran.append("later"))  # not held: a loop callback of its own
        assert ran[-1] == "second"
        loop.run_until_complete(asyncio.sleep(0))
        assert ran[-1] == "later"
    finally:
        loop.close()
