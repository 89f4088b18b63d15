"""The 1-RTT fast path (transport/fastpath.py): taken in the common case, with a stock
aioquic peer too, and it ends every packet as aioquic's own code does (differential:
the same packets to a connection with the fast path and to one without)."""

from __future__ import annotations

import dataclasses
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.buffer import size_uint_var
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection, QuicReceiveContext
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicLoggerTrace
from aioquic.quic.packet import QuicPacketType, QuicProtocolVersion
from aioquic.quic.packet_builder import QuicDeliveryState, QuicSentPacket
from aioquic.quic.stream import QuicStream
from conftest import Spy
from test_transport_acks import CLIENT, Pair
from transport_support import Pki

from dmscproto.transport import fastpath
from dmscproto.transport.fastpath import FastPathConnection
from dmscproto.transport.tls import DmscQuicConnection


def _sealed(pair: Pair, payload: bytes, first: int = 0x41) -> bytes:
    """A 1-RTT packet from the client with ``payload`` as its frames (padded for the
    header protection sample), first byte ``first``, the next packet number."""
    client, server = pair.client, pair.server
    number = server._spaces[tls.Epoch.ONE_RTT].largest_received_packet + 1
    client._packet_number = number + 1
    header = bytes([first]) + client._peer_cid.cid + (number & 0xFFFF).to_bytes(2, "big")
    return client._cryptos[tls.Epoch.ONE_RTT].encrypt_packet(
        header, payload.ljust(24, b"\x00"), number)


def _outcome(pair: Pair, payload: bytes, first: int = 0x41) -> tuple[Any, ...]:
    """What the server makes of one crafted packet: its close (code, frame, reason), the
    events, and what it records for acknowledgement."""
    server = pair.server
    space = server._spaces[tls.Epoch.ONE_RTT]
    largest = space.largest_received_packet
    data = _sealed(pair, payload, first)
    server.receive_datagram(data, CLIENT, pair.now)
    server.receive_datagram(data, CLIENT, pair.now)  # a duplicate: ignored by both
    close = server._close_event
    got = [(type(e).__name__, getattr(e, "stream_id", None), getattr(e, "data", None))
           for e in iter(server.next_event, None)]
    return ((close.error_code, close.frame_type, close.reason_phrase) if close else None,
            got, space.largest_received_packet - largest, space.ack_at is not None,
            server._state.name)


def _established(pki: Pki, fast: bool) -> Pair:
    pair = Pair(pki)
    for conn in (pair.client, pair.server):
        conn.release_handshake_state()
        while conn.next_event() is not None:
            pass
    if not fast:  # aioquic's own receive path, for comparison
        pair.server._one_rtt = lambda: None  # type: ignore[method-assign]
    return pair


PAYLOADS = {
    "stream": (b"\x0b\x00\x05hello", 0x41),
    "ping": (b"\x01", 0x41),
    "padding only": (b"", 0x41),
    "unknown frame": (b"\x21", 0x41),
    "truncated stream": (b"\x0b\x00\x40\x30", 0x41),
    "handshake done from a client": (b"\x1e", 0x41),
    "reserved bits": (b"\x01", 0x41 | 0x18),
    "ack of a packet never sent": (b"\x02\x32\x00\x00\x00", 0x41),
    "max data": (b"\x10\x44\x00", 0x41),
    "key phase flipped (undecryptable)": (b"\x01", 0x41 | 0x04),
}


@pytest.mark.parametrize("name", PAYLOADS)
def test_a_packet_ends_as_in_aioquic(pki: Pki, name: str, spy: Spy) -> None:
    payload, first = PAYLOADS[name]
    taken = spy(FastPathConnection, "_receive_short")
    with_fast, without = _established(pki, fast=True), _established(pki, fast=False)
    taken.clear()
    fast = _outcome(with_fast, payload, first)
    assert len(taken) == 2  # both copies went the fast way
    assert fast == _outcome(without, payload, first)
    assert len(taken) == 2


#: Frames a 1-RTT payload is made of in the test below: ack-eliciting or not, probing
#: or not (RFC 9000, Sections 13.2 and 9.1), and ones that end the connection.
FRAMES = [b"\x00", b"\x00\x00\x00", b"\x01", b"\x02\x00\x00\x00\x00", b"\x10\x44\x00",
          b"\x1a" + bytes(range(8)), b"\x21", b"\x1e", b"\x02\x00\x00\x01"]


