"""Leaner QUIC connections (transport/lean.py): what a connection gives back once its
handshake is over, and that it still carries transactions afterwards."""

from __future__ import annotations

import dataclasses
import random

import pytest
from aioquic import tls
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicErrorCode, QuicPacketType
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography.hazmat.primitives.serialization import Encoding
from test_transport_acks import Pair
from transport_support import Pki

from dmscproto.codec.registry import ALPN
from dmscproto.transport.fastpath import FastPathConnection
from dmscproto.transport.lean import (
    _HANDLERS,
    QUIC_CONNECTION_IDS,
    LeanQuicConnection,
    _Fifo,
    _fifo,
    _Recovery,
    _SpentServerTls,
)


def test_released_handshake_state_and_the_connection_still_works(pki: Pki) -> None:
    pair = Pair(pki)
    der = pair.server.tls._peer_certificate.public_bytes(Encoding.DER)
    for conn in (pair.client, pair.server):
        conn.release_handshake_state()
        assert all(buf.capacity <= 64 for buf in conn._crypto_buffers.values())
        assert len(conn._host_cids) <= QUIC_CONNECTION_IDS
        assert isinstance(conn._events, _Fifo)
        assert isinstance(conn._network_paths[0].local_challenges, _Fifo)
    assert pair.client.tls._x25519_private_key is None and not pair.client.tls._ec_private_keys
    assert type(pair.server.tls) is _SpentServerTls  # its keys, transcript, schedule: gone
    assert pair.server.tls.alpn_negotiated == ALPN and pair.server.peer_identity is not None
    assert pair.server._cryptos[tls.Epoch.INITIAL] is pair.server._cryptos[tls.Epoch.HANDSHAKE]
    assert pair.server.tls._peer_certificate.public_bytes(Encoding.DER) == der
    stream_id = pair.request(b"after the handshake")
    pair.flight(pair.client, pair.server)
    received = [e for e in iter(pair.server.next_event, None)
                if isinstance(e, events.StreamDataReceived)]
    assert received[-1].data == b"after the handshake" and received[-1].stream_id == stream_id
    pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
    pair.flight(pair.server, pair.client)
    answers = [e for e in iter(pair.client.next_event, None)
               if isinstance(e, events.StreamDataReceived)]
    assert answers[-1].data == b"answer" and answers[-1].end_stream


@pytest.mark.parametrize("algorithm", ["reno", "cubic"])
def test_loss_recovery_is_made_as_aioquic_makes_it(algorithm: str) -> None:
    """A lean connection's loss recovery is a _Recovery (made anew: see lean._recovery)
    with the attributes aioquic gives its own connection's, in their order (then its count
    of losses), of the same values: its own congestion control (with its class's
    ``bytes_in_flight`` and ``ssthresh`` set on it) and pacer as aioquic makes them, the
    connection's probe callback and logger."""
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                               congestion_control_algorithm=algorithm, initial_rtt=0.05)
    ref = QuicConnection(configuration=config)._loss
    conn = LeanQuicConnection(configuration=config)
    loss = conn._loss
    assert type(loss) is _Recovery and loss.losses == 0
    assert list(vars(loss)) == [*vars(ref), "losses"]  # its own count last
    for name, want in vars(ref).items():
        got = getattr(loss, name)
        if name in ("_cc", "_pacer"):
            assert type(got) is type(want) and got is not want
            expected = dict(vars(want))
            if name == "_cc":  # Reno's are class defaults
                expected.setdefault("bytes_in_flight", 0)
                expected.setdefault("ssthresh", None)
            assert {k: v for k, v in vars(got).items() if k != "_rtt_monitor"} == {
                k: v for k, v in expected.items() if k != "_rtt_monitor"}
        elif name == "_send_probe":
            assert got == conn._send_probe
        elif name == "_logger":
            assert got is conn._logger
        else:
            assert (got, type(got)) == (want, type(want)), name


def test_one_frame_handler_table_for_every_connection(pki: Pki) -> None:
    first, second = Pair(pki), Pair(pki)
    tables = {id(getattr(c, _HANDLERS)._table)
              for c in (first.client, first.server, second.client, second.server)}
    assert len(tables) == 1


@pytest.mark.parametrize("released", [False, True])
def test_a_tls_message_after_the_handshake_is_refused_as_by_aioquic(pki: Pki,
                                                                     released: bool) -> None:
    """A QUIC server receives no TLS message after its handshake (RFC 9001 Sections 4.4
    and 6): the spent context refuses one (here a KeyUpdate) as aioquic's context does,
    closing the connection with unexpected_message."""
    pair = Pair(pki)
    if released:
        pair.server.release_handshake_state()
    pair.client._crypto_streams[tls.Epoch.ONE_RTT].sender.write(b"\x18\x00\x00\x01\x00")
    pair.now += 0.001
    pair.flight(pair.client, pair.server)
    closing = pair.server._close_event
    assert closing is not None and closing.error_code == \
        QuicErrorCode.CRYPTO_ERROR + tls.AlertDescription.unexpected_message


def test_a_bounded_fifo_drops_its_oldest() -> None:
    """Path challenges sent are remembered as aioquic's deque(maxlen=...) would."""
    window = _fifo([b"a", b"b"], maxlen=2)
    window.append(b"c")
    assert window == [b"b", b"c"] and window.popleft() == b"b"


