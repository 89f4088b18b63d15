"""The receive fast path's decryption (transport/fastpath.py ``_open``) against aioquic's
``CryptoPair.decrypt_packet``, differential: the same header, payload and packet number,
or the same failure, for short-header packets of every packet number length, in both key
phases, intact or damaged (RFC 9001, Sections 5.3, 5.4 and 6)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aioquic import tls
from aioquic._crypto import CryptoError
from aioquic.quic import events
from aioquic.quic.crypto import CryptoContext
from aioquic.tls import CipherSuite
from test_transport_acks import Pair
from transport_support import Pki

from dmscproto.transport import fastpath
from dmscproto.transport.fastpath import _open

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
