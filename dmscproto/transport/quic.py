"""DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1): asyncio glue around aioquic.

* ALPN ``dmsc/1``; mutual TLS 1.3 with domain certificates (:mod:`.tls`).
* One bidirectional stream per transaction: the requester opens a new stream and writes
  the request PDU and FIN, the responder answers on the same stream with the response
  PDU and FIN (or a bare FIN when it has no answer).  Either end may open streams: a
  gateway sends a ROUTE-REQUEST to an agent over the connection the agent opened.
* A malformed PDU on a stream is answered with an ERROR carrying the decoding error
  code (Section 4.4); the connection keeps serving.
* QUIC application error codes (STOP_SENDING, CONNECTION_CLOSE) are DMSC error codes.
* Every datagram sent and received can be written to a pcap file (synthetic IPv4/UDP
  headers, no root needed), and the TLS secrets to an SSLKEYLOGFILE-format key log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import weakref
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeAlias, cast

from aioquic._buffer import Buffer
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from ..codec.errors import DecodeError, EncodeError
from ..codec.messages import Error, Message
from ..codec.pdu import decode, encode
from ..codec.registry import (
    MAX_PDU_SIZE,
    QUIC_CLOSE_WAIT,
    QUIC_CONNECT_TIMEOUT,
    ErrorCode,
    limit,
    timer,
)
from .errors import TransportError
from .framing import StreamAssembler
from .keylog import KeyLog
from .peer import Handler as AnyHandler
from .peer import PeerInfo as AnyPeerInfo
from .recorder import SocketRecorder, sender_for
from .tap import DatagramTap
from .tls import DmscQuicConnection, TlsIdentity, code_for_quic_error

log = logging.getLogger(__name__)

#: How long a requester waits for an answer (Section 8).
REQUEST_TIMEOUT = timer("REQUEST_TIMEOUT")
#: How long connect() waits for the handshake and its confirmation.
CONNECT_TIMEOUT = QUIC_CONNECT_TIMEOUT
#: QUIC max_idle_timeout both ends advertise, and the interval at which a client sends
#: a PING on an otherwise idle connection so that a gateway can keep using it to reach
#: the agent (Sections 8 and 9.1).
IDLE_TIMEOUT = timer("QUIC_IDLE_TIMEOUT")
KEEPALIVE_INTERVAL = timer("QUIC_PING_INTERVAL")


class ConnectionClosed(TransportError):
    """The QUIC connection is closed.  ``quic_error`` is the code it was closed with:
    a DMSC error code for an application close, 0x100 + a TLS alert for a refused
    handshake (``code`` then names the certificate error), else a QUIC transport error."""

    def __init__(self, quic_error: int, reason: str, code: ErrorCode) -> None:
        super().__init__(code, f"connection closed (0x{quic_error:x}) {reason}".rstrip())
        self.quic_error = quic_error

    @classmethod
    def of(cls, quic_error: int, application: bool, reason: str,
           refusal: ErrorCode | None = None) -> ConnectionClosed:
        """From a CONNECTION_CLOSE; ``refusal`` is this end's own certificate verdict."""
        code = ErrorCode.CEASE
        if refusal is not None:
            code = refusal
        elif not application:
            code = code_for_quic_error(quic_error)
        elif quic_error != ErrorCode.SUCCESS:
            with suppress(ValueError):
                code = ErrorCode(quic_error)
        return cls(quic_error, reason, code)


#: The peer of a QUIC connection (its identity and certificate are always set).
PeerInfo: TypeAlias = AnyPeerInfo["DmscConnection"]
#: A request handler on QUIC connections; None answers with a bare FIN.
Handler: TypeAlias = AnyHandler["DmscConnection"]