def test_a_quiet_receipt_needs_no_transmit_but_a_ping_or_a_loss_does(pki: Pki) -> None:
    """transmit_due: STREAM and ACK frames received oblige no packet at once (the answer
    and the delayed ACK come later); a PING does, and so does an ACK that declares a
    packet lost, whose data the transmit that follows sends again."""
    pair = Pair(pki)
    first = pair.request()
    pair.flight(pair.client, pair.server)
    assert not pair.server.transmit_due(pair.now)  # a request: nothing to send yet
    pair.server.send_stream_data(first, b"lost answer", end_stream=True)
    pair.server.datagrams_to_send(pair.now)  # lost
    pair.now += 0.05  # past the time threshold of loss detection
    second = pair.request()
    pair.flight(pair.client, pair.server)
    pair.server.send_stream_data(second, b"answer", end_stream=True)
    pair.flight(pair.server, pair.client)  # after a gap: the client's ACK goes at once
    assert pair.flight(pair.client, pair.server) == 1
    assert pair.server.transmit_due(pair.now)  # its ACK declared the first answer lost
    pair.flight(pair.server, pair.client)
    answers = {e.stream_id: e.data for e in iter(pair.client.next_event, None)
               if isinstance(e, events.StreamDataReceived)}
    assert answers == {first: b"lost answer", second: b"answer"}
    pair.tick(0.1)
    pair.flight(pair.server, pair.client)
    pair.flight(pair.client, pair.server)
    assert not pair.server.transmit_due(pair.now)
    pair.client.send_ping(3)
    pair.flight(pair.client, pair.server)
    assert pair.server.transmit_due(pair.now)
    assert pair.flight(pair.server, pair.client) == 1
    assert not pair.server.transmit_due(pair.now)  # the transmit took care of it


def test_a_pass_builds_no_empty_packet_after_one_with_room(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """aioquic starts a 1-RTT packet after each until one is empty; an established
    connection starts another only when the last is full: one packet for a small answer,
    and a large one still goes whole, over as many packets as it takes."""
    started: list[QuicPacketType] = []
    start = QuicPacketBuilder.start_packet

    def counted(builder: QuicPacketBuilder, packet_type: QuicPacketType,
                crypto: CryptoPair) -> None:
        started.append(packet_type)
        start(builder, packet_type, crypto)

    monkeypatch.setattr(QuicPacketBuilder, "start_packet", counted)
    # aioquic's writer (the fast path writes a common pass without it: test_fastpath)
    monkeypatch.setattr(FastPathConnection, "_send_short", lambda self, now: None)
    pair = Pair(pki)
    small, large = pair.request(), pair.request()
    pair.flight(pair.client, pair.server)
    pair.server.send_stream_data(small, b"answer", end_stream=True)
    started.clear()
    assert pair.flight(pair.server, pair.client) == 1
    assert started == [QuicPacketType.ONE_RTT]  # not a second, empty one
    answer = bytes(range(256)) * 80  # 20,480 octets: about 18 full packets
    pair.server.send_stream_data(large, answer, end_stream=True)
    received = b""
    for _ in range(20):
        pair.flight(pair.server, pair.client)
        pair.flight(pair.client, pair.server)
        received += b"".join(e.data for e in iter(pair.client.next_event, None)
                             if isinstance(e, events.StreamDataReceived)
                             and e.stream_id == large)
        pair.tick(0.01)
    assert received == answer


def test_max_streams_travels_with_an_answer(pki: Pki) -> None:
    """A stream credit (MAX_STREAMS, about every 64 transactions) goes in the packet of
    an answer, not in a datagram of its own after it."""
    pair = Pair(pki)
    credit = pair.client._remote_max_streams_bidi
    for _ in range(3 * credit // 2):
        stream_id = pair.request()
        assert pair.flight(pair.client, pair.server) == 1
        pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
        assert pair.flight(pair.server, pair.client) == 1
    assert pair.client._remote_max_streams_bidi > 3 * credit // 2  # credit was raised


def test_the_idle_timeout_is_aioquic_s(pki: Pki) -> None:
    """LeanQuicConnection's ``_idle_timeout`` (with ``lean.probe_timeout``) against
    aioquic's, differential over random RTT estimates (none yet too), ends' idle
    timeouts and max_ack_delay, ties included: the same value, of the same type."""
    rnd = random.Random(18)
    conn = Pair(pki).server
    loss = conn._loss
    larger = 0
    for _ in range(3000):
        conn._configuration = dataclasses.replace(
            conn._configuration, idle_timeout=rnd.choice((0.5, 3.0, 30.0, 60.0)))
        conn._remote_max_idle_timeout = rnd.choice((None, 0.3, 3.0, 30.0, 90.0))
        loss._rtt_initialized = rnd.random() < 0.9
        loss._rtt_initial = rnd.choice((0.1, 0.333, 10, 20.0))  # 3 PTOs: 60, a tie
        loss._rtt_smoothed = rnd.choice((0.0002, 0.01, rnd.uniform(0, 12)))
        loss._rtt_variance = rnd.choice((0.0, 0.00025, 0.0001, rnd.uniform(0, 3)))
        loss.max_ack_delay = rnd.choice((0.0, 0.025, 0.5))
        got, want = conn._idle_timeout(), QuicConnection._idle_timeout(conn)
        assert (got, type(got)) == (want, type(want))
        larger += want > min(conn._configuration.idle_timeout,
                             conn._remote_max_idle_timeout or 1e9)
    assert 100 < larger < 2900  # three PTOs above the idle timeouts, and below
