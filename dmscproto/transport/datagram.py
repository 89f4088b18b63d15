"""The asyncio node shared by DMSC over DTLS (Section 9.2) and lab UDP (Section 9.4):
one UDP socket, a :class:`~.channel.Channel` (the sans-I/O security layer) and a
:class:`~.reliability.Reliability` (Section 9.3), with the same ``request``/handler API
as the QUIC binding.
"""


from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, TypeAlias, cast

from cryptography import x509

from ..codec.messages import Error, Message
from ..codec.registry import ErrorCode
from ..security.ca import Identity
from .channel import Channel, ChannelEvent, PayloadReceived, PeerConnected
from .contract import Done, settle, transaction_time_of
from .driver import Driver
from .errors import TransportError
from .peer import Handler as AnyHandler
from .peer import Outcome, dispatch
from .peer import PeerInfo as AnyPeerInfo
from .reliability import Reliability
from .reliability_events import (
    Address,
    DatagramRejected,
    MessageReceived,
    ReliabilityEvent,
    RequestAbandoned,
    RequestReceived,
    ResponseReceived,
)
from .tap import DatagramTap

log = logging.getLogger(__name__)



#: The peer of a datagram association (identity and certificate None only in lab mode,
#: Section 9.4).
PeerInfo: TypeAlias = AnyPeerInfo["DatagramConnection"]
#: Request handler, as for QUIC: its answer is sent back (None: ERROR UNEXPECTED_MESSAGE,
#: since a datagram transport has no "no response"); for one-way messages it is ignored.
Handler: TypeAlias = AnyHandler["DatagramConnection"]


