"""The common case of an established QUIC connection, received and sent with less work
(draft-dmsc-protocol-00, Section 9.1; RFC 9000 Sections 12-13 and 17.3).

Nearly every datagram a DMSC endpoint receives once a connection is established is one
short-header (1-RTT) packet, from the peer's address, to the connection ID in use,
carrying STREAM and ACK frames.  aioquic handles it as it handles any packet: a header
parser and a loop written for coalesced long-header packets, a scan of every connection
ID issued, and a dozen look-ups keyed by its ``Epoch`` enum (whose hash is a Python
function).  :class:`FastPathConnection` takes that packet straight to the same steps,
with aioquic's own cryptography and frame handlers: header protection and payload
decrypted by the connection's 1-RTT keys (:func:`_open`: its AEAD and header
protection, without copying the packet; a key phase change is aioquic's), duplicates
dropped, reserved bits checked, the spin bit, the idle timer, path promotion, and the
packet recorded for acknowledgement (ACK ranges, the ACK timer); its frames go through
one loop that calls aioquic's handlers (ACK: loss recovery, RTT and congestion control;
STREAM: flow control and reassembly) and does for every frame the checks aioquic does
(unknown frame type, frame not allowed in 1-RTT, malformed frame).  Anything else (a
long header, another address or connection ID, a packet too short to hold a header
protection sample, a connection not yet confirmed or closing, a qlog being written)
goes to aioquic's code unchanged.

Its STREAM frames, nearly always a transaction's whole request or answer (the first
octets, usually with FIN, of the peer's next stream or of an open one nothing was
received on yet, such as one this end opened), are
taken as aioquic's handler takes them, without its frame object and the calls through
the stream's receiver (:meth:`FastPathConnection._handle_stream`).  Its ACK frames,
nearly always of one range, go to loss recovery without aioquic's range
set and with loss detection only when a packet at or below the one acknowledged is
left (:meth:`FastPathConnection._handle_ack`), and the timer of a connection established
on a validated path is found in one pass over the packet spaces
(:meth:`FastPathConnection.get_timer`): the same state, the same time, as aioquic's.

On the way out, nearly every transmit pass of an established connection sends an ACK
and STREAM frames (requests, answers, their FINs), now and then stream credit
(MAX_STREAMS), in one packet or, with many transactions in flight, a few.  aioquic
builds them with a packet builder that checks, for every frame, what only the
handshake, a path change or a limit can need, and it visits every stream queued for
every packet.  :meth:`FastPathConnection._send_short`
works out first, changing nothing, what aioquic's writer would put in each packet of
the pass (:meth:`~FastPathConnection._short_plan`: the same frames, cut where its
packets would cut them, in the same order of service), then writes those packets with
the same octets, the same loss-recovery records (delivery handlers, bytes in flight),
pacing, idle timer and stream order; any other pass (another frame due, MAX_DATA to
raise, flow control cutting a frame, a retransmission in pieces, ACK ranges) is
aioquic's.  The packets are sealed with the connection's 1-RTT keys as aioquic seals
them (:func:`_seal`: its AEAD and header protection, without its generic steps).

aioquic's own writer offers every stream queued a STREAM frame for every packet of a
transmit pass, though once a packet is full none fits, and offers a stream that has
sent its last octet and FIN once more in the next pass, to learn that its buffer is
empty: at 32 transactions in flight, 12 calls per answer sent where 2 write something.
:meth:`FastPathConnection._write_stream_frame` skips those calls (their result is
known: nothing written, nothing changed but that flag, set at once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from logging import DEBUG
from operator import attrgetter
from types import MethodType
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer, BufferReadError
from aioquic._crypto import CryptoError
from aioquic.quic import events
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    Limit,
    NetworkAddress,
    QuicConnectionError,
    QuicConnectionState,
    QuicNetworkPath,
    QuicReceiveContext,
)
from aioquic.quic.crypto import CryptoContext, CryptoPair, KeyUnavailableError
from aioquic.quic.packet import (
    NON_ACK_ELICITING_FRAME_TYPES,
    PACKET_FIXED_BIT,
    PACKET_LONG_HEADER,
    PACKET_NUMBER_MAX_SIZE,
    PACKET_SPIN_BIT,
    PROBING_FRAME_TYPES,
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
)
from aioquic.quic.packet_builder import (
    PACKET_NUMBER_SEND_SIZE,
    QuicPacketBuilder,
    QuicSentPacket,
)
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import MAX_ACK_RANGES, QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import (
    QuicStream,
    QuicStreamReceiver,
    QuicStreamSender,
    StreamFinishedError,
)
from cryptography.exceptions import InvalidTag

from .lean import (
    _ONE_RTT,
    _QUIET_FRAMES,
    _ROOM,
    _STREAM_FRAMES,
    _TABLES,
    LeanQuicConnection,
    OneRtt,
    _FrameHandlers,
    _Recovery,
    probe_timeout,
)

_ZERO_RTT = tls.Epoch.ZERO_RTT
_CONNECTED = QuicConnectionState.CONNECTED
_ACK_FRAME = int(QuicFrameType.ACK)  # looked up once (see lean._ACKED)
#: Octets after the packet number's offset that header protection samples (RFC 9001,
#: Section 5.4.2): a shorter packet goes to aioquic's code, which drops it.
_SAMPLE_END = 4 + 16
#: The smallest STREAM frame header: type, stream ID and length (aioquic's frame overhead
#: ``3 + size_uint_var(stream_id)``, plus the offset's size when not zero).
_STREAM_HEADER = 4


class _Buffers(threading.local):
    """Where this thread's connections write a packet's payload (copied out at once),
    reused: room for the largest UDP payload, so for any max_datagram_size.  Per
    thread, as the codec's workers are: connections of two event loops in two threads
    must not write into one buffer."""

    def __init__(self) -> None:
        self.packet = Buffer(capacity=65536)


_BUFFERS = _Buffers()


class _Context(threading.local):
    """The receive context (aioquic's QuicReceiveContext) of a 1-RTT packet on the fast
    path, one per thread, its host CID, path and time set for each packet: the frame
    handlers read it while they run and keep nothing of it (no qlog on the fast path:
    its ``quic_logger_frames`` stays None).  Made anew for every packet, with its six
    fields, it cost about 80 ns more (timeit)."""

    def __init__(self) -> None:
        self.context = QuicReceiveContext(
            epoch=_ONE_RTT, host_cid=b"", network_path=QuicNetworkPath(addr=("", 0)),
            quic_logger_frames=None, time=0.0, version=None)


_CONTEXT = _Context()
#: Makes the objects of aioquic's classes made per packet (its dataclasses
#: QuicSentPacket and StreamDataReceived, and a stream:
#: :func:`_new_stream`) without their ``__init__``: their fields are set in the order
#: its ``__init__`` sets them (which keeps the instances' layout, so that reading them
#: stays as fast).  Called through ``type.__call__``, which CPython 3.11 does not
#: specialise, their ``__init__`` cost more than the object and its fields: without the
#: dataclasses' (sans-I/O request/answer round, callgrind) 478.1k -> 472.2k instructions.
_new = object.__new__
_STREAM_DATA = events.StreamDataReceived
#: The size of a variable-length integer by its value's bit length (aioquic's
#: ``size_uint_var``, a look-up instead of a call: RFC 9000, Section 16).
_VARINT_SIZE = (1,) * 7 + (2,) * 8 + (4,) * 16 + (8,) * 32
#: Payload octets a 1-RTT packet needs for header protection to sample (aioquic pads
#: shorter ones: PACKET_NUMBER_MAX_SIZE - PACKET_NUMBER_SEND_SIZE).
_SAMPLE_PAD = PACKET_NUMBER_MAX_SIZE - PACKET_NUMBER_SEND_SIZE
_ONE_RTT_PACKET = QuicPacketType.ONE_RTT
#: Each octet value as bytes (``bytes((value,))`` costs a call: 71 vs 7 ns, timeit).
_OCTETS = tuple(bytes((value,)) for value in range(256))
#: The first octet of a short header sent, by its spin and key phase bits
#: (``spin << 1 | phase``).
_SHORT_FIRST = tuple(
    bytes((PACKET_FIXED_BIT | spin << 5 | phase << 2 | (PACKET_NUMBER_SEND_SIZE - 1),))
    for spin in (0, 1) for phase in (0, 1))
#: The STREAM frame type with its Length field (as _ACK_FRAME: a plain integer).
_STREAM_LEN = int(QuicFrameType.STREAM_BASE) | 2
#: The ranges of a RangeSet, its list (aioquic's ``len()`` and ``[0]`` on it are Python
#: calls).
_ranges: Callable[[RangeSet], list[range]] = attrgetter("_RangeSet__ranges")
#: A STREAM frame to write: the stream, its offsets (start, stop) and FIN.
_Frame = tuple[QuicStream, int, int, bool]
#: A packet to write: its MAX_DATA and MAX_STREAMS frames (the limit, its new value), its
#: STREAM frames, and the streams whose highest offset they raise.
_Packet = tuple[Sequence[tuple[Limit, int]], list[_Frame], set[QuicStream]]
#: A pass: the length of the ACK frame of its first packet (0: none; written where that
#: packet starts: :meth:`FastPathConnection._ack_frame`), the streams it discards and
#: the stream credit (MAX_STREAMS, bidirectional, unidirectional) that gives back, and
#: its packets.
_Plan = tuple[int, list[QuicStream], int, int, list[_Packet]]


class FastPathConnection(LeanQuicConnection):
    """:class:`~.lean.LeanQuicConnection` receiving and sending the common 1-RTT
    packets with less work (see module)."""

    __slots__ = ()  # a second base with slots of its own cannot be combined with acks'
    #: lean's table of frame handlers (:data:`.lean._HANDLERS`), read by its name here:
    #: ``getattr(self, _HANDLERS)`` costs a call, 16 ns more a read (timeit)
    _QuicConnection__frame_handlers: _FrameHandlers

    def _one_rtt(self) -> OneRtt | None:
        """The 1-RTT keys and packet space, if the fast path may be taken at all:
        confirmed, no 0-RTT keys left to tear down (aioquic does that on the first 1-RTT
        packet; then both are held: :data:`.lean.OneRtt`), connected, no qlog."""
        frames: _FrameHandlers = self._QuicConnection__frame_handlers
        held = frames.one_rtt
        if held is None:
            if not self._handshake_confirmed or self._cryptos[_ZERO_RTT].recv.is_valid():
                return None
            held = frames.one_rtt = (self._cryptos[_ONE_RTT], self._spaces[_ONE_RTT],
                                     self._crypto_streams[_ONE_RTT])
        if (self._state is not _CONNECTED or self._quic_logger is not None
                or held[0].recv.aead is None):  # its is_valid()
            return None
        return held

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        cid = self.host_cid
        paths = self._network_paths
        if (not data or data[0] & (PACKET_LONG_HEADER | PACKET_FIXED_BIT) != PACKET_FIXED_BIT
                or len(data) < 1 + len(cid) + _SAMPLE_END
                or (held := self._one_rtt()) is None or not paths
                or paths[0].addr != addr or not paths[0].is_validated
                or data[1:1 + len(cid)] != cid):
            super().receive_datagram(data, addr, now)
            return
        loss: _Recovery = self._loss  # type: ignore[assignment]  # lean's
        losses = loss.losses
        cc = loss._cc
        if cc.bytes_in_flight + self._max_datagram_size > cc.congestion_window:
            self._frames.loud = True  # what the ACKs free may let queued data go
        self._receive_short(data, held[0], held[1], cid, paths[0], now)
        if loss.losses != losses or len(self._network_paths) > 1:
            self._frames.loud = True

    def _receive_short(self, data: bytes, keys: CryptoPair, space: QuicPacketSpace,
                       cid: bytes, path: Any, now: float) -> None:
        """aioquic's ``receive_datagram`` for one short-header packet to ``cid`` from
        ``path`` (the active, validated one), its steps in its order."""
        try:
            opened = _open(keys.recv, data, 1 + len(cid), space.expected_packet_number)
            if opened is None:  # the peer's next key phase: aioquic's, which updates keys
                opened = keys.decrypt_packet(data, 1 + len(cid), space.expected_packet_number)
        except (KeyUnavailableError, CryptoError) as exc:
            self._logger.debug(exc)
            return
        plain_header, payload, number = opened
        window = space.received_packets
        if number < window._lower or number in window._received:  # its __contains__
            return  # a duplicate (RFC 9000, Section 12.3)
        if plain_header[0] & 0x18:
            self.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                       frame_type=QuicFrameType.PADDING,
                       reason_phrase="Reserved bits must be zero")
            return
        if number > space.expected_packet_number:
            space.expected_packet_number = number + 1
        if number > self._spin_highest_pn:
            spin = bool(plain_header[0] & PACKET_SPIN_BIT)
            self._spin_bit = not spin if self._is_client else spin
            self._spin_highest_pn = number
        context = _CONTEXT.context  # this thread's, its fields this packet's
        context.host_cid = cid
        context.network_path = path
        context.time = now
        try:
            eliciting, probing = self._payload_received(context, payload)
        except QuicConnectionError as exc:
            self._logger.warning(exc)
            self.close(error_code=exc.error_code, frame_type=exc.frame_type,
                       reason_phrase=exc.reason_phrase)
        if self._state is not _CONNECTED or self._close_pending:
            return
        self._close_at = now + self._idle_timeout()
        self._ack_eliciting_sent_since_receipt = False
        if not self._is_client and not probing and cid != self.host_cid:
            self.host_cid = cid  # the connection ID in use was retired meanwhile
            if path.peer_cid is None:
                self.change_connection_id()
        paths = self._network_paths
        if not paths or paths[0] is not path:  # no longer the active path: aioquic's steps
            if path not in paths:
                self._add_network_path(path)
            idx = self._network_paths.index(path)
            if (not self._is_client and idx and not probing
                    and number > space.largest_received_packet):
                self._network_paths.insert(0, self._network_paths.pop(idx))  # promoted
                if path.peer_cid is not None:
                    self._use_reserved_peer_cid(path)
        if not space.discarded:
            if number > space.largest_received_packet:
                space.largest_received_packet = number
                space.largest_received_time = now
            _record(space, number)
            if eliciting and space.ack_at is None:
                space.ack_at = now + self._ack_delay

    def _payload_received(self, context: QuicReceiveContext, plain: bytes,
                          crypto_frame_required: bool = False) -> tuple[bool, bool]:
        """aioquic's frame loop for a 1-RTT packet: PADDING, ACK and STREAM frames go
        to their handlers without the per-frame look-ups; every other frame as aioquic
        does it (its table, its epoch check)."""
        if context.epoch is not _ONE_RTT or crypto_frame_required:
            return super()._payload_received(context, plain, crypto_frame_required)
        buf = Buffer(0, plain)  # positional: no keyword dict made and parsed (Buffer(data=))
        eliciting = found = False
        probing: bool | None = None
        while not buf.eof():
            try:
                frame_type = buf.pull_uint_var()
            except BufferReadError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                    frame_type=None,  # type: ignore[arg-type]  # as aioquic does
                    reason_phrase="Malformed frame type") from None
            found = True
            try:  # ACK and STREAM: neither probing, only STREAM ack-eliciting
                if frame_type == _ACK_FRAME:
                    self._handle_ack(context, frame_type, buf)
                    probing = False
                    continue
                if frame_type in _STREAM_FRAMES:
                    self._handle_stream(context, frame_type, buf)
                    eliciting = True
                    probing = False
                    continue
                handler: Callable[..., None]
                if frame_type in _QUIET_FRAMES:  # allowed in 1-RTT, no transmit due
                    handler = MethodType(_TABLES[type(self)][frame_type][0], self)
                else:
                    try:
                        handler, epochs = self._frames[frame_type]
                    except KeyError:
                        raise QuicConnectionError(
                            error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                            frame_type=frame_type,
                            reason_phrase="Unknown frame type") from None
                    if _ONE_RTT not in epochs:
                        raise QuicConnectionError(
                            error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                            frame_type=frame_type, reason_phrase="Unexpected frame type")
                handler(context, frame_type, buf)
            except BufferReadError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                    reason_phrase="Failed to parse frame") from None
            except StreamFinishedError:
                pass  # no state left for the stream: the frame is ignored
            if frame_type not in NON_ACK_ELICITING_FRAME_TYPES:
                eliciting = True
            if frame_type not in PROBING_FRAME_TYPES:
                probing = False
            elif probing is None:
                probing = True
        if not found:
            raise QuicConnectionError(
                error_code=QuicErrorCode.PROTOCOL_VIOLATION, frame_type=QuicFrameType.PADDING,
                reason_phrase="Packet contains no frames")
        return eliciting, bool(probing)

    def _handle_ack(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        """aioquic's ``_handle_ack_frame`` for a 1-RTT ACK frame (RFC 9000, Section 19.3)
        of one range, without a qlog: to :meth:`.lean._Recovery.on_ack_range`; any
        other (more ranges, a negative packet number, a qlog) to aioquic's, from the
        frame's start."""
        start = buf.tell()
        try:
            largest = buf.pull_uint_var()
            delay = buf.pull_uint_var()
            more = buf.pull_uint_var()  # ranges after the first
            lowest = largest - buf.pull_uint_var()
        except BufferReadError:  # cut short: aioquic's says so (its reason phrase)
            lowest = -1
        if lowest < 0 or more or self._quic_logger is not None:
            buf.seek(start)
            self._handle_ack_frame(context, frame_type, buf)
            return
        loss: _Recovery = self._loss  # type: ignore[assignment]  # lean's
        loss.peer_completed_address_validation = True  # as aioquic's: 1-RTT
        held: OneRtt | None = self._QuicConnection__frame_handlers.one_rtt
        # one_rtt_space's steps, without its call (lean._FrameHandlers is not a Python
        # attribute of the class: the name is aioquic's own, mangled)
        space = self._spaces[_ONE_RTT] if held is None else held[1]
        loss.on_ack_range(lowest, largest,
                          (delay << self._remote_ack_delay_exponent) / 1000000,
                          context.time, space)

    def get_timer(self) -> float | None:
        """aioquic's, for a connection established on a validated path (no
        anti-amplification limit, no path validation deadline, every space arming the
        PTO) in one pass; aioquic's own otherwise."""
        paths = self._network_paths
        loss = self._loss
        timer_at = self._close_at
        if (self._state is not _CONNECTED or not loss.handshake_confirmed
                or not loss.peer_completed_address_validation
                or not paths or not paths[0].is_validated or timer_at is None):
            return super().get_timer()
        loss_at: float | None = None  # aioquic's get_loss_detection_time, confirmed
        in_flight = 0
        for space in loss.spaces:
            at = space.ack_at
            if at is not None and at < timer_at:
                timer_at = at
            at = space.loss_time
            if at is not None and (loss_at is None or at < loss_at):
                loss_at = at
            in_flight += space.ack_eliciting_in_flight
        if loss_at is None and in_flight:  # the PTO (RFC 9002, Section 6.2.1)
            loss_at = (loss._time_of_last_sent_ack_eliciting_packet
                       + probe_timeout(loss) * (1 << loss._pto_count))
        self._loss_at = loss_at
        if loss_at is not None and loss_at < timer_at:
            timer_at = loss_at
        if self._pacing_at is not None and self._pacing_at < timer_at:
            timer_at = self._pacing_at
        return timer_at

    # --- streams --------------------------------------------------------------------
    def _get_or_create_stream_for_send(self, stream_id: int) -> QuicStream:
        """aioquic's, with a bidirectional stream held (an answer's) returned at once, and
        the stream a transaction opens (this end's next bidirectional one) made by
        :func:`_new_stream`; any other as aioquic does it."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream_id & 2:
            return stream  # aioquic's checks pass: any end sends on it, not discarded
        if stream_id != self._local_next_stream_id_bidi or stream is not None:
            return super()._get_or_create_stream_for_send(stream_id)
        stream = self._streams[stream_id] = _new_stream(
            stream_id, self._local_max_stream_data_bidi_local,
            self._remote_max_stream_data_bidi_remote)
        self._streams_queue.append(stream)
        self._local_next_stream_id_bidi = stream_id + 4
        if stream_id // 4 >= self._remote_max_streams_bidi:  # RFC 9000, Section 4.6
            stream.is_blocked = True
            self._streams_blocked_bidi.append(stream)
            self._streams_blocked_pending = True
        return stream

    def _get_or_create_stream(self, frame_type: int, stream_id: int) -> QuicStream:
        """aioquic's, with the stream of a transaction the peer opens (its next
        bidirectional one, within the limit) made by :meth:`_peer_stream`; any other as
        aioquic does it (a known stream, a gap, the limit exceeded, a wrong
        initiator)."""
        limit = self._local_max_streams_bidi
        if (stream_id & 2 or stream_id & 1 != self._is_client  # not the peer's bidi
                or stream_id >> 2 != limit.used or limit.used >= limit.value):
            return super()._get_or_create_stream(frame_type, stream_id)
        return self._peer_stream(stream_id)

    def _peer_stream(self, stream_id: int) -> QuicStream:
        """The peer's next bidirectional stream, ``stream_id``, within its limit: made by
        :func:`_new_stream` and registered as aioquic's ``_get_or_create_stream`` does."""
        if self._logger.logger.isEnabledFor(DEBUG):  # its adapter's check, in 1 call of 4
            self._logger.debug("Stream %d created by peer", stream_id)
        stream = self._streams[stream_id] = _new_stream(
            stream_id, self._local_max_stream_data_bidi_remote,
            self._remote_max_stream_data_bidi_local)
        self._streams_queue.append(stream)
        self._local_max_streams_bidi.used += 1
        return stream

    def _handle_stream(self, context: QuicReceiveContext, frame_type: int,
                       buf: Buffer) -> None:
        """aioquic's ``_handle_stream_frame`` (RFC 9000, Section 19.8) for the usual
        STREAM frame of a transaction: octets at offset 0 of a stream nothing was
        received on yet (the peer's next bidirectional stream, within its stream limit,
        or any stream already open that can receive: one this end opened, or a peer's
        stream opened by a gap), within flow control, without a qlog.  The same checks, state
        and event, without its frame object and its calls through the stream's receiver;
        any other frame to aioquic's, from its start."""
        start = buf.tell()
        stream_id = buf.pull_uint_var()
        offset = buf.pull_uint_var() if frame_type & 4 else 0
        length = buf.pull_uint_var() if frame_type & 2 else buf.capacity - buf.tell()
        stream = self._streams.get(stream_id)
        if stream is None:  # the peer's next bidirectional stream, within its limit?
            limit = self._local_max_streams_bidi
            usual = (not stream_id & 2 and stream_id & 1 == self._is_client
                     and stream_id >> 2 == limit.used < limit.value)
            max_local = self._local_max_stream_data_bidi_remote
        else:  # nothing received (or reset) on it yet? (finished if it cannot receive)
            receiver = stream.receiver
            usual = not receiver.highest_offset and not receiver.is_finished
            max_local = stream.max_stream_data_local
        max_data = self._local_max_data
        if (not usual or offset or not length or length > max_local
                or max_data.used + length > max_data.value
                or self._quic_logger is not None):
            buf.seek(start)
            self._handle_stream_frame(context, frame_type, buf)
            return
        data = buf.pull_bytes(length)
        if stream is None:
            stream = self._peer_stream(stream_id)
        receiver = stream.receiver  # what its handle_frame does with the frame
        fin = bool(frame_type & 1)
        if fin:
            receiver._final_size = length
        receiver.highest_offset = length
        receiver._buffer_start = length
        if fin:
            receiver.is_finished = True
        event = _new(_STREAM_DATA)  # StreamDataReceived(data, end_stream, stream_id): _new
        event.data = data
        event.end_stream = fin
        event.stream_id = stream_id
        self._events.append(event)
        max_data.used += length

    def _write_stream_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                            stream: QuicStream, max_offset: int) -> int:
        """aioquic's, without the calls that cannot write anything: a packet with less
        room than the smallest STREAM frame header (aioquic finds that out per stream
        queued, for every packet of a pass), and the call after a stream's last octet
        and FIN went (aioquic's next pass calls once more to learn that its buffer is
        empty: it is marked so at once)."""
        if builder.remaining_flight_space < _STREAM_HEADER:
            return 0
        used = super()._write_stream_frame(builder, space, stream, max_offset)
        sender = stream.sender
        if not len(sender._pending) and not sender._pending_eof:
            sender.buffer_is_empty = True
        return used

    # --- sending --------------------------------------------------------------------
    def _ack_written(self, space: QuicPacketSpace) -> None:
        """An ACK frame for ``space`` went into a packet built here (a subclass that
        counts what it acknowledges hears of it, as of aioquic's ``_write_ack_frame``)."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        sent = self._send_short(now)
        if sent is None:
            return super().datagrams_to_send(now)
        # what LeanQuicConnection's does first, without its _frames property's call
        self._QuicConnection__frame_handlers.loud = False
        return sent

    def _ack_frame(self, buf: Buffer, space: QuicPacketSpace, received: range,
                   now: float) -> int:
        """aioquic's ``push_ack_frame`` of an ACK frame of one range (RFC 9000,
        Section 19.3), at the start of ``buf`` (where the first packet of the pass is
        written next): its length."""
        assert space.largest_received_time is not None
        delay = int((now - space.largest_received_time) * 1000000)
        buf.seek(0)
        buf.push_uint_var(_ACK_FRAME)
        buf.push_uint_var(received.stop - 1)  # largest acknowledged
        buf.push_uint_var(delay >> self._local_ack_delay_exponent)
        buf.push_uint_var(0)  # further ranges
        buf.push_uint_var(received.stop - 1 - received.start)
        return buf.tell()

    def _short_plan(self, keys: CryptoPair, space: QuicPacketSpace, crypto: QuicStream,
                    buf: Buffer, now: float) -> _Plan | None:
        """The packets a pass would build, if they are the common ones (module
        docstring): an ACK in the first, MAX_DATA and MAX_STREAMS frames, STREAM
        frames, nothing else; None otherwise (aioquic's pass then runs).  It follows
        aioquic's writer packet by packet without changing anything: the connection
        limits due at the start of each packet (stream credit from the streams
        discarded in the first counted from the second), the streams in their order
        of service, each frame whole or cut to fill the packet (flow control cutting
        none), the next packet started only after one left with less than
        :data:`~.lean._ROOM` (:func:`~.lean._start_packet`), in the congestion window
        left, streams served moved to the end of the order.  Its ACK frame goes where
        the first packet starts in ``buf``, this thread's packet buffer (only that is
        written).  The checks that fail most often, at many transactions in flight,
        come first."""
        paths = self._network_paths
        # connected, confirmed, no qlog: _one_rtt's checks, passed as the pass began
        if (self._close_pending or len(paths) != 1 or not paths[0].is_validated
                or paths[0].remote_challenges or self._probe_pending or self._ping_pending
                or self._datagrams_pending or self._handshake_done_pending
                or self._streams_blocked_pending or self._retire_connection_ids
                or keys._update_key_requested
                or keys.send.aead is None  # not keys.send.is_valid(), without its call
                or (self._is_client and self._remote_preferred_address is not None)
                or not crypto.sender.buffer_is_empty):
            return None
        for cid in self._host_cids:
            if not cid.was_sent:
                return None  # NEW_CONNECTION_ID to send
        received = None  # what an ACK due acknowledges, built once no check fails
        if space.ack_at is not None and space.ack_at <= now:
            received = _ranges(space.ack_queue)
            if len(received) != 1:
                return None  # ranges: aioquic may add an ACK-of-ACK PING
        queue = self._streams_queue
        if len(queue) != len(self._streams):
            return None  # not aioquic's invariant: the checks below need it
        finished: list[QuicStream] = []
        bidi_raised = uni_raised = 0  # MAX_STREAMS credit the finished give back
        order: list[list[Any]] = []  # [stream, start, stop, highest offset, fin]
        for stream in queue:
            receiver, sender = stream.receiver, stream.sender
            local = stream.max_stream_data_local
            if (stream.max_stream_data_local_sent != local
                    or (local and receiver.highest_offset * 2 > local)):
                return None  # MAX_STREAM_DATA to send (aioquic's check of every stream)
            if receiver.is_finished and sender.is_finished:
                finished.append(stream)
                stream_id = stream.stream_id or 0
                if stream_id & 1 == self._is_client:  # the peer opened it (RFC 9000, 4.6)
                    if stream_id & 2:
                        uni_raised += 1
                    else:
                        bidi_raised += 1
                continue
            if receiver.stop_pending or sender.reset_pending:
                return None
            if stream.is_blocked or sender.buffer_is_empty:
                continue
            pending = _ranges(sender._pending)
            if pending:
                if len(pending) > 1:
                    return None  # a retransmission in pieces: one frame each, aioquic's way
                start, stop = pending[0].start, pending[0].stop
                fin = sender._buffer_fin == stop
                if sender._pending_eof and not fin:
                    return None  # data, then a FIN in a frame of its own
            elif sender._pending_eof:
                start = stop = sender._buffer_stop  # a FIN alone
                fin = True
            else:  # all sent: aioquic's call finds that out and writes nothing
                sender.buffer_is_empty = True
                continue
            order.append([stream, start, stop, sender.highest_offset, fin])
        max_data = self._local_max_data
        if max_data.used * 2 > max_data.value:
            return None  # MAX_DATA to raise
        # written where the first packet starts (nothing else writes there before it)
        ack = 0 if received is None else self._ack_frame(buf, space, received[0], now)
        # [limit, value, value sent] of MAX_DATA and MAX_STREAMS, as the pass goes: made
        # for the first packet only if one is due then (rarely: 12 passes of 1609 in a
        # sans-I/O run of one transaction at a time)
        limits: list[list[Any]] = []
        bidi, uni = self._local_max_streams_bidi, self._local_max_streams_uni
        if (max_data.value != max_data.sent  # _due's first check without its call
                or (bidi.value != bidi.sent and _due(bidi, bidi.value, bidi.sent))
                or (uni.value != uni.sent and _due(uni, uni.value, uni.sent))):
            limits = self._limits()
        loss = self._loss
        credit = self._remote_max_data - self._remote_max_data_used
        window = loss._cc.congestion_window - loss._cc.bytes_in_flight
        overhead = 3 + len(self._peer_cid.cid) + keys.aead_tag_size  # header and tag
        packets: list[_Packet] = []
        length = ack
        first = True
        while True:
            most = self._max_datagram_size
            room = (window if window < most else most) - overhead - length
            credits: Sequence[tuple[Limit, int]] = ()  # a list only when limits are followed
            if limits:
                credits = granted = []
                for entry in limits:  # aioquic's _write_connection_limits
                    limit, value, sent_value = entry
                    if ((limit is max_data and value != sent_value)
                            or _due(limit, value, sent_value)):
                        if room < CONNECTION_LIMIT_FRAME_CAPACITY:
                            return None  # aioquic's pass stops there
                        size = 1 + _VARINT_SIZE[value.bit_length()]
                        room -= size
                        length += size
                        entry[2] = value
                        granted.append((limit, value))
            frames: list[_Frame] = []
            sent: set[QuicStream] = set()
            cut: list[Any] | None = None
            for entry in order:
                if room < _STREAM_HEADER:
                    break  # _write_stream_frame writes nothing more in this packet
                stream, start, stop, highest, fin = entry
                size = (3 + _VARINT_SIZE[stream.stream_id.bit_length()]
                        + (_VARINT_SIZE[start.bit_length()] if start else 0))
                if stop > highest + credit or stop > stream.max_stream_data_remote:
                    return None  # flow control cuts it
                if size + stop - start <= room:
                    room -= size + stop - start
                    entry[1] = None  # all of it sent
                elif stop > start and room > size:
                    stop, fin, room = start + room - size, False, 0
                    entry[1] = stop
                    cut = entry
                else:
                    return None  # a frame that fits nowhere in a packet with room left
                frames.append((stream, start, stop, fin))
                length += size + stop - start
                if stop > highest:
                    credit -= stop - highest
                    entry[3] = stop
                    sent.add(stream)
            if length:
                packets.append((credits, frames, sent))
                if room >= _ROOM:
                    break  # everything went: lean's _start_packet ends the pass here
                if frames or credits or length < _SAMPLE_PAD:  # in flight
                    window -= overhead + (length if length > _SAMPLE_PAD else _SAMPLE_PAD)
            elif not (first and finished):
                break  # an empty packet ends aioquic's pass (after discarding: the next)
            if first:  # the streams discarded give stream credit back (RFC 9000, 4.6)
                limits = limits or self._limits()
                limits[1][1] += bidi_raised
                limits[2][1] += uni_raised
            order = [e for e in order if e[1] is not None and e[0] not in sent]
            if cut is not None and cut[0] in sent:
                order.append(cut)  # served: to the end of the order
            first = False
            length = 0
        return ack, finished, bidi_raised, uni_raised, packets

    def _limits(self) -> list[list[Any]]:
        """[limit, value, value sent] of MAX_DATA and MAX_STREAMS (bidirectional,
        unidirectional), for :meth:`_short_plan` to follow through a pass."""
        return [[limit, limit.value, limit.sent] for limit in (
            self._local_max_data, self._local_max_streams_bidi, self._local_max_streams_uni)]

    def _send_short(self, now: float) -> list[tuple[bytes, NetworkAddress]] | None:
        """aioquic's ``datagrams_to_send`` for the common pass (:meth:`_short_plan`),
        its steps in its order, each packet written as its packet builder writes it."""
        held = self._one_rtt()
        if held is None:
            return None
        keys, space, crypto = held
        buf = _BUFFERS.packet  # this thread's (a threading.local read: 26 ns, timeit)
        plan = self._short_plan(keys, space, crypto, buf, now)
        if plan is None:
            return None
        ack, finished, bidi_raised, uni_raised, packets = plan
        loss, path = self._loss, self._network_paths[0]
        pacer = loss._pacer
        packet_time = pacer.packet_time
        self._pacing_at = None
        # pacing, unless an ACK is late: the pacer's next_send_time(now), its steps; its
        # bucket, once updated at now, follows the pass here (the pacer's later updates
        # at now change nothing)
        paced = space.ack_at is None or space.ack_at >= now
        bucket = 0.0
        if packet_time is not None and paced:
            bucket = _bucket(pacer, now)
            if bucket <= 0:
                self._pacing_at = now + packet_time
                return []
        if not packets and not finished:
            return []
        for stream in finished:
            del self._streams[stream.stream_id or 0]
        if bidi_raised:  # RFC 9000, Section 4.6
            self._local_max_streams_bidi.value += bidi_raised
        if uni_raised:
            self._local_max_streams_uni.value += uni_raised
        queue = self._streams_queue
        if not packets:  # aioquic's next packet: empty
            gone = set(finished)
            self._streams_queue = [s for s in queue if s not in gone]
            self._pacing_at = _next_send_time(pacer, now)
            return []
        # keys.key_phase (no update requested: the plan's check)
        header = _SHORT_FIRST[self._spin_bit << 1 | keys.recv.key_phase] + self._peer_cid.cid
        number = self._packet_number
        datagrams: list[tuple[bytes, NetworkAddress]] = []
        cc = loss._cc
        reno = cc if type(cc) is RenoCongestionControl and loss._quic_logger is None else None
        if packet_time is not None and not paced:  # the first update_after_send's update
            bucket = _bucket(pacer, now)
        for credits, frames, sent in packets:
            buf.seek(ack)  # after the ACK frame the plan wrote there, in the first packet
            handlers: list[tuple[Callable[..., None], Any]] = []
            if ack:
                handlers.append((self._on_ack_delivery, (space, space.largest_received_packet)))
                space.ack_at = None
                self._ack_written(space)
                ack = 0
            for limit, value in credits:
                buf.push_uint_var(limit.frame_type)
                buf.push_uint_var(value)
                limit.sent = value
                handlers.append((self._on_connection_limit_delivery, (limit,)))
            for stream, start, stop, fin in frames:
                sender = stream.sender
                buf.push_uint_var(_STREAM_LEN | (4 if start else 0) | fin)  # FIN: bit 0
                buf.push_uint_var(stream.stream_id or 0)
                if start:
                    buf.push_uint_var(start)
                buf.push_uint16((stop - start) | 0x4000)
                pending = _ranges(sender._pending)
                if stop > start:  # what sender.get_frame does for this frame
                    offset = sender._buffer_start
                    data = sender._buffer
                    if start != offset or stop - offset != len(data):  # not all of it
                        data = data[start - offset:stop - offset]
                    buf.push_bytes(bytes(data))  # all of it: one copy, not two
                    if stop == pending[0].stop:
                        del pending[0]
                    else:
                        pending[0] = range(stop, pending[0].stop)
                    if stop > sender.highest_offset:
                        self._remote_max_data_used += stop - sender.highest_offset
                        sender.highest_offset = stop
                if fin:
                    sender._pending_eof = False
                if not pending and not sender._pending_eof:
                    sender.buffer_is_empty = True
                handlers.append((sender.on_data_delivery, (start, stop, fin)))
            if finished:  # aioquic's new order of service, the discarded left out
                # the plan took both from the queue, which holds each stream once: when
                # they are all of it, nothing else is left (a pass at one transaction in
                # flight: the stream answered before and the one served now)
                if len(finished) + len(sent) == len(queue):
                    queue = []
                else:
                    gone = set(finished)
                    queue = [s for s in queue if not (s in gone or s in sent)]
                finished = []
            elif sent:
                queue = [s for s in queue if s not in sent]
            if sent or queue is not self._streams_queue:
                queue.extend(sent)
                self._streams_queue = queue
            payload = buf.data
            # the plan's room, as aioquic's builder of max_datagram_size would enforce
            assert len(payload) <= self._max_datagram_size
            in_flight = eliciting = bool(frames or credits)
            if len(payload) < _SAMPLE_PAD:  # room for the header protection sample
                payload += bytes(_SAMPLE_PAD - len(payload))
                in_flight = True
            datagram = _seal(keys.send, header, payload, number)
            size = len(datagram)
            packet = _new(QuicSentPacket)  # its fields in their order, as _new says
            packet.epoch = _ONE_RTT
            packet.in_flight = in_flight
            packet.is_ack_eliciting = eliciting
            packet.is_crypto_packet = False
            packet.packet_number = number
            packet.packet_type = _ONE_RTT_PACKET
            packet.sent_time = now
            packet.sent_bytes = size
            packet.delivery_handlers = handlers
            packet.quic_logger_frames = []
            # what aioquic does with each packet once its pass is built (nothing the next
            # packets are built from): loss recovery's record, the idle timer, path
            # statistics
            if reno is None:
                loss.on_packet_sent(packet=packet, space=space)
            else:  # its steps, and Reno's on_packet_sent, without their keyword calls
                space.sent_packets[number] = packet
                if eliciting:
                    space.ack_eliciting_in_flight += 1
                if in_flight:
                    if eliciting and loss.handshake_confirmed:
                        loss._time_of_last_sent_ack_eliciting_packet = now  # its sent_time
                    reno.bytes_in_flight += size
            if eliciting and not self._ack_eliciting_sent_since_receipt:
                self._close_at = now + self._idle_timeout()  # RFC 9000, Section 10.1
                self._ack_eliciting_sent_since_receipt = True
            path.bytes_sent += size
            datagrams.append((datagram, path.addr))
            number += 1
            if packet_time is not None:  # the pacer's update_after_send, its steps
                bucket = 0.0 if bucket < packet_time else bucket - packet_time
                pacer.bucket_time = bucket
                # aioquic's loop, once more: its next_send_time (an ACK late went in the
                # first packet)
                if bucket <= 0:
                    self._pacing_at = now + packet_time
                    break
        self._packet_number = number
        return datagrams


def _bucket(pacer: QuicPacketPacer, now: float) -> float:
    """The pacer's ``update_bucket(now)``, its steps: its bucket then."""
    bucket = pacer.bucket_time
    if now > pacer.evaluation_time:
        bucket += now - pacer.evaluation_time
        if pacer.bucket_max < bucket:
            bucket = pacer.bucket_max
        pacer.bucket_time = bucket
        pacer.evaluation_time = now
    return bucket


