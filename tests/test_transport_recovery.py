"""Loss recovery and the timer in fewer steps (transport/lean.py's
``_Recovery.on_ack_range``, ``probe_timeout`` and the idle timeout, transport/fastpath.py's
``_handle_ack`` and ``get_timer``), differential: aioquic's code and the short one on
the same input leave the same state, float for float (RFC 9002)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicSentPacket
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStreamSender
from conftest import Spy
from test_transport_acks import SERVER, Pair
from transport_support import Pki

from dmscproto.transport.fastpath import FastPathConnection
from dmscproto.transport.lean import _Recovery, probe_timeout
from dmscproto.transport.lean import _recovery as lean_recovery
from dmscproto.transport.tls import DmscQuicConnection


def _recovery(validated: bool, algorithm: str) -> tuple[_Recovery, list[Any]]:
    """A confirmed connection's loss recovery with one (application) space, and the
    log its packets' delivery handlers write to."""
    loss = lean_recovery(QuicPacketRecovery(
        congestion_control_algorithm=algorithm, initial_rtt=0.1, max_datagram_size=1200,
        peer_completed_address_validation=validated, send_probe=lambda: None))
    loss.handshake_confirmed = True
    loss.spaces = [QuicPacketSpace(is_application_data=True)]
    return loss, []


def _state(loss: _Recovery, log: list[Any]) -> tuple[Any, ...]:
    space = loss.spaces[0]
    mine = {k: v for k, v in vars(loss).items() if k not in ("_cc", "_pacer", "spaces")}
    del mine["_send_probe"]
    cc = dict(vars(loss._cc), _rtt_monitor=vars(loss._cc._rtt_monitor))
    return (sorted(mine.items()), sorted(cc.items()),
            sorted(vars(loss._pacer).items()), list(space.sent_packets),
            space.largest_acked_packet, space.loss_time, space.ack_eliciting_in_flight,
            list(log))


@pytest.mark.parametrize("seed", range(15))
def test_an_ack_of_one_range_leaves_what_aioquic_leaves(seed: int) -> None:
    """Random flights of packets (ack-eliciting or not, in flight or not) and random
    one-range ACKs: in order, late, repeated, reordered, leaving gaps (packet and time
    threshold losses), after probe timeouts, with the pacer's bucket spent or not and
    congestion windows small and large; aioquic's ``on_ack_received`` on one recovery,
    ``on_ack_range`` on the other, and their whole state compared after each.  The loss
    detection time is aioquic's too, throughout.  Reno (whose steps ``on_ack_range``
    takes itself), Cubic for a few seeds."""
    rnd = random.Random(seed)
    validated = seed % 4 != 3
    algorithm = "cubic" if seed % 5 == 4 else "reno"
    ref, ref_log = _recovery(validated, algorithm)
    fast, fast_log = _recovery(validated, algorithm)
    senders: list[tuple[QuicStreamSender, QuicStreamSender]] = []
    now, number, losses = 1000.0, 0, 0
    for _ in range(400):
        now += rnd.choice((0.0, 0.0001, 0.002, 0.03, 0.3))
        if rnd.random() < 0.55 or not number:
            for _ in range(rnd.randint(1, 4)):
                eliciting = rnd.random() < 0.8
                in_flight, size = eliciting or rnd.random() < 0.5, rnd.randint(30, 1200)
                if (not senders or senders[-1][0].buffer_is_empty  # a new stream's data
                        or senders[-1][0].reset_pending):
                    senders.append((QuicStreamSender(0, True), QuicStreamSender(0, True)))
                    data, end = b"x" * rnd.randint(0, 3000), rnd.random() < 0.9
                    for sender in senders[-1]:
                        sender.write(data, end_stream=end)
                chunk = rnd.randint(50, 600)
                frames = [sender.get_frame(chunk) for sender in senders[-1]]
                if rnd.random() < 0.03:  # its data sent so far still to be acknowledged
                    for sender in senders[-1]:
                        sender.reset(error_code=7)
                for loss, log, sender, frame in zip((ref, fast), (ref_log, fast_log),
                                                    senders[-1], frames, strict=True):
                    handlers = [(lambda state, n, log=log: log.append((state, n)), (number,))]
                    if frame is not None and eliciting:
                        handlers.append((sender.on_data_delivery, (
                            frame.offset, frame.offset + len(frame.data), frame.fin)))
                    loss.on_packet_sent(packet=QuicSentPacket(
                        epoch=tls.Epoch.ONE_RTT, in_flight=in_flight,
                        is_ack_eliciting=eliciting, is_crypto_packet=False,
                        packet_number=number, packet_type=QuicPacketType.ONE_RTT,
                        sent_time=now, sent_bytes=size,
                        delivery_handlers=handlers), space=loss.spaces[0])
                number += 1
            continue
        if rnd.random() < 0.05:
            ref._pto_count = fast._pto_count = rnd.randint(1, 3)
        if rnd.random() < 0.05:  # a window the pacer's bucket is capped in, or not
            ref._cc.congestion_window = fast._cc.congestion_window = rnd.choice(
                (2400, 40000, 120000))
        ref._pacer.bucket_time = fast._pacer.bucket_time = rnd.choice((0.0, 0.0005, 0.1))
        largest = rnd.choice((number - 1, number - 1, rnd.randrange(number)))
        lowest = max(0, largest - rnd.choice((0, 1, 2, largest)))
        delay = rnd.choice((0.0, 0.001, 0.03))
        ref.on_ack_received(ack_rangeset=RangeSet([range(lowest, largest + 1)]),
                            ack_delay=delay, now=now, space=ref.spaces[0])
        fast.on_ack_range(lowest, largest, delay, now, fast.spaces[0])
        assert _state(fast, fast_log) == _state(ref, ref_log)
        assert [vars(f) for _, f in senders] == [vars(r) for r, _ in senders]
        losses += any(state == QuicDeliveryState.LOST for state, _ in fast_log)
    assert fast._rtt_initialized and losses  # RTT samples taken, packets declared lost
    assert sum(f.is_finished for _, f in senders) > 1  # streams wholly acknowledged


