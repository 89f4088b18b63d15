"""The common case of an established QUIC connection, received and sent with less work
(draft-dmsc-protocol-00, Section 9.1; RFC 9000 Sections 12-13 and 17.3).

Nearly every datagram a DMSC endpoint receives once a connection is established is one
short-header (1-RTT) packet, from the peer's address, to the connection ID in use,
carrying STREAM and ACK frames.  aioquic handles it as it handles any packet: a header
parser and a loop written for coalesced long-header packets, a scan of every connection
ID issued, and a dozen look-ups keyed by its ``Epoch`` enum (whose hash is a Python
function).  :class:`FastPathConnection` takes that packet straight to the same steps,
with aioquic's own cryptography and frame handlers: header protection and payload
decrypted by the connection's 1-RTT keys (key phase changes included), duplicates
dropped, reserved bits checked, the spin bit, the idle timer, path promotion, and the
packet recorded for acknowledgement (ACK ranges, the ACK timer); its frames go through
one loop that calls aioquic's handlers (ACK: loss recovery, RTT and congestion control;
STREAM: flow control and reassembly) and does for every frame the checks aioquic does
(unknown frame type, frame not allowed in 1-RTT, malformed frame).  Anything else (a
long header, another address or connection ID, a packet too short to hold a header
protection sample, a connection not yet confirmed or closing, a qlog being written)
goes to aioquic's code unchanged.

On the way out, aioquic's packet writer offers every stream queued a STREAM frame for
every packet of a transmit pass, though once a packet is full none fits, and offers a
stream that has sent its last octet and FIN once more in the next pass, to learn that
its buffer is empty: at 32 transactions in flight, 12 calls per answer sent where 2
write something.  :meth:`FastPathConnection._write_stream_frame` skips those calls
(their result is known: nothing written, nothing changed but that flag, set at once).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer, BufferReadError
from aioquic._crypto import CryptoError
from aioquic.quic.connection import (
    NetworkAddress,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.crypto import CryptoPair, KeyUnavailableError
from aioquic.quic.packet import (
    NON_ACK_ELICITING_FRAME_TYPES,
    PACKET_FIXED_BIT,
    PACKET_LONG_HEADER,
    PACKET_SPIN_BIT,
    PROBING_FRAME_TYPES,
    QuicErrorCode,
    QuicFrameType,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import MAX_ACK_RANGES, QuicPacketSpace
from aioquic.quic.stream import QuicStream, StreamFinishedError

from .lean import _QUIET_FRAMES, _TABLES, LeanQuicConnection, _Recovery

_ONE_RTT = tls.Epoch.ONE_RTT
_ZERO_RTT = tls.Epoch.ZERO_RTT
_CONNECTED = QuicConnectionState.CONNECTED
#: Octets after the packet number's offset that header protection samples (RFC 9001,
#: Section 5.4.2): a shorter packet goes to aioquic's code, which drops it.
_SAMPLE_END = 4 + 16
#: The smallest STREAM frame header: type, stream ID and length (aioquic's frame overhead
#: ``3 + size_uint_var(stream_id)``, plus the offset's size when not zero).
_STREAM_HEADER = 4


class FastPathConnection(LeanQuicConnection):
    """:class:`~.lean.LeanQuicConnection` receiving the common 1-RTT packet with less
    work (see module)."""

    __slots__ = ()  # a second base with slots of its own cannot be combined with acks'

    def _fast_keys(self) -> CryptoPair | None:
        """The 1-RTT keys, if the fast path may be taken at all: confirmed, connected,
        no qlog, no 0-RTT keys left to tear down (aioquic does that on the first 1-RTT
        packet)."""
        if (not self._handshake_confirmed or self._state is not _CONNECTED
                or self._quic_logger is not None
                or self._cryptos[_ZERO_RTT].recv.is_valid()):
            return None
        keys = self._cryptos[_ONE_RTT]
        return keys if keys.recv.is_valid() else None

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        cid = self.host_cid
        paths = self._network_paths
        if (not data or data[0] & (PACKET_LONG_HEADER | PACKET_FIXED_BIT) != PACKET_FIXED_BIT
                or len(data) < 1 + len(cid) + _SAMPLE_END
                or (keys := self._fast_keys()) is None or not paths
                or paths[0].addr != addr or not paths[0].is_validated
                or data[1:1 + len(cid)] != cid):
            super().receive_datagram(data, addr, now)
            return
        loss = self._loss
        assert isinstance(loss, _Recovery)
        losses = loss.losses
        if loss.bytes_in_flight + self._max_datagram_size > loss.congestion_window:
            self._frames.loud = True  # what the ACKs free may let queued data go
        self._receive_short(data, keys, cid, paths[0], now)
        if loss.losses != losses or len(self._network_paths) > 1:
            self._frames.loud = True

    def _receive_short(self, data: bytes, keys: CryptoPair, cid: bytes, path: Any,
                       now: float) -> None:
        """aioquic's ``receive_datagram`` for one short-header packet to ``cid`` from
        ``path`` (the active, validated one), its steps in its order."""
        space = self._spaces[_ONE_RTT]
        try:
            plain_header, payload, number = keys.decrypt_packet(
                data, 1 + len(cid), space.expected_packet_number)
        except (KeyUnavailableError, CryptoError) as exc:
            self._logger.debug(exc)
            return
        if number in space.received_packets:
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
        context = QuicReceiveContext(epoch=_ONE_RTT, host_cid=cid, network_path=path,
                                     quic_logger_frames=None, time=now, version=None)
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
        if path not in self._network_paths:
            self._add_network_path(path)
        idx = self._network_paths.index(path)
        if not self._is_client and idx and not probing and number > space.largest_received_packet:
            self._network_paths.insert(0, self._network_paths.pop(idx))  # promoted
            if path.peer_cid is not None:
                self._use_reserved_peer_cid(path)
        if not space.discarded:
            if number > space.largest_received_packet:
                space.largest_received_packet = number
                space.largest_received_time = now
            space.ack_queue.add(number)
            space.received_packets.add(number)
            if len(space.ack_queue) > MAX_ACK_RANGES:
                space.ack_queue.shift()
            if eliciting and space.ack_at is None:
                space.ack_at = now + self._ack_delay

    def _payload_received(self, context: QuicReceiveContext, plain: bytes,
                          crypto_frame_required: bool = False) -> tuple[bool, bool]:
        """aioquic's frame loop for a 1-RTT packet: PADDING, ACK and STREAM frames go
        to their handlers without the per-frame look-ups; every other frame as aioquic
        does it (its table, its epoch check)."""
        if context.epoch is not _ONE_RTT or crypto_frame_required:
            return super()._payload_received(context, plain, crypto_frame_required)
        table = _TABLES[type(self)]
        frames = self._frames
        buf = Buffer(data=plain)
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
            handler: Callable[..., None]
            if frame_type in _QUIET_FRAMES:  # allowed in 1-RTT, no transmit due
                handler = MethodType(table[frame_type][0], self)
            else:
                try:
                    handler, epochs = frames[frame_type]
                except KeyError:
                    raise QuicConnectionError(
                        error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                        frame_type=frame_type, reason_phrase="Unknown frame type") from None
                if _ONE_RTT not in epochs:
                    raise QuicConnectionError(
                        error_code=QuicErrorCode.PROTOCOL_VIOLATION, frame_type=frame_type,
                        reason_phrase="Unexpected frame type")
            try:
                handler(context, frame_type, buf)
            except BufferReadError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                    reason_phrase="Failed to parse frame") from None
            except StreamFinishedError:
                pass  # no state left for the stream: the frame is ignored
            found = True
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
