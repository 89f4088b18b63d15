"""One authenticated QUIC connection on the event loop (draft-dmsc-protocol-00, Section
9.1): aioquic's protocol with its socket drained per loop turn, its timer and its
transmits (once per loop turn, with every other connection's) run by the transports'
one driver (:mod:`..driver`), the client's post-handshake confirmation, keepalive PINGs
and closing.  What runs over it, the stream transactions, is :mod:`.streams`."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Self, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress

from ...codec.registry import MAX_PDU_SIZE, ErrorCode, timer
from ..driver import Driver, end_of_turn, loop_clock
from ..errors import TransportError
from ..peer import PeerInfo
from ..recorder import SocketRecorder, sender_for
from ..tap import DatagramTap
from ..tls import DmscQuicConnection
from .errors import ConnectionClosed
from .sockets import Drain

log = logging.getLogger(__name__)
#: The event of a stream's data received (looked up once).
_STREAM_DATA = events.StreamDataReceived

#: QUIC max_idle_timeout both ends advertise, and the interval at which a client sends
#: a PING on an otherwise idle connection so that a gateway can keep using it to reach
#: the agent (Sections 8 and 9.1).
IDLE_TIMEOUT = timer("QUIC_IDLE_TIMEOUT")
KEEPALIVE_INTERVAL = timer("QUIC_PING_INTERVAL")

#: PING identifiers: the client's post-handshake confirmation (see wait_established),
#: and keepalives.
_CONFIRM_PING, _KEEPALIVE_PING = 0, 1


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as retrieved: nobody need wait for it."""
    if not future.cancelled():
        future.exception()


class QuicLink(QuicConnectionProtocol):
    """An authenticated QUIC connection (module docstring); nothing is processed before
    the peer's certificate is verified."""

    _quic: DmscQuicConnection
    # slots keep aioquic's instance dict at its smallest size (memory per connection)
    __slots__ = ("_clock", "_closed_error", "_confirmed", "_drain", "_driver", "_established",
                 "_keepalive", "_keepalive_handle", "_on_close", "_owns_transport", "_pcap",
                 "_peer", "_raw_transport", "_recorder", "_turn", "datagrams_received",
                 "datagrams_sent")

    def __init__(self, quic: DmscQuicConnection, *, pcap: DatagramTap | None = None,
                 owns_transport: bool = False, on_close: Callable[[Self], None] | None = None,
                 keepalive: float | None = None, sock: socket.socket | None = None) -> None:
        super().__init__(quic)
        #: Reads the datagrams waiting on the connection's own socket (``owns_transport``).
        self._drain = (None if sock is None else Drain(
            sock, self._received, self.error_received, self._loop, adaptive=False))
        self._peer: PeerInfo[Self] | None = None
        self._pcap = pcap
        self._recorder: SocketRecorder | None = None
        self._owns_transport = owns_transport
        self._on_close = on_close
        self._established: list[Callable[[Self], None]] = []
        self._closed_error: ConnectionClosed | None = None
        self._raw_transport: asyncio.DatagramTransport | None = None
        self._confirmed: asyncio.Future[None] = self._loop.create_future()
        self._confirmed.add_done_callback(_retrieve)
        self._keepalive = keepalive
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._turn = end_of_turn(self._loop)
        self._clock = loop_clock(self._loop)
        #: aioquic's timer, on the loop's clock (aioquic's own _timer is left unused);
        #: lazy: its deadline moves with every packet, and an earlier timer firing early
        #: costs less than cancelling and arming one per transmit.
        self._driver = Driver(quic, self._timer_fired, lazy=True, loop=self._loop)
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
        """aioquic's, counting datagrams (and it leaves no transmit task behind).  The
        connection's own socket is connected: sent to without an address (uvloop refuses
        one there, EISCONN, where asyncio checks it is the peer's)."""
        transport, clock = self._transport, self._clock
        assert transport is not None
        owned = self._owns_transport
        for data, addr in self._quic.datagrams_to_send(clock()):
            transport.sendto(data, None if owned else addr)
            self.datagrams_sent += 1
        self._driver.arm()

    def _timer_fired(self) -> None:
        self._process_events()
        self.transmit()

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        turn = self._turn
        holds = not turn.held  # the transmits follow these datagrams at once
        turn.held = True
        try:
            self._received(data, addr)  # type: ignore[arg-type]  # bytes: a UDP socket's
            if self._drain is not None:
                self._drain.read()
        finally:
            if holds:
                turn.release()

    def _received(self, data: bytes, addr: NetworkAddress) -> None:
        """One datagram: aioquic's processing, but the transmit that follows is left to
        the end of this event-loop turn (the handlers' answers go with it), and made
        only if the datagram needs one at once (:meth:`.transmit_due`); otherwise
        the timer, re-armed, covers its acknowledgement."""
        self.datagrams_received += 1
        if self._recorder is not None:
            self._recorder.received(data, addr)
        clock = self._clock  # self._clock() is never specialised (~100 instructions more)
        now = clock()
        self._quic.receive_datagram(data, addr, now)
        self._process_events()
        if self._quic.transmit_due(now):
            self._turn.add(self.transmit)
        else:
            self._driver.arm()

    def _process_events(self) -> None:
        """aioquic's, with the usual events, a stream's data, handed to
        :meth:`quic_event_received` at once (aioquic's tests each against five other
        event types first, and asks for one more at the end); from any other event on,
        aioquic's."""
        queue = self._quic._events  # a list or a deque: del, not popleft (lean's a call)
        while queue and type(event := queue[0]) is _STREAM_DATA:
            del queue[0]
            self.quic_event_received(event)
        if queue:
            super()._process_events()

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
    def peer(self) -> PeerInfo[Self]:
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

    # --- events ----------------------------------------------------------------------
    def on_established(self, callback: Callable[[Self], None]) -> None:
        self._established.append(callback)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self._handshake_completed()
        elif isinstance(event, events.PingAcknowledged):
            if event.uid == _CONFIRM_PING and not self._confirmed.done():
                self._confirmed.set_result(None)
        elif isinstance(event, events.ConnectionTerminated):
            self._terminated(event.error_code, event.frame_type is None, event.reason_phrase)

    def _handshake_completed(self: Self) -> None:
        identity, cert = self._quic.peer_identity, self._quic.peer_certificate
        if identity is None or cert is None:  # cannot happen with _MutualTlsContext
            self.close(ErrorCode.UNTRUSTED_CERTIFICATE, "peer not authenticated")
            return
        self._quic.release_handshake_state()
        cert = self._quic.peer_certificate  # reloaded by the release: no parse caches
        assert cert is not None
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

    def _terminated(self: Self, quic_error: int, application: bool, reason: str) -> None:
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