def _next_send_time(pacer: QuicPacketPacer, now: float) -> float | None:
    """The pacer's ``next_send_time(now)``, its steps without its keyword calls."""
    packet_time = pacer.packet_time
    if packet_time is not None and _bucket(pacer, now) <= 0:
        return now + packet_time
    return None


def _due(streams: Limit, value: int, sent: int) -> bool:
    """aioquic's ``_write_connection_limits``: a MAX_STREAMS frame due, raising
    ``streams`` from ``sent`` to ``value`` (batched: only once the peer has fewer streams
    left to open than that would grant)."""
    return value != sent and sent - streams.used < value - sent


def _record(space: QuicPacketSpace, number: int) -> None:
    """aioquic's record of a packet received, ``number``, not a duplicate: added to the
    ranges to acknowledge (at most MAX_ACK_RANGES of them kept) and to the window of
    packets received.  A packet above every range (nearly always with none left: the
    peer's packet acknowledged the ACK of the one before) and a window with nothing to
    prune, in their steps without the calls to the range set and the window (``add``,
    ``len``, ``add``); anything else by those calls."""
    ranges: list[range] = space.ack_queue._RangeSet__ranges  # type: ignore[attr-defined]
    if not ranges or ranges[-1].stop < number:  # a range of its own, the last
        ranges.append(range(number, number + 1))
        if len(ranges) > MAX_ACK_RANGES:
            del ranges[0]
    elif ranges[-1].stop == number:  # joins the last range
        ranges[-1] = range(ranges[-1].start, number + 1)
    else:
        space.ack_queue.add(number)
        if len(space.ack_queue) > MAX_ACK_RANGES:
            space.ack_queue.shift()
    window = space.received_packets
    received = window._received
    lower = number - window._size + 1
    if lower > window._lower and len(received) >= 2 * window._size:
        window.add(number)  # its window slides and it prunes its set
        return
    received.add(number)  # not below the window: not a duplicate
    if lower > window._lower:
        window._lower = lower