#: PING identifiers: the client's post-handshake confirmation (see wait_established),
#: and keepalives.
_CONFIRM_PING, _KEEPALIVE_PING = 0, 1


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as retrieved: nobody need wait for it."""
    if not future.cancelled():
        future.exception()


#: Most datagrams read from a socket in one event-loop turn (asyncio reads one).
_DRAIN = 64
#: Largest UDP payload read.
_MAX_DATAGRAM = 65535


def _drain(sock: socket.socket, received: Callable[[bytes, NetworkAddress], None],
           error: Callable[[Exception], None]) -> None:
    """Hand ``received`` the datagrams already waiting on ``sock`` (non-blocking), up to
    _DRAIN: one event-loop turn serves them all and their answers leave in one transmit
    pass (asyncio's datagram transport reads one datagram per turn)."""
    for _ in range(_DRAIN - 1):
        try:
            data, addr = sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # an ICMP error on a connected socket, or closed
            error(exc)
            return
        received(data, addr)


class _Flusher:
    """The connections of one event loop with something to send.  They transmit once
    per loop turn, together, after everything that ran in the turn queued its frames:
    the datagrams received, the handlers that answered them, the ACKs they carry."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[DmscConnection, None] = {}
        self._handle: asyncio.Handle | None = None

    def add(self, conn: DmscConnection) -> None:
        self._due[conn] = None
        if self._handle is None:
            self._handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._handle = None
        due, self._due = self._due, {}
        for conn in due:
            try:
                conn.transmit()
            except Exception:  # as when each had a callback of its own: log, go on
                log.exception("transmit failed on a QUIC connection")


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary())


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    flusher = _FLUSHERS.get(loop)
    if flusher is None:
        flusher = _FLUSHERS[loop] = _Flusher(loop)
    return flusher


@dataclass(slots=True)
class _Outgoing:
    """A transaction this end started: the response being reassembled."""

    assembler: StreamAssembler
    future: asyncio.Future[Message]


@dataclass(slots=True)
class _State:
    outgoing: dict[int, _Outgoing | None] = field(default_factory=dict)
    incoming: dict[int, StreamAssembler | None] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class DmscConnection(QuicConnectionProtocol):
    """One DMSC-over-QUIC connection, usable in both directions: :meth:`request` sends
    a transaction on a new stream; requests the peer opens go to ``handler``.
    Requests are only handled and sent once the peer's certificate is verified."""

    _quic: DmscQuicConnection
    # slots keep aioquic's instance dict at its smallest size (memory per connection)
    __slots__ = ("_closed_error", "_confirmed", "_established", "_flusher", "_keepalive",
                 "_keepalive_handle", "_local_bit", "_on_close", "_owns_transport", "_pcap",
                 "_peer", "_raw_transport", "_recorder", "_s", "_sock", "datagrams_received",
                 "datagrams_sent", "handler")

    def __init__(self, quic: DmscQuicConnection, *, handler: Handler | None = None,
                 pcap: DatagramTap | None = None, owns_transport: bool = False,
                 on_close: Callable[[DmscConnection], None] | None = None,
                 keepalive: float | None = None, sock: socket.socket | None = None) -> None:
        super().__init__(quic)
        #: The connection's own socket (``owns_transport``), read directly to drain it.
        self._sock = sock
        self.handler = handler
        self._peer: PeerInfo | None = None
        self._pcap = pcap
        self._recorder: SocketRecorder | None = None
        self._owns_transport = owns_transport
        self._on_close = on_close
        self._established: list[Callable[[DmscConnection], None]] = []
        self._closed_error: ConnectionClosed | None = None
        self._raw_transport: asyncio.DatagramTransport | None = None
        self._local_bit = 0 if quic.configuration.is_client else 1
        self._s = _State()
        self._confirmed: asyncio.Future[None] = self._loop.create_future()
        self._confirmed.add_done_callback(_retrieve)
        self._keepalive = keepalive
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._flusher = _flusher(self._loop)
        #: UDP datagrams this connection sent and received (benchmarks count them).
        self.datagrams_sent = 0
        self.datagrams_received = 0

    # --- asyncio / aioquic plumbing --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        dgram = cast(asyncio.DatagramTransport, transport)
        if self._owns_transport and self._pcap is not None:
            self._recorder = SocketRecorder(self._pcap, dgram)
        super().connection_made(sender_for(dgram, self._recorder))
        self._raw_transport = dgram

    def usesender_for(self, sender: asyncio.DatagramTransport) -> None:
        """Server side: send through the listening socket (and its recorder)."""
        super().connection_made(sender)
        self._raw_transport = sender

    def transmit(self) -> None:
        """aioquic's, counting datagrams (and it leaves no transmit task behind)."""
        transport = self._transport
        assert transport is not None
        for data, addr in self._quic.datagrams_to_send(now=self._loop.time()):
            transport.sendto(data, addr)
            self.datagrams_sent += 1
        timer_at = self._quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self._loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at

    def _transmit_soon(self) -> None:
        self._flusher.add(self)

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        self._received(cast(bytes, data), addr)
        if self._sock is not None:
            _drain(self._sock, self._received, self.error_received)

    def _received(self, data: bytes, addr: NetworkAddress) -> None:
        """One datagram: aioquic's processing, but the transmit that follows is left to
        the end of this event-loop turn (the handlers' answers go with it)."""
        self.datagrams_received += 1
        if self._recorder is not None:
            self._recorder.received(data, addr)
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events()
        self._transmit_soon()

    def error_received(self, exc: Exception) -> None:
        """A client's own socket reports an ICMP error: during the handshake, a refused
        port means nothing listens there, so connecting fails at once (not after
        CONNECT_TIMEOUT)."""
        if (self._owns_transport and isinstance(exc, ConnectionRefusedError)
                and not self._confirmed.done()):
            self._confirmed.set_exception(TransportError(
                ErrorCode.TARGET_UNREACHABLE,
                "connection refused (nothing listens on that UDP port)"))

    @property
    def peer(self) -> PeerInfo:
        """Who is at the other end (set once the handshake authenticated it: every
        connection :func:`connect` returns or a handler sees has it)."""
        if self._peer is None:
            raise TransportError(ErrorCode.UNEXPECTED_MESSAGE, "connection not established")
        return self._peer

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    @property
    def close_error(self) -> ConnectionClosed | None:
        """Why the connection closed (the peer's code and reason), once it has."""
        return self._closed_error

    @property
    def quic(self) -> DmscQuicConnection:
        return self._quic

    @property
    def max_pdu(self) -> int:
        """The largest PDU this connection carries: a stream takes any (Section 9.1)."""
        return MAX_PDU_SIZE

    def close(self, error_code: int = ErrorCode.SUCCESS, reason_phrase: str = "") -> None:
        """Close with a DMSC error code as the QUIC application error code.  Pending
        requests fail and running handlers are cancelled at once;
        :meth:`wait_closed` returns when QUIC's closing period is over."""
        super().close(error_code=int(error_code), reason_phrase=reason_phrase)
        if self._closed_error is None:
            self._fail_all(ConnectionClosed(int(error_code), f"closed locally {reason_phrase}",
                                            ErrorCode.CEASE))

    async def wait_established(self) -> None:
        """Wait until both ends are authenticated.  At the client, the TLS handshake
        completes before the server has checked the client certificate, so the client
        sends a PING on completion and waits for its acknowledgement: a server that
        refuses the certificate closes the connection instead of acknowledging."""
        await asyncio.shield(self._confirmed)

    # --- transactions ----------------------------------------------------------------
    async def request(self, msg: Message, timeout: float | None = REQUEST_TIMEOUT) -> Message:
        """Send ``msg`` on a new stream and return the response PDU, decoded.

        Raises :class:`TransportError` (TRANSACTION_TIMEOUT, connection closed, no
        response) or :class:`DecodeError` for a malformed response."""
        return await self.request_bytes(encode(msg), timeout)

    async def request_bytes(self, pdu: bytes,
                            timeout: float | None = REQUEST_TIMEOUT) -> Message:
        """:meth:`request` with the request given as raw octets (which need not be a
        valid PDU: conformance tests send malformed ones)."""
        stream_id = self._open(pdu)
        future: asyncio.Future[Message] = self._loop.create_future()
        self._s.outgoing[stream_id] = _Outgoing(StreamAssembler(), future)
        expiry = (None if timeout is None
                  else self._loop.call_later(timeout, self._expire, stream_id, timeout))
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(stream_id, ErrorCode.CEASE)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    def _expire(self, stream_id: int, timeout: float) -> None:
        """A request's answer did not come in time (a timer, not ``asyncio.wait_for``,
        whose extra future costs a loop turn per request)."""
        pending = self._s.outgoing.get(stream_id)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(TransportError(
                ErrorCode.TRANSACTION_TIMEOUT, f"no response within {timeout} s"))
            self._abandon(stream_id, ErrorCode.TRANSACTION_TIMEOUT)

    def send(self, msg: Message) -> None:
        """Send ``msg`` on a new stream without waiting for an answer."""
        self._s.outgoing[self._open(encode(msg))] = None

    def _open(self, data: bytes) -> int:
        if self._closed_error is not None:
            raise self._closed_error
        if self._peer is None:
            raise TransportError(ErrorCode.UNEXPECTED_MESSAGE, "connection not established")
        stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream_id, data, end_stream=True)
        self._transmit_soon()
        return stream_id

    def _abandon(self, stream_id: int, code: ErrorCode) -> None:
        """Stop reading a stream whose answer is no longer wanted; later data on it
        is discarded until the peer resets or finishes it."""
        if self._closed_error is None and stream_id in self._s.outgoing:
            self._s.outgoing[stream_id] = None
            with suppress(ValueError, AssertionError):
                self._quic.stop_stream(stream_id, int(code))
            self._transmit_soon()

    # --- events ----------------------------------------------------------------------
    def on_established(self, callback: Callable[[DmscConnection], None]) -> None:
        self._established.append(callback)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            if self._peer is None:
                return  # nothing is processed before the peer is authenticated
            if event.stream_id & 1 == self._local_bit:
                self._response_data(event.stream_id, event.data, event.end_stream)
            else:
                self._request_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            self._stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, events.StopSendingReceived):
            with suppress(ValueError, AssertionError):  # the peer wants no answer
                self._quic.reset_stream(event.stream_id, event.error_code)
        elif isinstance(event, events.HandshakeCompleted):
            self._handshake_completed()
        elif isinstance(event, events.PingAcknowledged):
            if event.uid == _CONFIRM_PING and not self._confirmed.done():
                self._confirmed.set_result(None)
        elif isinstance(event, events.ConnectionTerminated):
            self._terminated(event.error_code, event.frame_type is None, event.reason_phrase)

    def _handshake_completed(self) -> None:
        identity, cert = self._quic.peer_identity, self._quic.peer_certificate
        if identity is None or cert is None:  # cannot happen with _MutualTlsContext
            self.close(ErrorCode.UNTRUSTED_CERTIFICATE, "peer not authenticated")
            return
        self._quic.release_handshake_state()
        address = self._quic.get_peer_address() or ("", 0)
        self._peer = PeerInfo(identity, cert, address, self)
        if self._quic.configuration.is_client:
            self._quic.send_ping(_CONFIRM_PING)  # sent by the transmit() that follows
        else:
            self._confirmed.set_result(None)
        if self._keepalive:
            self._keepalive_handle = self._loop.call_later(self._keepalive, self._ping_idle)
        for callback in self._established:
            callback(self)

    def _terminated(self, quic_error: int, application: bool, reason: str) -> None:
        if self._quic.refusal is not None:
            log.warning("refused the certificate of %s: %s (%s)",
                        self._quic.get_peer_address(), self._quic.refusal.name, reason)
        self._fail_all(ConnectionClosed.of(quic_error, application, reason,
                                           self._quic.refusal))
        if self._owns_transport and self._raw_transport is not None:
            self._loop.call_soon(self._raw_transport.close)
        if self._on_close is not None:
            self._on_close(self)

    def _ping_idle(self) -> None:
        assert self._keepalive is not None
        if self._closed_error is not None:
            return
        self._quic.send_ping(_KEEPALIVE_PING)
        self.transmit()
        self._keepalive_handle = self._loop.call_later(self._keepalive, self._ping_idle)

    def _fail_all(self, error: ConnectionClosed) -> None:
        self._closed_error = error
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        if not self._confirmed.done():
            self._confirmed.set_exception(error)
        for pending in self._s.outgoing.values():
            if pending is not None and not pending.future.done():
                pending.future.set_exception(error)
        self._s.outgoing.clear()
        self._s.incoming.clear()
        for task in self._s.tasks:
            task.cancel()

    def _stream_reset(self, stream_id: int, error_code: int) -> None:
        pending = self._s.outgoing.pop(stream_id, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(TransportError(
                ErrorCode.TRANSACTION_TIMEOUT
                if error_code == ErrorCode.TRANSACTION_TIMEOUT else ErrorCode.INTERNAL_ERROR,
                f"peer reset the stream (code 0x{error_code:x})"))
        self._s.incoming.pop(stream_id, None)

    def _response_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id not in self._s.outgoing:
            return
        pending = self._s.outgoing[stream_id]
        if pending is None:  # one-way send or abandoned: discard
            if end:
                del self._s.outgoing[stream_id]
            return
        try:
            pdu = pending.assembler.feed(data, end)
            if pdu is None:
                return
            if not pdu:
                raise TransportError(ErrorCode.UNEXPECTED_MESSAGE,
                                     "peer finished the stream without a response")
            result: Message | BaseException = decode(pdu)
        except (DecodeError, TransportError) as exc:
            result = exc
        if not pending.future.done():
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        if end:
            del self._s.outgoing[stream_id]
        else:
            self._abandon(stream_id, ErrorCode.TRAILING_DATA)

    def _request_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id in self._s.incoming:
            known = self._s.incoming[stream_id]
            if known is None:  # refused earlier: discard the rest of the stream
                if end:
                    del self._s.incoming[stream_id]
                return
            assembler = known
        else:
            assembler = self._s.incoming[stream_id] = StreamAssembler()
        try:
            pdu = assembler.feed(data, end)
            if pdu is None:
                return
            del self._s.incoming[stream_id]
            if not pdu:
                self._reply(stream_id, None)
                return
            msg = decode(pdu)
        except DecodeError as exc:
            header = assembler.header()
            self._reply(stream_id, Error(
                transaction_id=header[1] if header else 0, status=exc.code,
                offending_type=header[0] if header else None, diagnostic=exc.reason))
            if not end:  # the rest of the stream is not wanted
                self._s.incoming[stream_id] = None
                with suppress(ValueError, AssertionError):
                    self._quic.stop_stream(stream_id, int(exc.code))
            else:
                self._s.incoming.pop(stream_id, None)
            return
        task = self._loop.create_task(self._serve(stream_id, msg))
        self._s.tasks.add(task)
        task.add_done_callback(self._s.tasks.discard)

    async def _serve(self, stream_id: int, msg: Message) -> None:
        peer = self.peer
        response: Message | None
        if self.handler is None:
            response = Error(transaction_id=msg.transaction_id,
                             status=ErrorCode.UNEXPECTED_MESSAGE, offending_type=msg.TYPE,
                             diagnostic="this endpoint serves no requests")
        else:
            try:
                response = await self.handler(msg, peer)
            except Exception:
                log.exception("handler failed on %s from %s", msg.TYPE.name,
                              peer.identity.uri if peer.identity else "?")
                response = Error(transaction_id=msg.transaction_id,
                                 status=ErrorCode.INTERNAL_ERROR, offending_type=msg.TYPE)
        if self._closed_error is None:
            self._reply(stream_id, response)

    def _reply(self, stream_id: int, response: Message | None) -> None:
        try:
            data = encode(response) if response is not None else b""
        except EncodeError as exc:
            log.error("cannot encode response: %s", exc)
            data = encode(Error(transaction_id=response.transaction_id if response else 0,
                                status=ErrorCode.INTERNAL_ERROR, diagnostic="response encoding"))
        try:
            self._quic.send_stream_data(stream_id, data, end_stream=True)
        except (ValueError, AssertionError) as exc:  # peer reset the stream meanwhile
            log.debug("stream %d gone before the response: %s", stream_id, exc)
            return
        self._transmit_soon()


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
        #: The listening socket, read directly to drain it (see _drain).
        self._sock = sock
        self.handler = handler
        self.peers: dict[bytes, DmscConnection] = {}
        self._configuration = tls.configuration(is_client=False, keylog=keylog.file,
                                                idle_timeout=idle_timeout)
        self._verifier = tls.verifier()
        self._pcap = pcap
        self._keylog = keylog
        self._by_cid: dict[bytes, DmscConnection] = {}
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
        self._received(data, addr)
        if self._sock is not None:
            _drain(self._sock, self._received, self.error_received)

    def _received(self, data: bytes, addr: NetworkAddress) -> None:
        assert self._sender is not None
        if self._recorder is not None:
            self._recorder.received(data, addr)
        try:
            header = pull_quic_header(Buffer(data=data),
                                      host_cid_length=self._configuration.connection_id_length)
        except ValueError:
            return
        protocol = self._by_cid.get(header.destination_cid)
        if protocol is None:
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

        def issued(cid: bytes) -> None:
            self._by_cid[cid] = protocol

        def retired(cid: bytes) -> None:
            self._by_cid.pop(cid, None)

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
        for cid in [c for c, p in self._by_cid.items() if p is conn]:
            del self._by_cid[cid]
        timer_ = self._pending.pop(conn, None)
        if timer_ is not None:
            timer_.cancel()
        host = self._conns.pop(conn, None)
        if host is not None:
            self._per_address[host] -= 1
            if not self._per_address[host]:
                del self._per_address[host]
        identity = conn.peer.identity if conn.peer is not None else None
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
    sock = await _udp_socket(host, port, bind=True)
    server = QuicServer(tls, handler, pcap=pcap, keylog=KeyLog(keylog),
                        idle_timeout=idle_timeout, limits=limits, sock=sock)
    await loop.create_datagram_endpoint(lambda: server, sock=sock)
    return server


async def _udp_socket(host: str, port: int, *, bind: bool) -> socket.socket:
    """A non-blocking UDP socket bound to (``bind``) or connected to ``host``:``port``,
    the first address of ``host`` that works (as ``create_datagram_endpoint`` does); the
    caller keeps it to drain it (:func:`_drain`)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE if bind else 0)
    error: OSError = OSError(f"no address for {host}:{port}")
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if bind:
                sock.bind(addr)
            else:
                sock.connect(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


async def connect(host: str, port: int, tls: TlsIdentity, *, server_name: str | None = None,
                  expect_domain: str | None = None, handler: Handler | None = None,
                  pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                  timeout: float = CONNECT_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                  keepalive: float | None = KEEPALIVE_INTERVAL) -> DmscConnection:
    """Open a DMSC connection to a gateway and wait until both ends are authenticated.

    ``server_name`` is sent as SNI and checked against the server certificate's DNS
    names; ``expect_domain`` requires the server's identity to be in that domain.
    ``handler`` serves requests the server sends over this connection; ``keepalive``
    (seconds, None for none) keeps an idle connection open by sending PINGs."""
    loop = asyncio.get_running_loop()
    sock = await _udp_socket(host, port, bind=False)
    addr = sock.getpeername()
    key_log = KeyLog(keylog)
    quic = DmscQuicConnection(
        configuration=tls.configuration(is_client=True, server_name=server_name,
                                        keylog=key_log.file, idle_timeout=idle_timeout),
        verifier=tls.verifier(server_name=server_name, expect_domain=expect_domain))
    transport, conn = await loop.create_datagram_endpoint(
        lambda: DmscConnection(quic, handler=handler, pcap=pcap, owns_transport=True,
                               on_close=lambda _c: key_log.close(), keepalive=keepalive,
                               sock=sock),
        sock=sock)
    try:
        conn.connect(addr)
        await asyncio.wait_for(conn.wait_established(), timeout)
    except BaseException as exc:
        conn.close(ErrorCode.CEASE)
        transport.close()
        key_log.close()
        where = f"{host}:{port}"
        if isinstance(exc, TimeoutError):
            raise TransportError(ErrorCode.TARGET_UNREACHABLE,
                                 f"no QUIC handshake with {where} within {timeout:g} s "
                                 "(is a DMSC gateway listening there?)") from None
        if isinstance(exc, TransportError) and not isinstance(exc, ConnectionClosed):
            raise TransportError(exc.code, f"{where}: {exc.reason}") from None
        raise
    return conn


class ConnectionPool:
    """One reused connection per peer address (Section 9.1), opened on first use."""

    def __init__(self, tls: TlsIdentity, *, handler: Handler | None = None,
                 pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                 **connect_options: Any) -> None:
        self.tls = tls
        self._handler = handler
        self._pcap = pcap
        self._keylog = KeyLog(keylog)
        self._options = connect_options
        self._conns: dict[tuple[str, int], asyncio.Task[DmscConnection]] = {}

    async def get(self, host: str, port: int, **options: Any) -> DmscConnection:
        key = (host, port)
        task = self._conns.get(key)
        if task is not None and task.done() and (task.exception() or task.result().closed):
            task = None
        if task is None:
            task = asyncio.ensure_future(connect(
                host, port, self.tls, handler=self._handler, pcap=self._pcap,
                keylog=self._keylog.file, **{**self._options, **options}))
            self._conns[key] = task
        return await asyncio.shield(task)

    async def request(self, host: str, port: int, msg: Message,
                      timeout: float | None = REQUEST_TIMEOUT) -> Message:
        return await (await self.get(host, port)).request(msg, timeout)

    async def close(self) -> None:
        """Close every connection and wait (briefly) for them to finish closing."""
        conns = [t.result() for t in self._conns.values()
                 if t.done() and not t.cancelled() and t.exception() is None]
        for task in self._conns.values():
            task.cancel()
        self._conns.clear()
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.wait_closed()) for c in conns],
                               timeout=QUIC_CLOSE_WAIT)
        self._keylog.close()

