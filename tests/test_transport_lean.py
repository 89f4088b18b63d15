"""Leaner QUIC connections (transport/lean.py): what a connection gives back once its
handshake is over, and that it still carries transactions afterwards."""

from __future__ import annotations

from aioquic import tls
from aioquic.quic import events
from cryptography.hazmat.primitives.serialization import Encoding
from test_transport_acks import Pair
from transport_support import Pki

from dmscproto.transport.lean import _HANDLERS, QUIC_CONNECTION_IDS


def test_released_handshake_state_and_the_connection_still_works(pki: Pki) -> None:
    pair = Pair(pki)
    der = pair.server.tls._peer_certificate.public_bytes(Encoding.DER)
    for conn in (pair.client, pair.server):
        conn.release_handshake_state()
        assert all(buf.capacity <= 64 for buf in conn._crypto_buffers.values())
        assert conn.tls._x25519_private_key is None and not conn.tls._ec_private_keys
        assert len(conn._host_cids) <= QUIC_CONNECTION_IDS
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


def test_one_frame_handler_table_for_every_connection(pki: Pki) -> None:
    first, second = Pair(pki), Pair(pki)
    tables = {id(getattr(c, _HANDLERS)._table)
              for c in (first.client, first.server, second.client, second.server)}
    assert len(tables) == 1
