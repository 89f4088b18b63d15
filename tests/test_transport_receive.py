"""The receive fast path's decryption (transport/fastpath.py ``_open``) against aioquic's
``CryptoPair.decrypt_packet``, differential: the same header, payload and packet number,
or the same failure, for short-header packets of every packet number length, in both key
phases, intact or damaged (RFC 9001, Sections 5.3, 5.4 and 6)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from aioquic import tls
from aioquic._crypto import CryptoError
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoContext
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.recovery import MAX_ACK_RANGES
from aioquic.tls import CipherSuite
from test_transport_acks import CLIENT, Pair
from transport_support import Pki

from dmscproto.transport import fastpath
from dmscproto.transport.driver import EpochClock, loop_clock
from dmscproto.transport.fastpath import _open
from dmscproto.transport.lean import LeanQuicConnection
from dmscproto.transport.quic.streams import DmscConnection

CID = bytes(range(8))


def _keys(suite: CipherSuite) -> tuple[CryptoContext, CryptoContext]:
    """A sender's and a receiver's keys of ``suite`` for one direction."""
    sender, receiver = CryptoContext(), CryptoContext()
    for keys in (sender, receiver):
        keys.setup(cipher_suite=suite, secret=bytes(range(48)), version=1)
    return sender, receiver


def _outcome(keys: CryptoContext, data: bytes, expected: int) -> tuple[
        tuple[bytes, bytes, int, bool] | None, tuple[bytes, bytes, int] | None]:
    """aioquic's decryption of ``data`` and ``_open``'s: None for a CryptoError (from
    ``_open`` also for a packet of the other key phase, left to aioquic's)."""
    try:
        want: tuple[bytes, bytes, int, bool] | None = keys.decrypt_packet(
            data, 1 + len(CID), expected)
    except CryptoError:
        want = None
    try:
        got = _open(keys, data, 1 + len(CID), expected)
    except CryptoError:
        assert want is None
        return want, None
    return want, got


@pytest.mark.parametrize("suite", [CipherSuite.AES_128_GCM_SHA256,
                                   CipherSuite.AES_256_GCM_SHA384,
                                   CipherSuite.CHACHA20_POLY1305_SHA256])
def test_a_short_packet_opens_as_aioquic_opens_it(suite: CipherSuite) -> None:
    rnd = random.Random(int(suite))
    sender, receiver = _keys(suite)
    opened = refused = 0
    for _ in range(300):
        expected = rnd.choice((0, 1, 300, 70000, 2**24, 2**31 + 5))
        number = max(0, expected + rnd.randint(-40, 40))
        length = rnd.randint(1, 4)
        phase = rnd.random() < 0.1  # the other key phase: aioquic updates its keys
        header = (bytes([0x40 | rnd.choice((0, 0x20)) | (phase << 2) | (length - 1)]) + CID
                  + (number % (1 << (8 * length))).to_bytes(length, "big"))
        data = bytearray(sender.encrypt_packet(header, rnd.randbytes(
            rnd.randint(4 - length + 16, 300)), number))
        if rnd.random() < 0.1:
            data[rnd.randrange(len(header), len(data))] ^= 1 << rnd.randrange(8)
        want, got = _outcome(receiver, bytes(data), expected)
        if got is None:  # aioquic's fails too, or decrypts with the next keys
            assert want is None or want[3]
            refused += 1
        else:
            assert want is not None and not want[3] and got == want[:3]
            opened += 1
    assert opened > 200 and refused > 10


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_a_packet_number_is_decoded_as_aioquic_decodes_it(length: int) -> None:
    """Packet numbers at the edges of the window about the one expected (RFC 9000,
    Appendix A.3: half a window below and above, and near 2^62), which ``_open`` decodes
    in its own steps: the same number as aioquic's, or the same failure."""
    sender, receiver = _keys(CipherSuite.AES_128_GCM_SHA256)
    half = 1 << (8 * length - 1)
    decoded = 0
    for expected in (0, 1, half, 3 * half + 7, 2**62 - 2 * half, 2**62 - 1):
        base = expected & -(2 * half)  # where the window's candidates start
        for number in {base - 1, base, base + 2 * half - 1, *(
                expected + delta for delta in (-half - 1, -half, -half + 1, 0,
                                               half - 1, half, half + 1))}:
            if not 0 <= number < 2**62:
                continue
            header = (bytes([0x40 | (length - 1)]) + CID
                      + (number % (1 << (8 * length))).to_bytes(length, "big"))
            data = sender.encrypt_packet(header, bytes(20), number)
            want, got = _outcome(receiver, data, expected)
            assert got == (None if want is None else want[:3])
            decoded += got is not None
    assert decoded >= 20


def test_the_peer_s_key_update_is_followed(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client updates its keys (RFC 9001, Section 6): the server's fast path leaves the
    first packet of the new phase to aioquic's, which updates the server's keys too, and
    opens the next ones itself."""
    opened: list[bool] = []

    def spied(*args: Any) -> tuple[bytes, bytes, int] | None:
        result = _open(*args)
        opened.append(result is not None)
        return result

    monkeypatch.setattr(fastpath, "_open", spied)
    pair = Pair(pki)
    for conn in (pair.client, pair.server):
        conn.release_handshake_state()
    keys = pair.server._cryptos[tls.Epoch.ONE_RTT]
    for n in range(3):
        if n == 1:
            pair.client.request_key_update()
        stream_id = pair.request(b"request %d" % n)
        pair.flight(pair.client, pair.server)
        got = [e for e in iter(pair.server.next_event, None)
               if isinstance(e, events.StreamDataReceived)]
        assert got[-1].data == b"request %d" % n
        assert keys.recv.key_phase == (n >= 1)
        pair.server.send_stream_data(stream_id, b"answer", end_stream=True)
        pair.flight(pair.server, pair.client)
    assert pair.server._close_event is None and pair.client._close_event is None
    assert opened.count(False) == 1 and opened[-1]  # the first of the new phase only


def _arrivals(seed: int) -> list[tuple[str, int]]:
    """A random run of what reaches a server: packet numbers mostly in order, some lost
    (a gap), late (reordered), repeated (duplicates, also of very old packets), jumps
    past the duplicate window (sliding and pruning it), and the client's acknowledgements
    of ACKs the server sent (``("acked", highest)``: its ranges cut below)."""
    rnd = random.Random(seed)
    got: list[tuple[str, int]] = []
    late: list[int] = []
    number = 0
    for _ in range(900):
        roll = rnd.random()
        if roll < 0.04 and number:
            got.append(("packet", rnd.randrange(number)))  # a duplicate, or lost then late
        elif roll < 0.08:
            late.append(number)  # overtaken by the next ones
            number += 1
        elif roll < 0.11 and late:
            got.append(("packet", late.pop(rnd.randrange(len(late)))))
        elif roll < 0.13:
            number += rnd.choice((2, 3, 40, 200))  # a gap, or many lost
        elif roll < 0.35 and number:
            got.append(("acked", rnd.randrange(max(0, number - 30), number)))
        else:
            got.append(("packet", number))
            number += 1
    for gap in range(80):  # a gap before each, unacknowledged: more ranges than kept
        got.append(("packet", number + gap * 2))
    return got


def _ranges_received(pair: Pair, arrivals: list[tuple[str, int]],
                     delivery: Callable[..., None]) -> list[Any]:
    """The server's record of packets received (ranges to acknowledge, duplicate window,
    largest, ACK timer) after each arrival, its ACKs acknowledged by ``delivery``."""
    server = pair.server
    keys = pair.client._cryptos[tls.Epoch.ONE_RTT]
    cid = pair.client._peer_cid.cid
    space = server._spaces[tls.Epoch.ONE_RTT]
    states: list[Any] = []
    for kind, number in arrivals:
        if kind == "acked":
            delivery(server, QuicDeliveryState.ACKED, space, number)
        else:
            pair.now += 0.0001
            header = bytes([0x41]) + cid + (number & 0xFFFF).to_bytes(2, "big")
            payload = b"\x01" if number % 3 else b"\x00" * 24  # PING, or PADDING only
            server.receive_datagram(keys.encrypt_packet(header, payload.ljust(24, b"\x00"),
                                                        number), CLIENT, pair.now)
        window = space.received_packets
        states.append((list(space.ack_queue), window._lower, sorted(window._received),
                       space.largest_received_packet, space.expected_packet_number,
                       space.ack_at, server._close_event))
    return states


@pytest.mark.parametrize("seed", range(6))
def test_packets_received_are_recorded_as_aioquic_records_them(
        pki: Pki, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """The fast path's record of packets received (fastpath ``_record``, the duplicate
    check, ``_on_ack_delivery``) against aioquic's (its receive path, its range set and
    window), differential over random arrivals: in order, lost, reordered, duplicated,
    far ahead, with ACKs acknowledged between; the same state after each."""
    recorded: list[int] = []

    def spied(space: Any, number: int) -> None:
        recorded.append(number)
        record(space, number)

    record = fastpath._record
    monkeypatch.setattr(fastpath, "_record", spied)
    arrivals = _arrivals(seed)
    fast_pair, slow_pair = Pair(pki), Pair(pki)
    slow_pair.server._one_rtt = lambda: None  # type: ignore[method-assign]
    fast = _ranges_received(fast_pair, arrivals, LeanQuicConnection._on_ack_delivery)
    assert len(recorded) > 500  # the fast path recorded them
    assert fast == _ranges_received(slow_pair, arrivals, QuicConnection._on_ack_delivery)
    assert fast[-1][-1] is None
    assert max(len(s[0]) for s in fast) == MAX_ACK_RANGES and min(len(s[0]) for s in fast) == 0


def _delivered(pki: Pki, process: Callable[[DmscConnection], None]) -> list[Any]:
    """What a connection's protocol is handed, in order, from a queue of events (the
    data of streams among others, one handler queueing another event), by
    ``process``."""

    async def main() -> list[Any]:
        got: list[Any] = []
        quic = Pair(pki).server
        while quic.next_event() is not None:
            pass
        protocol = DmscConnection(quic)
        more = events.ConnectionIdRetired(connection_id=b"later")

        def received(event: events.QuicEvent) -> None:
            got.append(event)
            if getattr(event, "data", None) == b"b":
                quic._events.append(more)  # queued while the queue is taken

        protocol.quic_event_received = received  # type: ignore[method-assign]
        protocol._connection_id_issued_handler = lambda cid: got.append(("issued", cid))
        protocol._connection_id_retired_handler = lambda cid: got.append(("retired", cid))
        protocol._ping_waiters[7] = waiter = asyncio.get_running_loop().create_future()
        quic._events.extend([
            events.StreamDataReceived(b"a", False, 0),
            events.StreamDataReceived(b"b", True, 0),
            events.PingAcknowledged(uid=7),
            events.StreamDataReceived(b"c", True, 4),
            events.ConnectionIdIssued(connection_id=b"new"),
            events.StreamDataReceived(b"d", True, 8)])
        process(protocol)
        process(protocol)  # nothing left
        return [*got, waiter.done(), len(quic._events)]

    return asyncio.run(main())


def test_events_are_handed_over_as_aioquic_hands_them(pki: Pki) -> None:
    """QuicLink's ``_process_events`` (the data of streams to ``quic_event_received`` at
    once) against aioquic's: the same events, handlers and order."""
    fast = _delivered(pki, DmscConnection._process_events)
    assert fast == _delivered(pki, QuicConnectionProtocol._process_events)
    assert len(fast) == 11 and fast[-2:] == [True, 0]


def test_a_link_reads_the_loop_s_clock() -> None:
    """QuicLink's and the machines' clock is their loop's ``time()``: asyncio's,
    ``time.monotonic`` itself; a loop's own clock (a subclass's, one set on the loop) as
    it is, and the machines' time since the epoch follows it."""

    class Shifted(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() + 1000.0

    plain, shifted = asyncio.new_event_loop(), Shifted()
    try:
        assert loop_clock(plain) is time.monotonic
        assert 999.0 < loop_clock(shifted)() - time.monotonic() < 1001.0
        epoch = EpochClock(shifted)
        assert abs(epoch.now() - time.time()) < 0.5
        assert abs(epoch.offset - (time.time() - shifted.time())) < 0.5
        plain.time = lambda: 5.0  # type: ignore[method-assign]
        assert loop_clock(plain)() == 5.0
        assert EpochClock(plain).offset == pytest.approx(time.time() - 5.0, abs=0.5)
    finally:
        plain.close()
        shifted.close()