@pytest.mark.parametrize(("rtt", "window"), [(3.0, 2400), (0.0001, 10**9), (0.05, 40000)])
def test_the_pacer_s_limits_are_aioquic_s(rtt: float, window: int) -> None:
    """The pacer's rate as ``on_ack_range`` sets it at an RTT sample, against aioquic's,
    at its limits: one packet a second at most (a small window over a long RTT), its
    bucket at most 16 packets (a large window), and in between."""
    ref, ref_log = _recovery(True, "reno")
    fast, fast_log = _recovery(True, "reno")
    for loss in (ref, fast):
        loss._cc.congestion_window = window
        loss._cc.ssthresh = window  # no slow start: the window stays as set
        loss.on_packet_sent(packet=QuicSentPacket(
            epoch=tls.Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
            is_crypto_packet=False, packet_number=0, packet_type=QuicPacketType.ONE_RTT,
            sent_time=1000.0, sent_bytes=1200, delivery_handlers=[]), space=loss.spaces[0])
    ref.on_ack_received(ack_rangeset=RangeSet([range(0, 1)]), ack_delay=0.0,
                        now=1000.0 + rtt, space=ref.spaces[0])
    fast.on_ack_range(0, 0, 0.0, 1000.0 + rtt, fast.spaces[0])
    assert _state(fast, fast_log) == _state(ref, ref_log)
    assert fast._rtt_initialized


def _established(pki: Pki) -> Pair:
    """A pair past its handshake, each end's congestion window (and pacing rate) set
    alike in every run: it counts the handshake's octets, which vary by a few from one
    run to the next."""
    pair = Pair(pki)
    for conn in (pair.client, pair.server):
        conn.release_handshake_state()
        while conn.next_event() is not None:
            pass
        assert conn._loss.bytes_in_flight == 0
        loss = conn._loss
        loss._cc.congestion_window = 12000
        loss._pacer.update_rate(congestion_window=12000, smoothed_rtt=loss._rtt_smoothed)
    return pair