class DatagramConnection:
    """One association with a peer over a :class:`DatagramNode`, usable in both directions
    like :class:`dmscproto.transport.quic.DmscConnection`."""

    def __init__(self, node: DatagramNode, address: tuple[str, int],
                 identity: Identity | None, certificate: x509.Certificate | None) -> None:
        self.node = node
        self.peer = PeerInfo(identity, certificate, address, self)
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def max_pdu(self) -> int:
        """The largest PDU this association carries (Section 9.2)."""
        return self.node.reliability.max_pdu

    @property
    def close_error(self) -> TransportError | None:
        """Always None: DTLS close_notify carries no code or reason."""
        return None

    async def request(self, msg: Message, timeout: float | None = None) -> Message:
        """Send request ``msg`` (retransmitted as needed) and return its answer, which may
        be ERROR, within ``timeout`` (by default its transaction time, Section 9.3).
        Raises :class:`TransportError` (TRANSACTION_TIMEOUT, peer gone) or
        :class:`PduTooLarge`."""
        return await self.node.request(self.peer.address, msg,
                                       self._transaction_time(msg, timeout))

    async def request_bytes(self, pdu: bytes, timeout: float | None = None) -> Message:
        """:meth:`request` with the request given as octets (which need not be a valid
        PDU, but must hold a header: conformance tests send malformed ones); by default
        it waits REQUEST_TIMEOUT."""
        return await self.node.request(
            self.peer.address, pdu,
            self.node.reliability.request_timeout if timeout is None else timeout)

    def start_request(self, msg: Message, done: Done, timeout: float | None = None) -> int:
        """Send request ``msg``; ``done`` gets its answer, or the exception :meth:`request`
        would raise, as soon as it is known (by default after the transaction time of
        Section 9.3).  Returns the transaction id, for :meth:`stop_request`."""
        return self.node.start_request(self.peer.address, msg, done,
                                       self._transaction_time(msg, timeout))

    def _transaction_time(self, msg: Message, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        return transaction_time_of(msg, request_timeout=self.node.reliability.request_timeout)

    def stop_request(self, key: int, code: ErrorCode = ErrorCode.CEASE) -> None:
        """Stop retransmitting request ``key``; its ``done`` is not called."""
        self.node.stop_request(self.peer.address, key)

    def send(self, msg: Message) -> None:
        """Send a one-way message once."""
        self.node.send_message(self.peer.address, msg)

    def close(self, error_code: int = ErrorCode.SUCCESS, reason_phrase: str = "") -> None:
        """End the association with DTLS close_notify (which carries no code or reason; the
        arguments exist for parity with QUIC); a client also closes its socket."""
        self.node.close_peer(self.peer.address)

    async def wait_closed(self) -> None:
        await self._closed.wait()


class DatagramNode(asyncio.DatagramProtocol):
    """asyncio glue: one UDP socket, a :class:`Channel` and a :class:`Reliability`.

    A server node accepts any number of peers (:attr:`connections` by address,
    :attr:`peers` by entity ID, like :class:`~dmscproto.transport.quic.QuicServer`); a
    client node has the one peer it connected to and closes its socket with it."""

    def __init__(self, channel: Channel, transport_name: str, handler: Handler | None, *,
                 is_client: bool, pcap: DatagramTap | None = None,
                 reliability: Reliability | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.channel = channel
        self.transport_name = transport_name
        self.handler = handler
        self.is_client = is_client
        self.reliability = reliability or Reliability()
        self.reliability.max_pdu = min(self.reliability.max_pdu, channel.max_pdu)
        self.connections: dict[Address, DatagramConnection] = {}
        self.peers: dict[bytes, DatagramConnection] = {}
        self._pcap = pcap
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._local: tuple[str, int] = ("0.0.0.0", 0)
        self._waiting: dict[tuple[Address, int], Done] = {}
        self._connecting: dict[Address, asyncio.Future[DatagramConnection]] = {}
        #: The handlers' answers still awaited (futures and tasks).
        self._running: set[asyncio.Future[Any]] = set()
        #: The channel's and the reliability layer's timers, on the loop's clock.
        self._driver = Driver(self, self._process, loop=self._loop)

    # -- asyncio.DatagramProtocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        host, port = transport.get_extra_info("sockname")[:2]
        self._local = (str(host), int(port))

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        peer = (str(addr[0]), int(addr[1]))
        if self._pcap is not None:
            self._pcap.write_udp(peer, self._local, data, time.time())
        self.channel.receive_datagram(data, peer, self._loop.time())
        self._process()

    def error_received(self, exc: Exception) -> None:
        log.debug("%s socket error: %s", self.transport_name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for addr in list(self.connections):
            self._peer_gone(addr, "socket closed")
        while (rev := self.reliability.next_event()) is not None:
            if isinstance(rev, RequestAbandoned):  # fail the requests still waiting
                self._on_reliability_event(rev)
        for fut in self._connecting.values():
            if not fut.done():
                fut.set_exception(TransportError(ErrorCode.TARGET_UNREACHABLE,
                                                 "socket closed"))
        for running in list(self._running):
            running.cancel()
        self._driver.stop()
        if self._on_close is not None:
            self._on_close()

    @property
    def address(self) -> tuple[str, int]:
        """The local socket address."""
        return self._local

    # -- API used by connections and the bindings ------------------------------------------
    async def connect(self, addr: tuple[str, int], timeout: float) -> DatagramConnection:
        """Set up the association with ``addr`` (the DTLS handshake, if any)."""
        fut: asyncio.Future[DatagramConnection] = self._loop.create_future()
        self._connecting[addr] = fut
        self.channel.connect(addr, self._loop.time())
        self._process()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TransportError(ErrorCode.TARGET_UNREACHABLE,
                                 f"no {self.transport_name} association within {timeout} s"
                                 ) from None
        finally:
            self._connecting.pop(addr, None)

    async def request(self, addr: Address, msg: Message | bytes, timeout: float) -> Message:
        fut: asyncio.Future[Message] = self._loop.create_future()
        txid = self.start_request(addr, msg, functools.partial(settle, fut), timeout)
        try:
            return await fut
        finally:
            self.stop_request(addr, txid)

    def start_request(self, addr: Address, msg: Message | bytes, done: Done,
                      timeout: float) -> int:
        """Send a request; ``done`` gets the outcome.  Returns the transaction id."""
        if addr not in self.connections:
            raise TransportError(ErrorCode.TARGET_UNREACHABLE, f"no association with {addr}")
        now = self._loop.time()
        txid = (self.reliability.send_request_bytes(addr, msg, now, timeout)
                if isinstance(msg, bytes)
                else self.reliability.send_request(addr, msg, now, timeout))
        self._waiting[(addr, txid)] = done
        self._process()
        return txid

    def stop_request(self, addr: Address, txid: int) -> None:
        """Stop retransmitting a request whose outcome is no longer wanted."""
        if self._waiting.pop((addr, txid), None) is not None:
            self.reliability.cancel(addr, txid)

    def send_message(self, addr: Address, msg: Message) -> None:
        if addr not in self.connections:
            raise TransportError(ErrorCode.TARGET_UNREACHABLE, f"no association with {addr}")
        self.reliability.send_message(addr, msg)
        self._process()

    def close_peer(self, addr: Address) -> None:
        self.channel.close(addr)
        self._process()
        if self.is_client:
            self.close()

    def close(self) -> None:
        """Close every association and the socket."""
        for addr in list(self.connections):
            self.channel.close(addr)
        self._process()
        if self._transport is not None:
            self._transport.close()

    # -- the engine ------------------------------------------------------------------------
    def _process(self) -> None:
        now = self._loop.time()
        while True:
            while (cev := self.channel.next_event()) is not None:
                self._on_channel_event(cev, now)
            while (rev := self.reliability.next_event()) is not None:
                self._on_reliability_event(rev)
            out = self.reliability.datagrams_to_send()
            if not out:
                break
            for payload, addr in out:
                if addr in self.connections:
                    self.channel.send(addr, payload)
        if self._transport is not None and not self._transport.is_closing():
            for data, addr in self.channel.datagrams_to_send(now):
                self._transport.sendto(data, addr)  # type: ignore[arg-type]
                if self._pcap is not None:
                    self._pcap.write_udp(self._local, addr, data,  # type: ignore[arg-type]
                                         time.time())
        self._driver.arm()

    def _on_channel_event(self, ev: ChannelEvent, now: float) -> None:
        if isinstance(ev, PayloadReceived):
            self.reliability.receive(ev.addr, ev.data, now)
        elif isinstance(ev, PeerConnected):
            address = ev.addr
            assert isinstance(address, tuple)
            conn = DatagramConnection(self, address, ev.identity, ev.certificate)
            self._peer_gone(ev.addr, "replaced by a new association")
            self.connections[ev.addr] = conn
            if ev.identity is not None:
                self.peers[ev.identity.entity_id] = conn
            fut = self._connecting.get(ev.addr)
            if fut is not None and not fut.done():
                fut.set_result(conn)
        else:
            self._peer_gone(ev.addr, ev.reason)
            fut = self._connecting.get(ev.addr)
            if fut is not None and not fut.done():
                fut.set_exception(TransportError(ev.code, ev.reason))

    def _peer_gone(self, addr: Address, reason: str) -> None:
        conn = self.connections.pop(addr, None)
        if conn is None:
            return
        identity = conn.peer.identity
        if identity is not None and self.peers.get(identity.entity_id) is conn:
            del self.peers[identity.entity_id]
        conn._closed.set()
        self.reliability.forget_peer(addr, reason)

    def _on_reliability_event(self, ev: ReliabilityEvent) -> None:
        # outcomes and requests are handed on in a loop callback of their own: what they
        # send comes back here, and this runs inside _process
        if isinstance(ev, ResponseReceived | RequestAbandoned):
            done = self._waiting.pop((ev.peer, ev.transaction_id), None)
            if done is not None:
                self._loop.call_soon(done, ev.response if isinstance(ev, ResponseReceived)
                                     else TransportError(ev.code, ev.reason))
        elif isinstance(ev, RequestReceived | MessageReceived):
            conn = self.connections.get(ev.peer)
            if conn is None:
                pass
            elif self.handler is None:
                self._loop.call_soon(self._answered, conn, ev, Error(
                    status=ErrorCode.UNEXPECTED_MESSAGE, offending_type=ev.message.TYPE,
                    diagnostic="this endpoint serves no requests"))
            else:
                self._loop.call_soon(dispatch, self.handler, ev.message, conn.peer,
                                     functools.partial(self._answered, conn, ev),
                                     self._running)
        elif isinstance(ev, DatagramRejected):
            log.info("%s: invalid PDU from %s: %s", self.transport_name, ev.peer, ev.error)

    def _answered(self, conn: DatagramConnection, ev: RequestReceived | MessageReceived,
                  outcome: Outcome) -> None:
        msg = ev.message
        answer: Message | None
        if isinstance(outcome, BaseException):
            log.error("%s handler failed on %s", self.transport_name, msg.TYPE.name,
                      exc_info=outcome)
            answer = Error(status=ErrorCode.INTERNAL_ERROR, offending_type=msg.TYPE)
        else:
            answer = outcome
        if isinstance(ev, MessageReceived) or conn.closed:
            return
        if answer is None:
            answer = Error(status=ErrorCode.UNEXPECTED_MESSAGE, offending_type=msg.TYPE,
                           diagnostic="no response")
        self.reliability.respond(ev.peer, msg, answer, self._loop.time())
        self._process()

    # -- the timers, for the driver --------------------------------------------------------
    def get_timer(self) -> float | None:
        times = [t for t in (self.channel.get_timer(), self.reliability.get_timer())
                 if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        self.reliability.handle_timer(now)


async def start_node(channel: Channel, transport_name: str, handler: Handler | None, *,
                     local_addr: tuple[str, int] | None = None,
                     remote_addr: tuple[str, int] | None = None,
                     pcap: DatagramTap | None = None, reliability: Reliability | None = None,
                     on_close: Callable[[], None] | None = None) -> DatagramNode:
    """Run a :class:`DatagramNode` on a new UDP socket: a server bound to ``local_addr``,
    or a client connected to ``remote_addr`` (IPv4)."""
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_datagram_endpoint(
        lambda: DatagramNode(channel, transport_name, handler, is_client=remote_addr is not None,
                             pcap=pcap, reliability=reliability, on_close=on_close),
        local_addr=local_addr, remote_addr=remote_addr, family=socket.AF_INET)
    assert isinstance(protocol, DatagramNode)
    return protocol


async def open_client(channel: Channel, transport_name: str, handler: Handler | None,
                      host: str, port: int, timeout: float, *, pcap: DatagramTap | None = None,
                      reliability: Reliability | None = None,
                      on_close: Callable[[], None] | None = None) -> DatagramConnection:
    """Associate with ``host``:``port`` from a new client socket; on failure the socket is
    closed and :class:`TransportError` raised."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    addr = (str(infos[0][4][0]), int(infos[0][4][1]))
    node = await start_node(channel, transport_name, handler, remote_addr=addr, pcap=pcap,
                            reliability=reliability, on_close=on_close)
    try:
        return await node.connect(addr, timeout)
    except BaseException:
        node.close()
        raise
