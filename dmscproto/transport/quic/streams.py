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
import functools
import logging
import socket
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aioquic.quic import events

from ...codec.errors import DecodeError, EncodeError
from ...codec.messages import Error, Message
from ...codec.pdu import PduDecoder, decode, encode
from ...codec.registry import ErrorCode, timer
from ..contract import Done, settle, transaction_time_of
from ..driver import turn_budget
from ..errors import TransportError
from ..framing import StreamAssembler, header_of, whole
from ..peer import Handler as AnyHandler
from ..peer import Outcome, dispatch
from ..peer import PeerInfo as AnyPeerInfo
from ..tap import DatagramTap
from ..tls import DmscQuicConnection
from .errors import ConnectionClosed
from .link import QuicLink

log = logging.getLogger(__name__)
#: Requests up to this size are decoded in the callback that completed them (about
#: 0.7 ms of CPU for 16 KiB of records); larger ones a step at a time, within the event
#: loop's turn budget (:meth:`DmscConnection._decode_large`).
_DECODE_INLINE = 16 * 1024
#: Octets of TLVs decoded in one step of a large request, and what a step costs, at
#: most, in CPU seconds (a 64 KiB UPDATE of records: 2.4 ms on an idle machine).
_DECODE_STEP = 4096
_STEP_COST = 0.0002

#: How long a requester waits for an answer (Section 8).
REQUEST_TIMEOUT = timer("REQUEST_TIMEOUT")

#: The peer of a QUIC connection (its identity and certificate are always set).
PeerInfo: TypeAlias = AnyPeerInfo["DmscConnection"]
#: A request handler on QUIC connections; None answers with a bare FIN.
Handler: TypeAlias = AnyHandler["DmscConnection"]


@dataclass(slots=True)
class _Outgoing:
    """A transaction this end started: the response being reassembled (None until part
    of it came without FIN: a response in one piece needs none), who is told the
    outcome, and the timer of its ``timeout``, if it has one."""

    assembler: StreamAssembler | None
    done: Done
    expiry: asyncio.TimerHandle | None


@dataclass(slots=True)
class _State:
    outgoing: dict[int, _Outgoing | None] = field(default_factory=dict)
    incoming: dict[int, StreamAssembler | None] = field(default_factory=dict)
    #: The handlers' answers still awaited (futures and tasks).
    running: set[asyncio.Future[Any]] = field(default_factory=set)
    #: Large requests being decoded, oldest first (stream id, decoder, PDU, end).
    large: deque[tuple[int, PduDecoder, bytes, bool]] = field(default_factory=deque)