def _open(keys: CryptoContext, data: bytes, offset: int,
          expected: int) -> tuple[bytes, bytes, int] | None:
    """``keys.decrypt_packet`` (header protection, then payload: RFC 9001, Section 5.4) of
    a short-header packet whose packet number starts at ``offset``, without copying the
    packet to remove header protection: its plain header, payload and packet number;
    None if it is of the other key phase (aioquic's then decrypts it with the next keys
    and updates them, Section 6).  CryptoError if it does not decrypt."""
    aead = keys.aead
    hp = keys.hp
    assert aead is not None and hp is not None  # _one_rtt: valid
    sample = data[offset + 4:offset + _SAMPLE_END]  # as at sending
    # its _mask, for AES without the call (ChaCha20's nonce is the sample: its own)
    mask = hp._mask(sample) if hp._is_chacha20 else hp._encryptor.update(sample)
    masked = mask[0] & 0x1F
    first = data[0] ^ masked
    if (first >> 2) & 1 != keys.key_phase:
        return None
    end = offset + (first & 3) + 1
    # the header, its first octet and packet number unmasked, as one integer (one slice,
    # no join: aioquic's order, big-endian, Python 3.11's default)
    bits = 8 * (end - offset)
    plain = (int.from_bytes(data[:end]) ^ (masked << (8 * end - 8))
             ^ (int.from_bytes(mask[1:end - offset + 1])))
    header = plain.to_bytes(end)
    truncated = plain & ((1 << bits) - 1)
    # decode_packet_number(truncated, bits, expected), its steps (RFC 9000, Appendix A.3)
    window = 1 << bits
    half = window // 2
    number = (expected & ~(window - 1)) | truncated
    if number <= expected - half and number < (1 << 62) - window:
        number += window
    elif number > expected + half and number >= window:
        number -= window
    try:
        payload = aead._aead.decrypt((aead._iv ^ number).to_bytes(12), data[end:], header)
    except InvalidTag as exc:
        raise CryptoError(str(exc)) from exc  # as aioquic's AEAD does
    return header, payload, number


