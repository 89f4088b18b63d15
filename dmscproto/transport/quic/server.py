"""A listening DMSC-over-QUIC endpoint (draft-dmsc-protocol-00, Sections 9.1 and 10.7):
connections demultiplexed by connection ID, address validation by Retry tokens, and
limits on handshakes and connections."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

from aioquic._buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from ...codec.registry import ErrorCode, limit
from ..driver import end_of_turn
from ..keylog import KeyLog
from ..recorder import SocketRecorder, sender_for
from ..tap import DatagramTap
from ..tls import DmscQuicConnection, TlsIdentity
from .link import IDLE_TIMEOUT
from .sockets import Drain, udp_socket
from .streams import DmscConnection, Handler

#: Source addresses whose Retry count a server keeps (beyond: all forgotten at once).
_MAX_RETRIED = 65536


@dataclass(frozen=True, slots=True)
class QuicLimits:
    """Address validation and connection limits of a QUIC server (Sections 9.1, 10.7),
    by default the LIMITS of :mod:`dmscproto.codec.registry` of the same names."""

    #: Handshakes in progress above which a client must echo a Retry token first.
    retry_threshold: int = int(limit("QUIC_RETRY_THRESHOLD"))
    max_pending: int = int(limit("QUIC_MAX_PENDING"))
    handshake_timeout: float = limit("QUIC_HANDSHAKE_TIMEOUT")
    max_connections: int = int(limit("QUIC_MAX_CONNECTIONS"))
    max_per_address: int = int(limit("QUIC_MAX_PER_ADDRESS"))
    max_per_identity: int = int(limit("QUIC_MAX_PER_IDENTITY"))
    #: Retry packets a second to one source address (beyond: its Initials are dropped).
    retry_rate: int = int(limit("QUIC_RETRY_RATE"))

    @classmethod
    def of(cls, value: Callable[[str], float]) -> QuicLimits:
        """From ``value(name)`` of each QUIC_* limit (e.g. a gateway configuration's)."""
        return cls(int(value("QUIC_RETRY_THRESHOLD")), int(value("QUIC_MAX_PENDING")),
                   value("QUIC_HANDSHAKE_TIMEOUT"), int(value("QUIC_MAX_CONNECTIONS")),
                   int(value("QUIC_MAX_PER_ADDRESS")), int(value("QUIC_MAX_PER_IDENTITY")),
                   int(value("QUIC_RETRY_RATE")))


@dataclass(slots=True)
class QuicServerCounters:
    """What a :class:`QuicServer`'s limits did, for logs and benchmarks."""

    accepted: int = 0       # Initials that created a connection
    retries: int = 0        # Retry packets sent
    dropped: int = 0        # Initials dropped: a limit reached, or a bad Retry token
    expired: int = 0        # handshakes closed for taking too long
    evicted: int = 0        # connections closed beyond QUIC_MAX_PER_IDENTITY


class QuicServer(asyncio.DatagramProtocol):
    """A listening DMSC QUIC endpoint: accepts connections, demultiplexes datagrams by
    connection ID, and tracks authenticated peers by entity ID (:attr:`peers`) so that
    requests can be sent back over a peer's own connection."""

    def __init__(self, tls: TlsIdentity, handler: Handler, *, pcap: DatagramTap | None,
                 keylog: KeyLog, idle_timeout: float = IDLE_TIMEOUT,
                 limits: QuicLimits | None = None, sock: socket.socket | None = None) -> None:
        self.tls = tls
        #: Reads the datagrams waiting on the listening socket.
        self._drain = (None if sock is None else Drain(
            sock, self._received, self.error_received, asyncio.get_running_loop(),
            adaptive=True))
        self.handler = handler
        self._turn = end_of_turn(asyncio.get_running_loop())
        self.peers: dict[bytes, DmscConnection] = {}
        self._configuration = tls.configuration(is_client=False, keylog=keylog.file,
                                                idle_timeout=idle_timeout)
        self._cid_length = self._configuration.connection_id_length
        self._verifier = tls.verifier()
        self._pcap = pcap
        self._keylog = keylog
        self._by_cid: dict[bytes, DmscConnection] = {}
        #: The connection IDs each connection is routed by (forgotten with it).
        self._cids: dict[DmscConnection, list[bytes]] = {}
        self.limits = limits or QuicLimits()
        self.counters = QuicServerCounters()
        self._retry = QuicRetryTokenHandler()
        #: Every connection (handshakes included) and its source IP address.
        self._conns: dict[DmscConnection, str] = {}
        self._per_address: Counter[str] = Counter()
        #: Handshakes in progress and the timers that end them.
        self._pending: dict[DmscConnection, asyncio.TimerHandle] = {}
        #: Authenticated connections by entity ID, oldest first.
        self._by_identity: dict[bytes, list[DmscConnection]] = {}
        #: Retry packets sent this second, by source IP address.
        self._retried: dict[str, tuple[int, int]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.DatagramTransport | None = None
        self._recorder: SocketRecorder | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        if self._pcap is not None:
            self._recorder = SocketRecorder(self._pcap, self._transport)
        self._sender = sender_for(self._transport, self._recorder)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        # Unlike a link (QuicLink.datagram_received), the server does not hold the
        # end-of-turn work while it reads: with many connections it runs once after
        # every callback of the turn (decodes, answers), not after each read.  Holding
        # it here cut routed calls at 32 in flight by about 30% (tools/bench/route.py
        # c32: 3,700/s held, 5,700-6,000/s not; one call at a time alike).  On asyncio's
        # own loop, serve() has the drain read the socket instead (Drain.install).
        self._received(data, addr)
        if self._drain is not None:
            self._drain.read()

    def _received(self, data: bytes, addr: NetworkAddress) -> None:
        if self._recorder is not None:
            self._recorder.received(data, addr)
        if data and not data[0] & 0x80:  # short header: the connection ID follows at once
            protocol = self._by_cid.get(data[1:1 + self._cid_length])
            if protocol is not None:  # else not for a connection: dropped, as below
                # its datagram_received without that call's frame: the end of turn held
                # while it is read (the connection's transmits follow it at once)
                turn = self._turn
                holds = not turn.held
                turn.held = True
                try:
                    protocol._received(data, addr)
                finally:
                    if holds:
                        turn.release()
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            return
        protocol = self._by_cid.get(header.destination_cid)
        if protocol is None:
            assert self._sender is not None
            supported = self._configuration.supported_versions
            if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                    and header.version is not None and header.version not in supported):
                self._sender.sendto(encode_quic_version_negotiation(
                    source_cid=header.destination_cid, destination_cid=header.source_cid,
                    supported_versions=supported), addr)
                return
            if (header.packet_type != QuicPacketType.INITIAL or header.version is None
                    or len(data) < SMALLEST_MAX_DATAGRAM_SIZE):
                return
            host = str(addr[0])
            lim = self.limits
            if (len(self._pending) >= lim.max_pending or len(self._conns) >= lim.max_connections
                    or self._per_address[host] >= lim.max_per_address):
                self.counters.dropped += 1  # no state, no cryptography, no answer
                return
            original_cid, retry_cid = header.destination_cid, None
            now = asyncio.get_running_loop().time()
            if header.token:
                try:
                    original_cid = self._retry.validate_token(
                        address=addr, destination_cid=header.destination_cid,
                        token=header.token, now=now)
                except ValueError:
                    self.counters.dropped += 1  # forged, stale or foreign token
                    return
                retry_cid = header.destination_cid
            elif len(self._pending) >= lim.retry_threshold:
                # prove the address first (RFC 9000, 8.1.2): no state until it does; an
                # address that does not come back gets at most retry_rate a second
                second, sent = self._retried.get(host, (0, 0))
                if second != int(now):
                    if len(self._retried) >= _MAX_RETRIED:
                        self._retried.clear()
                    second, sent = int(now), 0
                if sent >= lim.retry_rate:
                    self.counters.dropped += 1
                    return
                self._retried[host] = (second, sent + 1)
                retry_cid = os.urandom(8)
                self._sender.sendto(encode_quic_retry(
                    version=header.version, source_cid=retry_cid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=self._retry.create_token(
                        address=addr, original_destination_connection_id=original_cid,
                        retry_source_connection_id=retry_cid, now=now)), addr)
                self.counters.retries += 1
                return
            protocol = self._accept(header.destination_cid, original_cid, retry_cid, host)
        protocol.datagram_received(data, addr)

    def _accept(self, cid: bytes, original_cid: bytes, retry_cid: bytes | None,
                host: str) -> DmscConnection:
        quic = DmscQuicConnection(configuration=self._configuration, verifier=self._verifier,
                                  original_destination_connection_id=original_cid,
                                  retry_source_connection_id=retry_cid)
        assert self._sender is not None
        protocol = DmscConnection(quic, handler=self.handler, on_close=self._forget)
        self.counters.accepted += 1
        self._conns[protocol] = host
        self._per_address[host] += 1
        self._pending[protocol] = asyncio.get_running_loop().call_later(
            self.limits.handshake_timeout, self._handshake_expired, protocol)
        protocol.usesender_for(self._sender)
        protocol.on_established(self._established)

        cids = self._cids[protocol] = [cid, quic.host_cid]

        def issued(cid: bytes) -> None:
            self._by_cid[cid] = protocol
            cids.append(cid)

        def retired(cid: bytes) -> None:
            self._by_cid.pop(cid, None)
            if cid in cids:
                cids.remove(cid)

        protocol._connection_id_issued_handler = issued
        protocol._connection_id_retired_handler = retired
        self._by_cid[cid] = protocol
        self._by_cid[quic.host_cid] = protocol
        return protocol

    def _handshake_expired(self, conn: DmscConnection) -> None:
        if self._pending.pop(conn, None) is not None:
            self.counters.expired += 1
            conn.close(ErrorCode.RESOURCE_EXHAUSTED, "handshake not completed in time")

    def _established(self, conn: DmscConnection) -> None:
        assert conn.peer is not None and conn.peer.identity is not None
        timer_ = self._pending.pop(conn, None)
        if timer_ is not None:
            timer_.cancel()
        entity = conn.peer.identity.entity_id
        self.peers[entity] = conn
        same = self._by_identity.setdefault(entity, [])
        same.append(conn)
        while len(same) > self.limits.max_per_identity:
            self.counters.evicted += 1
            same.pop(0).close(ErrorCode.RESOURCE_EXHAUSTED,
                              "too many connections of this identity")

    def _forget(self, conn: DmscConnection) -> None:
        for cid in self._cids.pop(conn, ()):
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        timer_ = self._pending.pop(conn, None)
        if timer_ is not None:
            timer_.cancel()
        host = self._conns.pop(conn, None)
        if host is not None:
            self._per_address[host] -= 1
            if not self._per_address[host]:
                del self._per_address[host]
        peer = conn._peer  # None: closed before its handshake completed
        identity = peer.identity if peer is not None else None
        if identity is not None:
            same = self._by_identity.get(identity.entity_id, [])
            if conn in same:
                same.remove(conn)
            if not same:
                self._by_identity.pop(identity.entity_id, None)
            if self.peers.get(identity.entity_id) is conn:
                del self.peers[identity.entity_id]
                if same:
                    self.peers[identity.entity_id] = same[-1]

    @property
    def pending(self) -> int:
        """Handshakes in progress."""
        return len(self._pending)

    @property
    def connections(self) -> int:
        """Connections, handshakes included."""
        return len(self._conns)

    def close(self) -> None:
        """Close every connection (application error CEASE) and the socket."""
        for conn in set(self._by_cid.values()):
            conn.close(ErrorCode.CEASE, "server shutting down")
        for timer_ in self._pending.values():
            timer_.cancel()
        self._pending.clear()
        self._by_cid.clear()
        self._cids.clear()
        self.peers.clear()
        if self._transport is not None:
            self._transport.close()
        self._keylog.close()


async def serve(host: str, port: int, tls: TlsIdentity, handler: Handler, *,
                pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                idle_timeout: float = IDLE_TIMEOUT,
                limits: QuicLimits | None = None) -> QuicServer:
    """Listen for DMSC over QUIC on ``host``:``port`` (0 for an ephemeral port).

    Beyond ``limits.retry_threshold`` handshakes in progress (0: always), a client must
    echo a Retry token before the server keeps any state or does any cryptography for
    it, so spoofed source addresses cannot make the server handshake (or amplify
    traffic) on their behalf; it costs one round trip.  Beyond the other limits
    (:class:`QuicLimits`), Initials are dropped; a handshake not completed in
    ``limits.handshake_timeout`` is closed."""
    loop = asyncio.get_running_loop()
    sock = await udp_socket(host, port, bind=True)
    server = QuicServer(tls, handler, pcap=pcap, keylog=KeyLog(keylog),
                        idle_timeout=idle_timeout, limits=limits, sock=sock)
    await loop.create_datagram_endpoint(lambda: server, sock=sock)
    assert server._drain is not None
    server._drain.install(loop)  # on asyncio's loop, datagram_received is not called
    return server