@pytest.mark.parametrize("seed", range(4))
def test_a_payload_s_frames_are_taken_as_aioquic_takes_them(pki: Pki, seed: int) -> None:
    """Random 1-RTT payloads (ACK, STREAM, PADDING, PING, MAX_DATA, PATH_CHALLENGE, an
    unknown frame, a frame not allowed, a truncated one) to the fast path's frame loop
    (``_payload_received``) and to aioquic's, on two connections in the same state: the
    same answer (ack-eliciting, probing) or the same error, and the same events."""
    rnd = random.Random(seed)
    fast, slow = _established(pki, fast=True), _established(pki, fast=True)
    kinds = set()
    for n in range(150):
        frames = [rnd.choice(FRAMES) for _ in range(rnd.randint(0, 4))]
        if rnd.random() < 0.4:  # a STREAM frame: a new stream of the peer's, with FIN
            frames.insert(rnd.randint(0, len(frames)),
                          b"\x0b" + (0x4000 | 4 * n).to_bytes(2, "big") + b"\x02ok")
        outcomes = []
        for pair, loop in ((fast, type(fast.server)._payload_received),
                           (slow, QuicConnection._payload_received)):
            server = pair.server
            context = QuicReceiveContext(
                epoch=tls.Epoch.ONE_RTT, host_cid=server.host_cid,
                network_path=server._network_paths[0], quic_logger_frames=None,
                time=pair.now, version=None)
            try:
                got: Any = loop(server, context, b"".join(frames))
            except fastpath.QuicConnectionError as exc:
                got = (exc.error_code, exc.frame_type, exc.reason_phrase)
            outcomes.append((got, [vars(e) for e in iter(server.next_event, None)]))
        assert outcomes[0] == outcomes[1]
        kinds.add(repr(outcomes[0][0]))
    assert {"(True, False)", "(False, False)", "(False, True)", "(True, True)"} <= kinds


def test_a_stock_aioquic_client_is_served_on_the_fast_path(
        pki: Pki, monkeypatch: pytest.MonkeyPatch, spy: Spy) -> None:
    taken = spy(FastPathConnection, "_receive_short")
    monkeypatch.setattr("test_transport_acks.DmscQuicConnection", _StockClientFirst(pki))
    pair = Pair(pki)
    assert type(pair.client) is QuicConnection
    for n in range(3):
        stream_id = pair.request(b"request %d" % n)
        pair.flight(pair.client, pair.server)
        got = [e for e in iter(pair.server.next_event, None)
               if isinstance(e, events.StreamDataReceived)]
        assert got[-1].data == b"request %d" % n and got[-1].end_stream
        pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
        pair.flight(pair.server, pair.client)
        pair.tick(0.03)  # the stock client acknowledges on its own timer
        pair.flight(pair.client, pair.server)
    assert len(taken) >= 6
    assert pair.server._loss.bytes_in_flight == 0  # its answers acknowledged
    assert pair.server._close_event is None


class _StockClientFirst:
    """Stands for DmscQuicConnection in :class:`Pair`: the first connection made (the
    client) is aioquic's own, with the agent's certificate; the server is ours."""

    def __init__(self, pki: Pki) -> None:
        from dmscproto.transport.tls import DmscQuicConnection

        self._made = 0
        self._ours = DmscQuicConnection

    def __call__(self, **kwargs: Any) -> QuicConnection:
        self._made += 1
        if self._made == 1:
            return QuicConnection(configuration=kwargs["configuration"])
        return self._ours(**kwargs)


def _record(pair: Pair, monkeypatch: pytest.MonkeyPatch,
            record: Callable[[str, bytes, int, bytes], None]) -> None:
    """Have ``record`` hear of every 1-RTT packet either end seals, in plaintext (side,
    header, packet number, payload), whether aioquic's writer or the fast path seals it."""
    sides = {}
    for conn in (pair.client, pair.server):
        keys = conn._cryptos[tls.Epoch.ONE_RTT]
        side = sides[id(keys.send)] = "client" if conn is pair.client else "server"

        def recorded(header: bytes, payload: bytes, number: int,
                     seal: Callable[[bytes, bytes, int], bytes] = keys.encrypt_packet,
                     side: str = side) -> bytes:
            record(side, header, number, payload)
            return seal(header, payload, number)

        keys.encrypt_packet = recorded  # type: ignore[method-assign,assignment]
    seal = fastpath._seal

    def sealed(keys: Any, header: bytes, payload: bytes, number: int) -> bytes:
        record(sides[id(keys)], header + (number & 0xFFFF).to_bytes(2, "big"), number,
               payload)
        return seal(keys, header, payload, number)

    monkeypatch.setattr(fastpath, "_seal", sealed)