class DmscConnection(QuicLink):
    """One DMSC-over-QUIC connection, usable in both directions: :meth:`request` sends
    a transaction on a new stream; requests the peer opens go to ``handler``.
    Requests are only handled and sent once the peer's certificate is verified."""

    __slots__ = ("_local_bit", "_s", "handler")
    _peer: PeerInfo | None

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
    async def request(self, msg: Message, timeout: float | None = None) -> Message:
        """Send ``msg`` on a new stream and return the response PDU, decoded, within
        ``timeout`` seconds, by default ``msg``'s transaction time (Section 9.3,
        :func:`~dmscproto.transport.contract.transaction_time_of`).

        Raises :class:`TransportError` (TRANSACTION_TIMEOUT, connection closed, no
        response) or :class:`DecodeError` for a malformed response."""
        return await self.request_bytes(
            encode(msg), transaction_time_of(msg) if timeout is None else timeout)

    async def request_bytes(self, pdu: bytes,
                            timeout: float | None = REQUEST_TIMEOUT) -> Message:
        """:meth:`request` with the request given as raw octets (which need not be a
        valid PDU: conformance tests send malformed ones)."""
        future: asyncio.Future[Message] = self._loop.create_future()
        stream_id = self._start(pdu, functools.partial(settle, future), timeout)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(stream_id, ErrorCode.CEASE)
            raise

    def start_request(self, msg: Message, done: Done, timeout: float | None = None) -> int:
        """Send ``msg`` on a new stream; ``done`` gets the decoded response, or the
        exception :meth:`request` would raise, as soon as it is known.  Returns the
        stream ID, for :meth:`stop_request`."""
        return self._start(encode(msg), done, timeout)

    def stop_request(self, key: int, code: ErrorCode = ErrorCode.CEASE) -> None:
        """Abandon the transaction on stream ``key`` (STOP_SENDING ``code``): its
        ``done`` is not called."""
        self._abandon(key, code)

    def _start(self, pdu: bytes, done: Done | None, timeout: float | None) -> int:
        """Send ``pdu`` on a new stream; ``done`` gets its answer (None: none is wanted)."""
        if self._closed_error is not None:
            raise self._closed_error
        if self._peer is None:
            raise TransportError(ErrorCode.UNEXPECTED_MESSAGE, "connection not established")
        stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream_id, pdu, True)  # end_stream: positional, faster
        self._turn.add(self.transmit)
        self._s.outgoing[stream_id] = None if done is None else _Outgoing(
            None, done,
            None if timeout is None
            else self._loop.call_later(timeout, self._expire, stream_id, timeout))
        return stream_id

    def _expire(self, stream_id: int, timeout: float) -> None:
        """A request's answer did not come in time (a timer, not ``asyncio.wait_for``,
        whose extra future costs a loop turn per request)."""
        pending = self._abandon(stream_id, ErrorCode.TRANSACTION_TIMEOUT)
        if pending is not None:
            pending.done(TransportError(ErrorCode.TRANSACTION_TIMEOUT,
                                        f"no response within {timeout} s"))

    def send(self, msg: Message) -> None:
        """Send ``msg`` on a new stream without waiting for an answer."""
        self._start(encode(msg), None, None)

    def _abandon(self, stream_id: int, code: ErrorCode) -> _Outgoing | None:
        """Stop reading a stream whose answer is no longer wanted; later data on it
        is discarded until the peer resets or finishes it.  Returns the transaction
        that was waiting for it, if any (its timer stopped, its ``done`` not called)."""
        if self._closed_error is not None or stream_id not in self._s.outgoing:
            return None
        pending = self._s.outgoing[stream_id]
        self._s.outgoing[stream_id] = None
        if pending is not None and pending.expiry is not None:
            pending.expiry.cancel()
        with suppress(ValueError, AssertionError):
            self._quic.stop_stream(stream_id, int(code))
        self._turn.add(self.transmit)
        return pending

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
        outgoing = [p for p in self._s.outgoing.values() if p is not None]
        self._s.outgoing.clear()
        self._s.incoming.clear()
        for running in list(self._s.running):
            running.cancel()
        for pending in outgoing:
            _finish(pending, error)

    def _stream_reset(self, stream_id: int, error_code: int) -> None:
        pending = self._s.outgoing.pop(stream_id, None)
        self._s.incoming.pop(stream_id, None)
        if pending is not None:
            _finish(pending, TransportError(
                ErrorCode.TRANSACTION_TIMEOUT
                if error_code == ErrorCode.TRANSACTION_TIMEOUT else ErrorCode.INTERNAL_ERROR,
                f"peer reset the stream (code 0x{error_code:x})"))

    def _response_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id not in self._s.outgoing:
            return
        pending = self._s.outgoing[stream_id]
        if pending is None:  # one-way send or abandoned: discard
            if end:
                del self._s.outgoing[stream_id]
            return
        try:
            if end and pending.assembler is None:  # the whole response at once
                pdu: bytes | None = whole(data)
            else:
                if pending.assembler is None:
                    pending.assembler = StreamAssembler()
                pdu = pending.assembler.feed(data, end)
                if pdu is None:
                    return
            if not pdu:
                raise TransportError(ErrorCode.UNEXPECTED_MESSAGE,
                                     "peer finished the stream without a response")
            result: Message | Exception = decode(pdu)
        except (DecodeError, TransportError) as exc:
            result = exc
        if end:
            del self._s.outgoing[stream_id]
        else:
            self._abandon(stream_id, ErrorCode.TRAILING_DATA)
        _finish(pending, result)

    def _request_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if end and stream_id not in self._s.incoming:  # the whole request at once
            try:
                pdu: bytes | None = whole(data)
            except DecodeError as exc:
                self._refuse(stream_id, header_of(data), exc, end)
                return
        else:
            pdu = self._assemble(stream_id, data, end)
            if pdu is None:
                return
        if not pdu:
            self._reply(stream_id, None)
            return
        try:
            decoded = decode(pdu) if len(pdu) <= _DECODE_INLINE else PduDecoder(pdu)
        except DecodeError as exc:
            self._refuse(stream_id, header_of(pdu), exc, end)
            return
        if not isinstance(decoded, PduDecoder):
            self._request(stream_id, decoded)
            return
        if not self._s.large:
            self._loop.call_soon(self._decode_large)
        self._s.large.append((stream_id, decoded, pdu, end))

    def _assemble(self, stream_id: int, data: bytes, end: bool) -> bytes | None:
        """A request that comes in pieces: its PDU once complete; None before, and for
        one refused (now, or earlier: the rest of its stream is discarded)."""
        incoming = self._s.incoming
        if stream_id in incoming:
            assembler = incoming[stream_id]
            if assembler is None:  # refused earlier
                if end:
                    del incoming[stream_id]
                return None
        else:
            assembler = incoming[stream_id] = StreamAssembler()
        try:
            pdu = assembler.feed(data, end)
        except DecodeError as exc:
            self._refuse(stream_id, assembler.header(), exc, end)
            return None
        if pdu is not None:
            del incoming[stream_id]
        return pdu

    def _decode_large(self) -> None:
        """Decode the large requests waiting, in order, a step at a time while the event
        loop's turn budget lasts (:class:`~..driver.TurnBudget`; at least a step a
        turn), the rest in the next turn: a read of many datagrams that completes
        several (a bulk transfer's UPDATEs, milliseconds each) does not decode them in
        one turn, with the gateway's other work waiting."""
        large = self._s.large
        budget = turn_budget(self._loop)
        try:
            while large and self._closed_error is None and budget.fits(_STEP_COST):
                stream_id, decoder, pdu, end = large[0]
                try:
                    msg = decoder.step(_DECODE_STEP)
                except DecodeError as exc:
                    large.popleft()
                    self._refuse(stream_id, header_of(pdu), exc, end)
                    continue
                if msg is not None:
                    large.popleft()
                    self._request(stream_id, msg)
        finally:
            if large and self._closed_error is None:
                self._loop.call_soon(self._decode_large)

    def _request(self, stream_id: int, msg: Message) -> None:
        """A request decoded: to the handler."""
        if self._closed_error is not None:
            return
        if self.handler is None:
            self._reply(stream_id, Error(
                transaction_id=msg.transaction_id, status=ErrorCode.UNEXPECTED_MESSAGE,
                offending_type=msg.TYPE, diagnostic="this endpoint serves no requests"))
            return
        peer = self._peer  # set: requests are handled only once it is
        assert peer is not None
        dispatch(self.handler, msg, peer,
                 functools.partial(self._answered, stream_id, msg), self._s.running)

    def _refuse(self, stream_id: int, header: tuple[int, int] | None, exc: DecodeError,
                end: bool) -> None:
        """Answer a request that does not decode with ERROR (its code and reason), echoing
        the ``header`` (message type, transaction id) of what was received, if complete."""
        self._reply(stream_id, Error(
            transaction_id=header[1] if header else 0, status=exc.code,
            offending_type=header[0] if header else None, diagnostic=exc.reason))
        if not end:  # the rest of the stream is not wanted
            self._s.incoming[stream_id] = None
            with suppress(ValueError, AssertionError):
                self._quic.stop_stream(stream_id, int(exc.code))
        else:
            self._s.incoming.pop(stream_id, None)

    def _answered(self, stream_id: int, msg: Message, outcome: Outcome) -> None:
        """The handler's answer to ``msg`` (or its failure: INTERNAL_ERROR)."""
        if isinstance(outcome, BaseException):
            peer = self.peer
            log.error("handler failed on %s from %s", msg.TYPE.name,
                      peer.identity.uri if peer.identity else "?", exc_info=outcome)
            outcome = Error(transaction_id=msg.transaction_id,
                            status=ErrorCode.INTERNAL_ERROR, offending_type=msg.TYPE)
        if self._closed_error is None:
            self._reply(stream_id, outcome)

    def _reply(self, stream_id: int, response: Message | None) -> None:
        try:
            data = encode(response) if response is not None else b""
        except EncodeError as exc:
            log.error("cannot encode response: %s", exc)
            data = encode(Error(transaction_id=response.transaction_id if response else 0,
                                status=ErrorCode.INTERNAL_ERROR, diagnostic="response encoding"))
        try:
            self._quic.send_stream_data(stream_id, data, True)  # end_stream
        except (ValueError, AssertionError) as exc:  # peer reset the stream meanwhile
            log.debug("stream %d gone before the response: %s", stream_id, exc)
            return
        self._turn.add(self.transmit)



def _finish(pending: _Outgoing, outcome: Message | Exception) -> None:
    """Tell a transaction's requester how it ended (its timer stopped)."""
    if pending.expiry is not None:
        pending.expiry.cancel()
    done = pending.done  # pending.done() is never specialised (~100 instructions more)
    done(outcome)
