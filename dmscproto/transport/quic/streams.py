"""DMSC transactions on QUIC streams (draft-dmsc-protocol-00, Section 9.1).

* One bidirectional stream per transaction: the requester opens a new stream and writes
  the request PDU and FIN, the responder answers on the same stream with the response
  PDU and FIN (or a bare FIN when it has no answer).  Either end may open streams: a
  gateway sends a ROUTE-REQUEST to an agent over the connection the agent opened.
* A malformed PDU on a stream is answered with an ERROR carrying the decoding error
  code (Section 4.4); the connection keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeAlias

from aioquic.quic import events

from ...codec.errors import DecodeError, EncodeError
from ...codec.messages import Error, Message
from ...codec.pdu import decode, encode
from ...codec.registry import ErrorCode, timer
from ..errors import TransportError
from ..framing import StreamAssembler
from ..peer import Handler as AnyHandler
from ..peer import PeerInfo as AnyPeerInfo
from ..tap import DatagramTap
from ..tls import DmscQuicConnection
from .errors import ConnectionClosed
from .link import QuicLink

log = logging.getLogger(__name__)

#: How long a requester waits for an answer (Section 8).
REQUEST_TIMEOUT = timer("REQUEST_TIMEOUT")

#: The peer of a QUIC connection (its identity and certificate are always set).
PeerInfo: TypeAlias = AnyPeerInfo["DmscConnection"]
#: A request handler on QUIC connections; None answers with a bare FIN.
Handler: TypeAlias = AnyHandler["DmscConnection"]


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



class DmscConnection(QuicLink):
    """One DMSC-over-QUIC connection, usable in both directions: :meth:`request` sends
    a transaction on a new stream; requests the peer opens go to ``handler``.
    Requests are only handled and sent once the peer's certificate is verified."""

    __slots__ = ("_local_bit", "_s", "handler")

    def __init__(self, quic: DmscQuicConnection, *, handler: Handler | None = None,
                 pcap: DatagramTap | None = None, owns_transport: bool = False,
                 on_close: Callable[[DmscConnection], None] | None = None,
                 keepalive: float | None = None, sock: socket.socket | None = None) -> None:
        super().__init__(quic, pcap=pcap, owns_transport=owns_transport, on_close=on_close,
                         keepalive=keepalive, sock=sock)
        self.handler = handler
        self._local_bit = 0 if quic.configuration.is_client else 1
        self._s = _State()

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
        else:
            super().quic_event_received(event)

    def _fail_all(self, error: ConnectionClosed) -> None:
        super()._fail_all(error)
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