def _ack_conversation(pki: Pki, monkeypatch: pytest.MonkeyPatch, spy: Spy,
                      fast: bool) -> list[Any]:
    """Both ends' loss recovery and timers after every step of a conversation with
    lost, reordered and late packets; aioquic's ACK handler for every ACK unless
    ``fast``.  Each end's timer is checked against aioquic's ``get_timer`` at each
    step."""
    if not fast:
        monkeypatch.setattr(FastPathConnection, "_handle_ack",
                            lambda self, *args: self._handle_ack_frame(*args))
    taken = spy(_Recovery, "on_ack_range")
    pair = _established(pki)
    seen: list[Any] = []

    def state() -> None:
        for conn in (pair.client, pair.server):
            loss = conn._loss
            space = conn._spaces[tls.Epoch.ONE_RTT]
            due = conn.get_timer()
            loss_at = conn._loss_at
            assert due == QuicConnection.get_timer(conn) and conn._loss_at == loss_at
            assert conn._idle_timeout() == QuicConnection._idle_timeout(conn)
            seen.append((due, loss_at, loss.bytes_in_flight, loss.congestion_window,
                         loss._rtt_smoothed, loss._rtt_variance, loss._rtt_min,
                         loss._pto_count, loss._pacer.packet_time, space.loss_time,
                         space.largest_acked_packet, list(space.sent_packets),
                         sorted(conn._streams), conn._close_at))

    rnd = random.Random(7)
    for n in range(120):
        stream_id = pair.request(b"request %d" % n)
        pair.flight(pair.client, pair.server)
        state()
        pair.server.send_stream_data(stream_id, b"answer %d" % n, end_stream=True)
        if n % 11 == 3:  # two answers at once, the ACK of them reordered
            other = pair.server.get_next_available_stream_id()
            pair.server.send_stream_data(other, b"push %d" % n, end_stream=True)
        pair.flight(pair.server, pair.client, drop=0 if n % 13 == 7 else None,
                    order=slice(None, None, -1))
        state()
        pair.tick(rnd.choice((0.0, 0.001, 0.01, 0.2)))
        pair.flight(pair.client, pair.server, drop=0 if n % 17 == 5 else None,
                    order=slice(None, None, -1))  # an ACK lost now and then
        pair.flight(pair.server, pair.client)
        state()
    monkeypatch.undo()
    assert taken if fast else not taken
    assert all(isinstance(c._loss, _Recovery) and c._loss.losses
               for c in (pair.client, pair.server))  # both declared packets lost
    return seen


def test_acks_over_a_conversation_leave_what_aioquic_leaves(
        pki: Pki, monkeypatch: pytest.MonkeyPatch, spy: Spy) -> None:
    """The ACK fast path and aioquic's handler, each over the same conversation (losses,
    reordering, timeouts): the same recovery state, timers and streams at every step;
    and at every step of both, the timer is aioquic's."""
    assert (_ack_conversation(pki, monkeypatch, spy, fast=True)
            == _ack_conversation(pki, monkeypatch, spy, fast=False))


@pytest.mark.parametrize("seed", range(4))
def test_the_timer_is_aioquic_s(pki: Pki, seed: int) -> None:
    """An established connection's timer and loss detection time (``_loss_at``, which
    its ``handle_timer`` reads) against aioquic's ``get_timer``, over random states of
    what they depend on: each space's ACK and loss times and ack-eliciting packets in
    flight, the RTT estimate, PTO backoff, the last ack-eliciting packet's time, pacing
    and idle timers; each timer the earliest in some of them."""
    conn = _established(pki).server
    loss = conn._loss
    rnd = random.Random(seed)
    now = 1000.0
    earliest = set()
    for _ in range(300):
        for space in loss.spaces:
            space.ack_at = rnd.choice((None, now + rnd.random() * 0.05))
            space.loss_time = rnd.choice((None, None, now + rnd.random() * 0.05))
            space.ack_eliciting_in_flight = rnd.choice((0, 0, 1, 3))
        loss._rtt_initialized = rnd.random() < 0.9
        loss._rtt_smoothed = rnd.random() * 0.05
        loss._rtt_variance = rnd.choice((0.0, 0.0002, rnd.random() * 0.02))
        loss._pto_count = rnd.choice((0, 0, 1, 2, 5))
        loss._time_of_last_sent_ack_eliciting_packet = now - rnd.random() * 0.1
        conn._pacing_at = rnd.choice((None, now + rnd.random() * 0.01))
        conn._close_at = now + rnd.choice((0.01, 60.0))
        due = conn.get_timer()
        loss_at = conn._loss_at
        assert due == QuicConnection.get_timer(conn) and loss_at == conn._loss_at
        earliest.add(next(name for name, at in (
            ("idle", conn._close_at), ("loss", loss_at), ("pacing", conn._pacing_at),
            *(("ack", space.ack_at) for space in loss.spaces)) if at == due))
    assert earliest == {"idle", "loss", "pacing", "ack"}


