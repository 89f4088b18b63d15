"""Delayed and piggybacked QUIC acknowledgements (draft-dmsc-protocol-00, Section 9.1;
RFC 9000, Section 13.2).

aioquic acknowledges a 1-RTT packet about 1 ms after it arrives, and only sends the ACK
in a packet of its own: at one transaction in flight every DMSC request and response
costs a datagram more, an ACK-only one, in each direction.  A DMSC transaction is
answered within milliseconds, and the next one usually follows as soon, so
:class:`DelayedAckConnection` waits up to QUIC_ACK_DELAY (below the QUIC_MAX_ACK_DELAY
it advertises as ``max_ack_delay``) and carries the ACK in the next packet that has
anything else to send.  Within RFC 9000's rules (Sections 13.2.1 and 13.2.2) it
acknowledges at once

* Initial and Handshake packets (as aioquic always did);
* the second ack-eliciting 1-RTT packet not yet acknowledged;
* a packet that arrived out of order or after a gap (a loss for the sender to learn of
  quickly, so its loss recovery runs as before);
* a packet carrying a PING, which a peer sends to learn that the path works (a
  client's confirmation after the handshake, keepalives, loss probes).
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.connection import (
    NetworkAddress,
    QuicConnection,
    QuicReceiveContext,
)
from aioquic.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace

from ..codec.registry import timer
from .lean import _ONE_RTT, one_rtt_space

#: How long an ack-eliciting 1-RTT packet may wait for something to carry its ACK.
ACK_DELAY = timer("QUIC_ACK_DELAY")
#: The ``max_ack_delay`` transport parameter every endpoint advertises (milliseconds).
MAX_ACK_DELAY_MS = round(timer("QUIC_MAX_ACK_DELAY") * 1000)


class DelayedAckConnection(QuicConnection):
    """aioquic's sans-I/O QUIC connection with delayed, piggybacked ACKs (see module),
    combined with a :class:`~.lean.LeanQuicConnection` (it reads the 1-RTT packet space
    that one holds)."""

    # slots: aioquic's instance dict is full (85 attributes), one more doubles it
    __slots__ = ("_ack_at_once", "_piggyback", "_received_1rtt", "_unacked_eliciting")

    #: The ``receive_datagram`` and ``_payload_received`` after this class's in the method
    #: resolution order of the class of the connection (FastPathConnection's in
    #: DmscQuicConnection), found once, when that class is made, not by ``super()`` for
    #: every datagram (about 50 ns a call, timeit).
    _receive_next = QuicConnection.receive_datagram
    _payload_next = QuicConnection._payload_received

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._receive_next = super().receive_datagram
        cls._payload_next = super()._payload_received

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ack_delay = ACK_DELAY
        #: Ack-eliciting 1-RTT packets received since the last ACK sent.
        self._unacked_eliciting = 0
        #: 1-RTT packets processed in the datagram being received.
        self._received_1rtt = 0
        self._ack_at_once = False
        #: The application queued frames: a pending ACK goes with them.
        self._piggyback = False

    # --- receiving --------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        space = one_rtt_space(self)
        largest = space.largest_received_packet if space is not None else -1
        self._received_1rtt = 0
        self._receive_next(data, addr, now)
        confirmed = self._handshake_confirmed
        if not confirmed:  # made anew by the first Initial and a Retry (not after)
            space = one_rtt_space(self)
        if space is not None and space.ack_at is not None and space.ack_at > now and (
                self._ack_at_once or self._unacked_eliciting >= 2
                # in order and no gap: the largest grew by exactly the packets received
                or space.largest_received_packet - largest != self._received_1rtt):
            space.ack_at = now
        self._ack_at_once = False
        if confirmed:  # the Initial and Handshake spaces are discarded
            return
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE):
            other = self._spaces.get(epoch)
            if other is not None and other.ack_at is not None and other.ack_at > now:
                other.ack_at = now

    def _payload_received(self, context: QuicReceiveContext, plain: bytes,
                          crypto_frame_required: bool = False) -> tuple[bool, bool]:
        eliciting, probing = self._payload_next(context, plain, crypto_frame_required)
        if context.epoch is _ONE_RTT:
            self._received_1rtt += 1
            self._unacked_eliciting += eliciting
        return eliciting, probing

    def _handle_ping_frame(self, context: QuicReceiveContext, frame_type: int,
                           buf: Buffer) -> None:
        super()._handle_ping_frame(context, frame_type, buf)
        self._ack_at_once = True

    # --- sending ----------------------------------------------------------------------
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        if self._piggyback:
            self._piggyback = False
            space = one_rtt_space(self)
            if space is not None and space.ack_at is not None and space.ack_at > now:
                space.ack_at = now
        return super().datagrams_to_send(now)

    def _write_ack_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                         now: float) -> None:
        super()._write_ack_frame(builder, space, now)
        self._ack_written(space)

    def _ack_written(self, space: QuicPacketSpace) -> None:
        """An ACK frame for ``space`` was written (here, or by a packet writer of a
        subclass that says so)."""
        if space.is_application_data:  # the 1-RTT space
            self._unacked_eliciting = 0

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        super().send_stream_data(stream_id, data, end_stream)
        self._piggyback = True

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        super().stop_stream(stream_id, error_code)
        self._piggyback = True

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        super().reset_stream(stream_id, error_code)
        self._piggyback = True

    def send_ping(self, uid: int) -> None:
        super().send_ping(uid)
        self._piggyback = True

    # --- transport parameters ---------------------------------------------------------
    def _serialize_transport_parameters(self) -> bytes:
        """aioquic's, with ``max_ack_delay`` from the registry (aioquic hard-codes it)."""
        params = pull_quic_transport_parameters(
            Buffer(data=super()._serialize_transport_parameters()))
        params.max_ack_delay = MAX_ACK_DELAY_MS
        buf = Buffer(capacity=3 * self._max_datagram_size)  # as aioquic does
        push_quic_transport_parameters(buf, params)
        return buf.data
