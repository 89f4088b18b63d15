"""Handshake floods for tests and benchmarks (draft-dmsc-protocol-00, Section 10.7).

:func:`initials` makes QUIC Initial datagrams as a real client's first flight (a valid
ClientHello offering ALPN ``dmsc/1``, padded to 1200 octets), each for a fresh
connection ID, so that a server that accepts one creates a connection and answers with
its handshake.  One ClientHello is made by aioquic's client and then re-sent in an
Initial packet protected for each new connection ID (about 80 us each, against 4 ms for
a new client each time): the server cannot tell, since the ClientHello's randomness is
not tied to the connection ID.  :func:`flood` sends them from one UDP socket and never
answers: an attacker that does not complete handshakes (or spoofs its source address
and so never sees the answers, nor any Retry token).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator

from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilder

from ..codec.registry import ALPN, DEFAULT_MAX_DATAGRAM

_CID_LENGTH = 8


def _client_hello(host: str, port: int) -> tuple[int, bytes]:
    """A real client's QUIC version and ClientHello (the CRYPTO data of its Initial)."""
    client = QuicConnection(configuration=QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], server_name="localhost"))
    now = time.monotonic()
    client.connect((host, port), now=now)
    [(datagram, _addr)] = client.datagrams_to_send(now=now)
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=_CID_LENGTH)
    assert header.version is not None
    crypto = CryptoPair()
    crypto.setup_initial(header.destination_cid, is_client=False, version=header.version)
    _plain, payload, _pn = crypto.decrypt_packet(datagram[:header.packet_length],
                                                 buf.tell(), 0)
    frames = Buffer(data=payload)
    assert frames.pull_uint_var() == QuicFrameType.CRYPTO and frames.pull_uint_var() == 0
    return header.version, frames.pull_bytes(frames.pull_uint_var())


def initials(host: str, port: int) -> Iterator[bytes]:
    """Endless QUIC Initial datagrams to ``host``:``port``, one per new connection."""
    version, hello = _client_hello(host, port)
    while True:
        dcid, scid = os.urandom(_CID_LENGTH), os.urandom(_CID_LENGTH)
        crypto = CryptoPair()
        crypto.setup_initial(dcid, is_client=True, version=version)
        builder = QuicPacketBuilder(host_cid=scid, peer_cid=dcid, version=version,
                                    is_client=True, max_datagram_size=DEFAULT_MAX_DATAGRAM)
        builder.start_packet(QuicPacketType.INITIAL, crypto)
        frame = builder.start_frame(QuicFrameType.CRYPTO)
        frame.push_uint_var(0)
        frame.push_uint_var(len(hello))
        frame.push_bytes(hello)
        datagrams, _packets = builder.flush()
        yield from datagrams


async def flood(host: str, port: int, count: int, *, rate: float | None = None,
                source: str = "127.0.0.1") -> float:
    """Send ``count`` Initials from ``source`` (at most ``rate`` a second; None: as fast
    as they are made); returns the seconds it took.  Answers are read and discarded."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    made = initials(host, port)
    try:
        for i in range(count):
            sock.sendto(next(made), (host, port))
            try:
                while True:
                    sock.recv(65536)
            except BlockingIOError:
                pass
            if rate is not None:
                ahead = start + (i + 1) / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif i % 64 == 0:
                await asyncio.sleep(0)
    finally:
        sock.close()
    return loop.time() - start