def test_the_spaces_discarded_change_no_timer(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss recovery drops the Initial and Handshake spaces once discarded (lean's
    ``_Recovery.discard_space``): over a handshake with lost and late packets (probe
    timeouts, CRYPTO data sent again) and a conversation after it, each end's timer and
    loss detection time, wherever asked, are those aioquic's ``get_timer`` finds over all
    three spaces."""
    spaces_seen = set()
    timer = FastPathConnection.get_timer

    def checked(conn: FastPathConnection) -> float | None:
        due, loss_at = timer(conn), conn._loss_at
        loss = conn._loss
        kept = loss.spaces
        spaces_seen.add(len(kept))
        loss.spaces = list(conn._spaces.values())
        try:
            assert QuicConnection.get_timer(conn) == due and conn._loss_at == loss_at
        finally:
            loss.spaces = kept
        return due

    monkeypatch.setattr(FastPathConnection, "get_timer", checked)
    pair = Pair.__new__(Pair)
    pair.now = 1000.0
    pair.client = DmscQuicConnection(configuration=pki.agent.configuration(is_client=True),
                                     verifier=pki.agent.verifier())
    pair.server = DmscQuicConnection(
        configuration=pki.gateway.configuration(is_client=False),
        verifier=pki.gateway.verifier(),
        original_destination_connection_id=pair.client.original_destination_connection_id)
    pair.client.connect(SERVER, now=pair.now)
    for n in range(40):  # the handshake, a datagram lost now and then
        pair.flight(pair.client, pair.server, drop=0 if n in (2, 5) else None)
        pair.flight(pair.server, pair.client, drop=0 if n in (0, 1, 3) else None)
        pair.tick(0.05)
        if n > 20:
            stream_id = pair.request(b"request %d" % n)
            pair.flight(pair.client, pair.server, drop=0 if n % 7 == 0 else None)
            if stream_id in pair.server._streams:  # not lost
                pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
    assert pair.client._handshake_confirmed and pair.server._handshake_confirmed
    assert {1, 3} <= spaces_seen


def test_the_pto_and_the_idle_timeout_are_aioquic_s_at_the_edges(pki: Pki) -> None:
    """The idle timeout (RFC 9000, Section 10.1) and the PTO period it is bounded by, as
    aioquic computes them: the peer's timeout absent, shorter or longer than this
    end's; no RTT sample yet, RTT variance under the timer granularity or not, and a
    PTO long enough that three of them exceed the idle timeout."""
    conn = _established(pki).server
    loss = conn._loss
    seen = set()
    for remote in (None, 0.05, 1.0, conn._configuration.idle_timeout, 500.0):
        conn._remote_max_idle_timeout = remote
        for initialized, smoothed, variance in ((False, 0.0, 0.0), (True, 0.01, 0.0001),
                                                (True, 0.01, 0.0), (True, 2.0, 1.5),
                                                (True, 40.0, 0.2)):
            loss._rtt_initialized = initialized
            loss._rtt_smoothed, loss._rtt_variance = smoothed, variance
            assert probe_timeout(loss) == loss.get_probe_timeout()
            assert conn._idle_timeout() == QuicConnection._idle_timeout(conn)
            seen.add(conn._idle_timeout())
    assert len(seen) > 5  # bounded by either end's timeout, or by the PTO


ACKS = {
    "one range": b"\x02\x05\x00\x00\x00",
    "two ranges": b"\x02\x05\x00\x01\x00\x00\x01",
    "a negative packet number": b"\x02\x05\x00\x00\x3f",
    "ack_ecn": b"\x03\x05\x00\x00\x00\x01\x02\x03",
    "truncated": b"\x02\x05\x00",
    "truncated second range": b"\x02\x05\x00\x01\x00",
}


@pytest.mark.parametrize("name", ACKS)
def test_an_ack_frame_ends_as_in_aioquic(pki: Pki, name: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An ACK frame of each kind, to a server with packets in flight: the fast handler
    and aioquic's leave the same recovery state, or close the connection alike."""
    def outcome(fast: bool) -> tuple[Any, ...]:
        if not fast:
            monkeypatch.setattr(FastPathConnection, "_handle_ack",
                                lambda self, *args: self._handle_ack_frame(*args))
        pair = _established(pki)
        server = pair.server
        for n in range(6):  # server packets 0..5 of the 1-RTT space in flight
            server.send_stream_data(server.get_next_available_stream_id(), b"push %d" % n,
                                    end_stream=True)
            server.datagrams_to_send(pair.now)
            pair.now += 0.001
        space = server._spaces[tls.Epoch.ONE_RTT]
        sent = list(space.sent_packets)
        number = space.largest_received_packet + 1
        pair.client._packet_number = number + 1
        header = (b"\x41" + pair.client._peer_cid.cid + (number & 0xFFFF).to_bytes(2, "big"))
        payload = ACKS[name].replace(b"\x05", bytes([sent[-1]]), 1)
        server.receive_datagram(pair.client._cryptos[tls.Epoch.ONE_RTT].encrypt_packet(
            header, payload.ljust(24, b"\x00"), number), ("10.0.0.1", 4433), pair.now)
        close = server._close_event
        monkeypatch.undo()
        return ((close.error_code, close.frame_type, close.reason_phrase) if close else None,
                list(space.sent_packets), space.largest_acked_packet,
                server._loss.bytes_in_flight, server._loss._rtt_smoothed, server.get_timer())

    assert outcome(fast=True) == outcome(fast=False)