def _answers_sent(pki: Pki, monkeypatch: pytest.MonkeyPatch, fast: bool) -> list[bytes]:
    """The plaintext of every 1-RTT packet a server sends to answer 40 requests at once
    (one of 3,000 octets: packets cut STREAM frames), acknowledged in turn."""
    monkeypatch.setattr(FastPathConnection, "_send_short", lambda self, now: None)
    if not fast:
        monkeypatch.setattr(FastPathConnection, "_write_stream_frame",
                            QuicConnection._write_stream_frame)
    pair = _established(pki, fast=True)
    sent: list[bytes] = []
    _record(pair, monkeypatch, lambda side, header, number, payload: (
        sent.append(payload) if side == "server" else None))
    streams = []
    for n in range(40):
        streams.append(pair.request(b"q%d" % n))
    while pair.flight(pair.client, pair.server):
        pair.tick(0.001)
    for n, stream_id in enumerate(streams):
        pair.server.send_stream_data(stream_id, b"a" * (3000 if n == 7 else 150 + n),
                                     end_stream=True)
    for _ in range(50):
        pair.flight(pair.server, pair.client)
        pair.tick(0.001)
        pair.flight(pair.client, pair.server)
    monkeypatch.undo()
    return sent


def test_a_pass_of_many_answers_sends_what_aioquic_sends(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """_write_stream_frame skips the calls that cannot write: same packets, octet for
    octet (every answer in them, and the FINs)."""
    fast = _answers_sent(pki, monkeypatch, fast=True)
    assert fast == _answers_sent(pki, monkeypatch, fast=False)
    assert sum(p.count(b"a" * 150) for p in fast) >= 39 and len(fast) > 6


def _conversation(pki: Pki, monkeypatch: pytest.MonkeyPatch, fast: bool,
                  tight: bool = False) -> tuple[list[Any], list[float]]:
    """Everything both ends of a pair send, in plaintext, and the sending state of each
    after every step, through: 80 request/answer rounds (streams discarded, stream
    credit raised), 30 requests at one instant (paced), 40 answers at once (several
    packets, paced), lone ACKs on the ACK timer, a lost MAX_DATA sent again, and a lost
    answer sent again.  ``tight``: the server's congestion window and the client's
    connection credit small, so that they cut passes."""
    if not fast:  # aioquic's writer for every pass, its streams
        monkeypatch.setattr(FastPathConnection, "_send_short", lambda self, now: None)
        for name in ("_get_or_create_stream_for_send", "_get_or_create_stream"):
            monkeypatch.setattr(FastPathConnection, name, getattr(QuicConnection, name))
        monkeypatch.setattr(FastPathConnection, "_handle_stream",
                            QuicConnection._handle_stream_frame)
    # aioquic orders streams through a set of them, hashed by address: by stream ID
    # here, so that two runs order them alike
    monkeypatch.setattr(QuicStream, "__hash__", lambda self: self.stream_id)
    pair = _established(pki, fast=True)
    if tight:
        credit = pair.client._local_max_data
        credit.value = credit.sent = pair.server._remote_max_data = credit.used + 3000
        reno = pair.server._loss._cc
        reno.congestion_window = reno.ssthresh = 1800
    seen: list[Any] = []
    timing: list[float] = []
    _record(pair, monkeypatch, lambda side, header, number, payload: seen.append(
        (side, header[0], number, payload)))

    def state() -> None:
        for conn in (pair.client, pair.server):
            space = conn._spaces[tls.Epoch.ONE_RTT]
            seen.append((conn._packet_number, conn._loss.bytes_in_flight, conn._close_at,
                         sorted(conn._streams), [s.stream_id for s in conn._streams_queue],
                         space.ack_at, conn._remote_max_data_used,
                         conn._local_max_streams_bidi.value, conn._local_max_data.sent,
                         conn._network_paths[0].bytes_sent,
                         [_sent_packet(p) for p in space.sent_packets.values()]))
            # times derived from the RTT estimate, which aioquic's own runs vary in the
            # eighth decimal place
            timing.extend((conn._pacing_at or -1.0, conn.get_timer() or -1.0,
                           conn._loss._pacer.bucket_time, conn._loss._pacer.evaluation_time))

    def answers(rounds: int) -> None:
        """The server's answers out and the client's acknowledgements back, ``rounds``
        times, the state of both ends taken after each flight."""
        for n in range(rounds):
            if tight:  # room for a packet and a bit: the window cuts the pass
                reno.congestion_window = reno.bytes_in_flight + 1500
                if n == rounds - 1:  # and less credit: flow control cuts it
                    server = pair.server
                    server._remote_max_data = server._remote_max_data_used + 900
            pair.flight(pair.server, pair.client)
            state()
            pair.tick(0.002)
            pair.flight(pair.client, pair.server)
            state()

    for n in range(80):
        stream_id = pair.request(b"request %d" % n)
        pair.flight(pair.client, pair.server)
        state()
        pair.server.send_stream_data(stream_id, b"answer %d" % n, end_stream=True)
        pair.flight(pair.server, pair.client)
        state()
    for n in range(30):  # requests from the server at one instant: paced
        stream_id = pair.server.get_next_available_stream_id()
        pair.server.send_stream_data(stream_id, b"now %d" % n, end_stream=True)
        pair.flight(pair.server, pair.client)
        state()
    for _ in range(3):
        pair.tick(0.01)
        pair.flight(pair.server, pair.client)
        pair.flight(pair.client, pair.server)
    streams = [pair.request(b"q%d" % n) for n in range(40)]
    for _ in range(5):
        pair.flight(pair.client, pair.server)
        pair.tick(0.001)
    for n, stream_id in enumerate(streams):
        pair.server.send_stream_data(stream_id, b"a" * (3000 if n == 7 else 150 + n),
                                     end_stream=True)
    answers(8)
    for size in (100, 300, 500, 700):  # rounds of 24 answers at once: stream credit
        streams = [pair.request(b"r%d" % n) for n in range(24)]
        for _ in range(3):
            pair.flight(pair.client, pair.server)
            pair.tick(0.001)
        for stream_id in streams:
            pair.server.send_stream_data(stream_id, b"b" * size, end_stream=True)
        answers(4)
    # a MAX_DATA frame lost (aioquic's handler of that): due as the next pass starts
    pair.server._on_connection_limit_delivery(QuicDeliveryState.LOST,
                                              pair.server._local_max_data)
    stream_id = pair.request(b"after a lost MAX_DATA")
    pair.flight(pair.client, pair.server)
    pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
    pair.flight(pair.server, pair.client)
    state()
    stream_id = pair.request(b"lost answer")
    pair.flight(pair.client, pair.server)
    pair.server.send_stream_data(stream_id, b"answer, lost", end_stream=True)
    pair.flight(pair.server, pair.client, drop=0)
    for _ in range(6):
        pair.tick(0.05)
        pair.flight(pair.server, pair.client)
        pair.flight(pair.client, pair.server)
        state()
    monkeypatch.undo()
    return seen, timing


def _sent_packet(packet: QuicSentPacket) -> tuple[Any, ...]:
    """What loss recovery keeps of a packet sent: its fields, and each delivery handler's
    name and arguments (a packet space, a limit by a field of theirs)."""
    return ([getattr(packet, f.name) for f in dataclasses.fields(packet)][:-2], [
        (handler.__qualname__, tuple(
            getattr(a, "is_application_data", getattr(a, "name", a)) for a in args))
        for handler, args in packet.delivery_handlers])


@pytest.mark.parametrize("suite", [tls.CipherSuite.AES_128_GCM_SHA256,
                                   tls.CipherSuite.AES_256_GCM_SHA384,
                                   tls.CipherSuite.CHACHA20_POLY1305_SHA256])
def test_a_packet_is_sealed_as_aioquic_seals_it(suite: tls.CipherSuite) -> None:
    keys = CryptoPair()
    keys.send.setup(cipher_suite=suite, secret=bytes(range(48))[:suite_hash_size(suite)],
                    version=QuicProtocolVersion.VERSION_1)
    header = bytes([0x41]) + bytes(range(8))
    for number in (0, 1, 255, 256, 65535, 65536, 70000, 2**40 + 3):
        for payload in (b"\x01\x00", bytes(range(200)), b"x" * 1180):
            assert fastpath._seal(keys.send, header, payload, number) == keys.encrypt_packet(
                header + (number & 0xFFFF).to_bytes(2, "big"), payload, number)


def suite_hash_size(suite: tls.CipherSuite) -> int:
    return tls.cipher_suite_hash(suite).digest_size


@pytest.mark.parametrize("tight", [False, True])
def test_the_common_pass_sends_what_aioquic_sends(pki: Pki, monkeypatch: pytest.MonkeyPatch,
                                                 tight: bool) -> None:
    """The send fast path (one packet: an ACK and STREAM frames) against aioquic's
    writer: the same packets, octet for octet, and the same sending state (packet
    numbers, bytes in flight, pacing and its bucket, idle timer, streams and their
    order, credit, timers) after every step of a conversation, also one where the
    congestion window and flow control cut passes."""
    taken: list[int] = []  # datagrams of each pass, -1: aioquic's writer
    short = FastPathConnection._send_short

    def spied(self: FastPathConnection, now: float) -> Any:
        sent = short(self, now)
        taken.append(-1 if sent is None else len(sent))
        return sent

    monkeypatch.setattr(FastPathConnection, "_send_short", spied)
    fast, fast_timing = _conversation(pki, monkeypatch, fast=True, tight=tight)
    assert sum(n >= 0 for n in taken) > 150 and -1 in taken  # mostly the fast way
    assert sum(n > 1 for n in taken) >= 2  # passes of several packets among them
    slow, slow_timing = _conversation(pki, monkeypatch, fast=False, tight=tight)
    assert fast == slow
    assert fast_timing == pytest.approx(slow_timing, abs=1e-6)


def _fields(stream: QuicStream) -> list[Any]:
    """Every attribute of a stream, its receiver's and its sender's, in the order set."""
    return [[(k, v) for k, v in vars(stream).items() if k not in ("receiver", "sender")],
            list(vars(stream.receiver).items()), list(vars(stream.sender).items())]


@pytest.mark.parametrize("stream_id", [0, 1, 4, 401, 2**30])
def test_a_stream_is_made_as_aioquic_makes_it(stream_id: int) -> None:
    made = fastpath._new_stream(stream_id, 1 << 20, 3 << 19)
    assert _fields(made) == _fields(QuicStream(
        stream_id=stream_id, max_stream_data_local=1 << 20, max_stream_data_remote=3 << 19))
    assert list(vars(made)) == list(vars(QuicStream()))
    made.sender.write(b"data", end_stream=True)  # its own range sets, buffers
    assert fastpath._new_stream(stream_id, 1, 1).sender._pending != made.sender._pending


def _made(made: Any) -> tuple[Any, ...]:
    """An object's class and fields, in the order they were set."""
    return type(made), list(vars(made).items())


def test_the_objects_made_per_packet_are_made_as_aioquic_makes_them(
        pki: Pki, spy: Spy) -> None:
    """What the fast path makes without ``__init__`` (fastpath._new) for a request
    received and its answer sent, the stream's event and the packet sent, and the
    receive context it hands the frame handlers (its thread's, reused): each of
    aioquic's class with the fields its ``__init__`` sets, in its order, to the same
    values."""
    pair = _established(pki, fast=True)
    server = pair.server
    frames = spy(FastPathConnection, "_handle_stream")
    stream_id = pair.request(b"a request")
    pair.flight(pair.client, pair.server)
    [(context, _type, _buf)] = frames
    assert _made(context) == _made(QuicReceiveContext(
        tls.Epoch.ONE_RTT, server.host_cid, server._network_paths[0], None, pair.now, None))
    event = server.next_event()
    assert _made(event) == _made(events.StreamDataReceived(b"a request", True, stream_id))
    server.send_stream_data(stream_id, b"an answer", end_stream=True)
    [(datagram, _addr)] = server.datagrams_to_send(pair.now)
    space = server._spaces[tls.Epoch.ONE_RTT]
    [packet] = space.sent_packets.values()
    assert _made(packet) == _made(QuicSentPacket(
        tls.Epoch.ONE_RTT, True, True, False, packet.packet_number,
        QuicPacketType.ONE_RTT, pair.now, len(datagram), packet.delivery_handlers))
    assert packet.quic_logger_frames == [] and packet.delivery_handlers


def _frame(stream_id: int, data: bytes, *, offset: int = 0, fin: bool = True,
           length: int | None = None) -> bytes:
    """A STREAM frame: with its Offset field when ``offset``, its Length field unless
    ``length`` is -1 (the frame then runs to the packet's end), FIN when ``fin``."""
    frame_type = 0x08 | (4 if offset else 0) | (0 if length == -1 else 2) | (1 if fin else 0)
    out = Buffer(capacity=32 + len(data))
    out.push_uint_var(frame_type)
    out.push_uint_var(stream_id)
    if offset:
        out.push_uint_var(offset)
    if length != -1:
        out.push_uint_var(len(data) if length is None else length)
    out.push_bytes(data)
    return out.data


#: Packets of STREAM frames from the client (stream IDs 0, 4, 8... are its bidirectional
#: streams, 1, 5, 9... the server's, 2, 6... its unidirectional ones, 3 the server's), in
#: order, to a server that opened streams 1 and 3, allows 12 bidirectional streams of 32
#: octets, and 20 octets more on the connection before the last packet.
STREAM_PACKETS: list[tuple[str, bytes]] = [
    ("a request with FIN", _frame(0, b"request 0")),
    ("two requests in a packet", _frame(4, b"request 4") + _frame(8, b"request 8")),
    ("the first piece of a request", _frame(12, b"first", fin=False)),
    ("its next piece", _frame(12, b" and last", offset=5)),
    ("a request without a Length field", _frame(16, b"to the end", length=-1)),
    ("a bare FIN on a new stream", _frame(20, b"")),
    ("a gap: streams 24 and 28 opened by 32", _frame(32, b"after a gap")),
    ("then 24, opened by the gap", _frame(24, b"late")),
    ("a stream finished, once more", _frame(0, b"request 0")),
    ("an answer on the server's stream", _frame(1, b"answer 1")),
    ("a piece at an offset first", _frame(36, b"tail", offset=4)),
    ("then its head", _frame(36, b"head", fin=False)),
    ("an empty frame on a new stream", _frame(40, b"", fin=False)),
    ("the client's unidirectional streams 2 to 46", _frame(46, b"one way")),
    ("within the connection's data limit", _frame(44, b"z" * 20)),
]
#: A last packet instead, which closes the connection: its frame, and the server's
#: limits of bidirectional streams and of octets more on the connection.
STREAM_ENDINGS: dict[str, tuple[bytes, int, int]] = {
    "beyond the stream limit": (_frame(44, b"too many"), 11, 20),
    "on a stream the server would open": (_frame(45, b"not opened"), 12, 20),
    "on the server's unidirectional stream (send-only)": (_frame(3, b"wrong way"), 12, 20),
    "a Length beyond the packet": (_frame(44, b"short", length=500), 12, 20),
    "over the stream's data limit": (_frame(44, b"x" * 40), 12, 100),
    "over the connection's data limit": (_frame(44, b"y" * 30), 12, 20),
    "data after a bare FIN": (_frame(20, b"late"), 12, 20),
}


def _stream_state(conn: QuicConnection) -> list[Any]:
    """What receiving STREAM frames changes: streams (every field), their order, the
    stream and data limits, the close, the events (taken)."""
    close = conn._close_event
    return [{sid: _fields(s) for sid, s in conn._streams.items()},
            [s.stream_id for s in conn._streams_queue],
            *(dict(vars(limit)) for limit in (conn._local_max_streams_bidi,
                                              conn._local_max_streams_uni,
                                              conn._local_max_data)),
            (close.error_code, close.frame_type, close.reason_phrase) if close else None,
            conn._state.name, [vars(e) for e in iter(conn.next_event, None)]]


def _received(pki: Pki, monkeypatch: pytest.MonkeyPatch, fast: bool, qlog: bool,
              packets: list[bytes], streams: int, room: int) -> list[Any]:
    """The server's state after each of ``packets`` (in order), received with the
    STREAM fast path or with aioquic's handler (limits: see STREAM_PACKETS), and the
    frames it logged if it writes a qlog."""
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(FastPathConnection, "_handle_stream",
                          QuicConnection._handle_stream_frame)
            patch.setattr(FastPathConnection, "_get_or_create_stream",
                          QuicConnection._get_or_create_stream)
        pair = _established(pki, fast=True)
        server = pair.server
        logger = server._quic_logger = (
            QuicLoggerTrace(is_client=False, odcid=b"") if qlog else None)
        server._local_max_streams_bidi.value = streams
        server._local_max_stream_data_bidi_remote = 32
        for stream_id in (1, 3):
            server.send_stream_data(stream_id, b"request %d" % stream_id, end_stream=True)
        states = [_stream_state(server)]
        for n, payload in enumerate(packets):
            if n == len(packets) - 1:
                server._local_max_data.value = server._local_max_data.used + room
            server.receive_datagram(_sealed(pair, payload), CLIENT, pair.now)
            states.append(_stream_state(server))
        return [*states, [event["data"]["frames"] for event in logger._events
                          if "frames" in event["data"]] if logger else None]


@pytest.mark.parametrize(("ending", "qlog"),
                         [(None, False), (None, True), *((e, False) for e in STREAM_ENDINGS)])
def test_stream_frames_are_received_as_aioquic_receives_them(
        pki: Pki, monkeypatch: pytest.MonkeyPatch, spy: Spy, ending: str | None,
        qlog: bool) -> None:
    """The STREAM fast path against aioquic's handler: the same streams, every field of
    theirs, limits, events and errors (and qlog), after each packet of a conversation
    that takes the usual case and every way out of it."""
    packets = [p for _, p in STREAM_PACKETS]
    limits = 12, 20
    if ending is not None:  # an error that closes the connection, instead of the last
        packets[-1], *limits = STREAM_ENDINGS[ending]
    handled = spy(QuicConnection, "_handle_stream_frame")
    fast = _received(pki, monkeypatch, True, qlog, packets, *limits)
    fallbacks = len(handled)
    slow = _received(pki, monkeypatch, False, qlog, packets, *limits)
    assert fast == slow
    if qlog:  # every frame logged, by aioquic's handler
        assert fallbacks * 2 == len(handled) and sum(map(len, fast[-1])) > 20
    else:
        taken = len(handled) - 2 * fallbacks  # the slow run's frames less the fallbacks
        assert taken >= 7  # the conversation's usual frames (7-8 of 16-17) went fast
    assert (fast[-2][5] is None) == (ending is None)  # the endings close


def test_a_stream_to_send_on_is_found_as_aioquic_finds_it(pki: Pki) -> None:
    """The stream to send on, of every kind a server may be asked for (its own and the
    client's, bidirectional and unidirectional, held, discarded or not yet opened):
    the same one, or the same refusal, as aioquic's."""
    pair = _established(pki, fast=True)
    server = pair.server
    for stream_id in (1, 3, 7):  # the server's: bidirectional, unidirectional (two)
        server.send_stream_data(stream_id, b"out", end_stream=stream_id == 7)
    for stream_id in (0, 2, 6):  # the client's: bidirectional, unidirectional (two)
        server.receive_datagram(_sealed(pair, _frame(stream_id, b"in")), CLIENT, pair.now)
    del server._streams[6], server._streams[7]  # discarded
    for stream_id in (0, 1, 2, 3, 4, 6, 7, 11):  # 11: made, then found by aioquic's
        found: list[QuicStream | str] = []
        for method in (FastPathConnection._get_or_create_stream_for_send,
                       QuicConnection._get_or_create_stream_for_send):
            try:
                found.append(method(server, stream_id))
            except ValueError as exc:
                found.append(str(exc))
        assert found[0] is found[1] or found[0] == found[1], stream_id
    assert sorted(server._streams) == [0, 1, 2, 3, 11]


def test_the_1rtt_keys_and_space_held_are_aioquic_s(pki: Pki) -> None:
    """What the fast path holds (lean.OneRtt: keys, space, CRYPTO stream) is what
    aioquic's dicts hold for the 1-RTT epoch, from the handshake's confirmation on,
    through key updates from either end; nothing is held before."""
    pair = Pair(pki)
    assert FastPathConnection._one_rtt(pair.client) is not None
    phases = []
    for n in range(6):
        if n in (1, 3):
            (pair.client if n == 1 else pair.server).request_key_update()
            phases.append(pair.server._cryptos[tls.Epoch.ONE_RTT].recv.key_phase)
        stream_id = pair.request(b"request %d" % n)
        pair.flight(pair.client, pair.server)
        pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
        pair.flight(pair.server, pair.client)
        for conn in (pair.client, pair.server):
            held = conn._frames.one_rtt
            assert held is not None
            assert held[0] is conn._cryptos[tls.Epoch.ONE_RTT]
            assert held[1] is conn._spaces[tls.Epoch.ONE_RTT]
            assert held[2] is conn._crypto_streams[tls.Epoch.ONE_RTT]
    phases.append(pair.server._cryptos[tls.Epoch.ONE_RTT].recv.key_phase)
    assert phases == [0, 1, 0]  # updated once by each end, the held pair's keys with it
    assert pair.client._close_event is None and pair.server._close_event is None
    unconfirmed = type(pair.client)(configuration=pki.agent.configuration(is_client=True),
                                    verifier=pki.agent.verifier())
    assert unconfirmed._one_rtt() is None and unconfirmed._frames.one_rtt is None


def test_nothing_is_held_while_the_handshake_is_unconfirmed(pki: Pki) -> None:
    """Flight by flight through a handshake: the fast path holds no 1-RTT keys (and is
    not taken) on an end that has them but has not confirmed the handshake (the client
    between the server's Finished and HANDSHAKE_DONE), and holds them once it has."""
    client = DmscQuicConnection(configuration=pki.agent.configuration(is_client=True),
                                     verifier=pki.agent.verifier())
    server = DmscQuicConnection(
        configuration=pki.gateway.configuration(is_client=False),
        verifier=pki.gateway.verifier(),
        original_destination_connection_id=client.original_destination_connection_id)
    now = 1000.0
    client.connect(CLIENT, now=now)
    unconfirmed_with_keys = 0
    for _ in range(10):
        for sender, receiver in ((client, server), (server, client)):
            for data, _addr in sender.datagrams_to_send(now):
                receiver.receive_datagram(data, CLIENT, now)
            for conn in (client, server):
                held = conn._one_rtt()
                if not conn._handshake_confirmed:
                    unconfirmed_with_keys += conn._cryptos[tls.Epoch.ONE_RTT].recv.is_valid()
                    assert held is None and conn._frames.one_rtt is None
                else:
                    assert held is not None
                    assert held[1] is conn._spaces[tls.Epoch.ONE_RTT]
        now += 0.01
    assert client._handshake_confirmed and server._handshake_confirmed
    assert unconfirmed_with_keys  # the case this test is about did occur


def test_a_variable_length_integer_is_sized_as_aioquic_sizes_it() -> None:
    """The send plan's look-up of a variable-length integer's size (RFC 9000, Section
    16), at each size's bounds and between: aioquic's ``size_uint_var``."""
    values = [0, 1, 2**62 - 1, *(b + d for e in (6, 14, 30) for b in (2**e,) for d in (-1, 0, 1))]
    values += [random.Random(n).randrange(2**62) >> random.Random(n).randrange(62)
               for n in range(500)]
    assert [fastpath._VARINT_SIZE[v.bit_length()] for v in values] == list(
        map(size_uint_var, values))


def test_connections_on_two_threads_do_not_share_what_they_write(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pairs, each driven by its own thread and switching threads every microsecond:
    each client gets exactly the answers its own server sent (with one write buffer
    for the process, a thread switch mid-packet sent one connection's octets, sealed,
    to the other's peer: most runs failed), and each connection's frame handlers get
    its own receive context (with one for the process, the other's, now and then)."""
    previous = sys.getswitchinterval()
    pairs = [Pair(pki), Pair(pki)]
    wrong: list[object] = []
    handle = FastPathConnection._handle_stream

    def checked(conn: FastPathConnection, context: QuicReceiveContext, *args: Any) -> None:
        if context.host_cid != conn.host_cid or context.network_path is not (
                conn._network_paths[0]):
            wrong.append("another connection's context")
        handle(conn, context, *args)

    monkeypatch.setattr(FastPathConnection, "_handle_stream", checked)

    def run(tag: bytes, pair: Pair) -> None:
        try:
            for n in range(300):
                sid = pair.request(tag * 50)
                pair.flight(pair.client, pair.server)
                while pair.server.next_event() is not None:
                    pass
                answer = tag * 300 + b"%d" % n
                pair.server.send_stream_data(sid, answer, end_stream=True)
                pair.flight(pair.server, pair.client)
                while (event := pair.client.next_event()) is not None:
                    if isinstance(event, events.StreamDataReceived) and event.data not in (
                            b"", answer):
                        wrong.append((tag, event.data[:20]))
                    elif isinstance(event, events.ConnectionTerminated):
                        wrong.append((tag, event.reason_phrase))
                        return
                pair.tick(0.002)
        except Exception as exc:  # reported by the assertion below
            wrong.append((tag, repr(exc)))

    threads = [threading.Thread(target=run, args=(tag, pair))
               for tag, pair in zip((b"A", b"B"), pairs, strict=True)]
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert not wrong, wrong[:3]


@pytest.mark.parametrize("fast", [True, False])
def test_sending_again_without_a_receipt_keeps_the_idle_timer(
        pki: Pki, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """RFC 9000, Section 10.1: only the first ack-eliciting packet sent after a receipt
    restarts the idle timer; three passes 0.5 s apart with nothing received between
    leave it where the first put it, on the fast path as on aioquic's."""
    if not fast:
        monkeypatch.setattr(fastpath.FastPathConnection, "_send_short",
                            lambda self, now: None)
    pair = Pair(pki)
    server = pair.server
    seen = []
    for n in range(3):
        pair.now += 0.5
        sid = server.get_next_available_stream_id()
        server.send_stream_data(sid, b"push %d" % n, end_stream=True)
        assert server.datagrams_to_send(pair.now)
        seen.append(server._close_at)
    assert seen[0] == seen[1] == seen[2], seen