def _seal(keys: CryptoContext, header: bytes, payload: bytes, number: int) -> bytes:
    """``keys.encrypt_packet`` (payload, then header protection: RFC 9001, Section 5.4)
    of a 1-RTT packet with ``header`` less its 2-octet packet number."""
    aead = keys.aead
    hp = keys.hp
    assert aead is not None and hp is not None
    number_bytes = (number & 0xFFFF).to_bytes(2, "big")
    sealed = aead._aead.encrypt((aead._iv ^ number).to_bytes(12, "big"), payload,
                                header + number_bytes)
    sample = sealed[2:18]  # 4 octets after the packet number's start
    # its _mask(sample): for AES, the cipher's update, called here
    mask = hp._mask(sample) if hp._is_chacha20 else hp._encryptor.update(sample)
    return b"".join((_OCTETS[header[0] ^ (mask[0] & 0x1F)], header[1:],
                     ((number & 0xFFFF) ^ ((mask[1] << 8) | mask[2])).to_bytes(2, "big"),
                     sealed))


def _new_stream(stream_id: int, max_stream_data_local: int,
                max_stream_data_remote: int) -> QuicStream:
    """``QuicStream(stream_id, max_stream_data_local, max_stream_data_remote)``, a
    bidirectional stream, made without the five ``__init__`` calls (its own, its
    receiver's, its sender's, their range sets'): the same attributes, set in the same
    order, to the same values."""
    receiver = _new(QuicStreamReceiver)
    receiver.highest_offset = 0
    receiver.is_finished = False
    receiver.stop_pending = False
    receiver._buffer = bytearray()
    receiver._buffer_start = 0
    receiver._final_size = None
    receiver._ranges = _new_ranges()
    receiver._stream_id = stream_id
    receiver._stop_error_code = None
    sender = _new(QuicStreamSender)
    sender.buffer_is_empty = True
    sender.highest_offset = 0
    sender.is_finished = False
    sender.reset_pending = False
    sender._acked = _new_ranges()
    sender._acked_fin = False
    sender._buffer = bytearray()
    sender._buffer_fin = None
    sender._buffer_start = 0
    sender._buffer_stop = 0
    sender._pending = _new_ranges()
    sender._pending_eof = False
    sender._reset_error_code = None
    sender._stream_id = stream_id
    stream = _new(QuicStream)
    stream.is_blocked = False
    stream.max_stream_data_local = max_stream_data_local
    stream.max_stream_data_local_sent = max_stream_data_local
    stream.max_stream_data_remote = max_stream_data_remote
    stream.receiver = receiver
    stream.sender = sender
    stream.stream_id = stream_id
    return stream


def _new_ranges() -> RangeSet:
    """An empty ``RangeSet()``."""
    ranges = _new(RangeSet)
    ranges._RangeSet__ranges = []  # type: ignore[attr-defined]
    return ranges
