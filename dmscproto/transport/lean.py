"""Less memory and less work per QUIC connection (draft-dmsc-protocol-00, Section 9.1).

A gateway holds one QUIC connection per connected agent, idle most of the time.  Of what
aioquic keeps per connection, :class:`LeanQuicConnection` gives back or shares what a
connection no longer needs once its handshake is over, without touching flow control,
loss recovery or the 1-RTT keys:

* the TLS output buffers, 16 KiB for each of the three epochs, which only the handshake
  writes to (a DMSC endpoint issues no session tickets, and QUIC forbids TLS key updates
  and post-handshake authentication, RFC 9001 Sections 4.4 and 6);
* the TLS context's ephemeral key-exchange private keys and the key schedules of the
  cipher suites not chosen (also forward secrecy: the ephemeral keys are erased), and
  the peer certificate's parsed fields cached by the checks (it is loaded afresh);
* a server's whole TLS context (its transcript hash, key schedule, extensions and
  instance dict, about 3 KB): a QUIC server receives no TLS message after the
  handshake, so a :class:`_SpentServerTls` keeps only what is read afterwards and
  refuses any message as aioquic's context does (unexpected_message); its output
  buffers are shared, since nothing writes to them any more;
* the key pairs, CRYPTO streams of the Initial and Handshake epochs (and of 0-RTT,
  never used) once discarded: one spent, shared instance stands for them all;
* aioquic's frame-handler table, a dict of bound methods and epoch sets built for each
  connection: one table per class, bound when a frame is handled;
* the queues of events, QUIC DATAGRAM frames and path challenges: deques of 760 octets
  each even when empty, for a few items at most, become lists (:class:`_Fifo`);
* connection IDs: it issues at most QUIC_CONNECTION_IDS and advertises that many as
  ``active_connection_id_limit`` (2, RFC 9000's minimum: one in use and one spare for
  a path change) instead of aioquic's 8, each an entry in the server's routing table.

Less work: aioquic's asyncio protocol builds packets (``datagrams_to_send``) after every
datagram received, though most received by a DMSC endpoint oblige it to send nothing
at once: a request's STREAM frames are answered when the handler is done (its own
transmit), a response's when the next request goes, and their acknowledgement waits
for either (:mod:`.acks`).  :meth:`LeanQuicConnection.transmit_due` says whether the
datagrams received since the last transmit need a packet-building pass at once; when it
says no, the connection's timer (the ACK delay, loss detection) covers what remains.
It says yes unless the connection is established (handshake confirmed), each frame
received was PADDING, ACK or STREAM (RFC 9000, Section 19; any other frame may ask for
an answer: PING, PATH_CHALLENGE, connection IDs, flow control), the ACKs declared no
packet lost (its data is retransmitted at once, as aioquic does) and came when the
congestion window was not full (they may let queued data go), the path did not
change, and no ACK is due now.

The connection's events are taken as aioquic takes them, but an empty queue ends a batch
without an exception raised and caught (:meth:`LeanQuicConnection.next_event`: once per
datagram received).

And once the handshake is confirmed, a pass builds no 1-RTT packet after one that has
room left (:func:`_start_packet`): aioquic's writer starts packets until one comes
out empty, so each pass of a transaction's few hundred octets built an empty second one.
The one thing aioquic put in a second packet was the stream credit (MAX_STREAMS) that
finished streams give back, which it counts while writing the streams' frames, after
the connection limits: in a packet, and a datagram, of its own about every 64
transactions.  It goes in the first packet of the next pass instead, with an answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from types import MethodType
from typing import Any, TypeVar, cast

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.congestion.base import K_GRANULARITY
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import (
    MAX_LOCAL_CHALLENGES,
    NetworkAddress,
    QuicConnection,
    QuicConnectionState,
    QuicNetworkPath,
)
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import (
    QuicDeliveryState,
    QuicPacketBuilder,
    QuicPacketBuilderStop,
    QuicSentPacket,
)
from aioquic.quic.recovery import (
    K_MICRO_SECOND,
    K_SECOND,
    QuicPacketRecovery,
    QuicPacketSpace,
)
from aioquic.quic.stream import QuicStream, QuicStreamSender
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

T = TypeVar("T")

#: Enum members used on every packet, looked up once: an enum member's look-up by
#: attribute (``QuicDeliveryState.ACKED``) took about 170 ns of thread CPU here where a
#: plain attribute took 27 ns.
_ACKED = QuicDeliveryState.ACKED
_ONE_RTT = tls.Epoch.ONE_RTT
#: A stream sender's delivery handler, which :meth:`_Recovery.on_ack_range` takes in
#: its own steps for data acknowledged in order.
_DATA_DELIVERY = QuicStreamSender.on_data_delivery

#: Connection IDs an endpoint issues and accepts at once (RFC 9000, Section 5.1.1).
QUIC_CONNECTION_IDS = 2
#: What the TLS output buffers shrink to after the handshake.
_SPENT_BUFFER = 64

#: A frame handler of aioquic's table, unbound, and the epochs its frame is allowed in.
_Entry = tuple[Callable[..., None], frozenset[tls.Epoch]]
#: aioquic's (name-mangled) attribute holding the frame-handler table.
_HANDLERS = "_QuicConnection__frame_handlers"
#: The frame-handler table of each connection class, unbound.
_TABLES: dict[type[QuicConnection], dict[int, _Entry]] = {}
#: The STREAM frame types (RFC 9000, Section 19.8).
_STREAM_FRAMES = range(QuicFrameType.STREAM_BASE, QuicFrameType.STREAM_BASE + 8)
#: Frames whose receipt asks for nothing sent at once but their acknowledgement, which
#: :mod:`.acks` times: PADDING, ACK, ACK_ECN and STREAM (RFC 9000, Section 19).
_QUIET_FRAMES = frozenset({0x00, 0x02, 0x03, *_STREAM_FRAMES})


class _FrameHandlers:
    """Stands for aioquic's per-connection frame-handler dict (``frame type -> (bound
    handler, epochs)``, looked up once per frame): the class's table, bound on lookup.
    It also holds what the connection looks up for every datagram by its ``Epoch``
    key, whose hash is a Python call (:data:`OneRtt`)."""

    __slots__ = ("_conn", "_table", "loud", "one_rtt")

    def __init__(self, conn: QuicConnection, table: dict[int, _Entry]) -> None:
        self._conn = conn
        self._table = table
        #: A frame was handled that is not quiet (see module), or the connection is
        #: otherwise due a transmit, since its last one (the connection's flag: it has
        #: no room of its own).
        self.loud = True
        #: The 1-RTT keys and packet space, once held (see :data:`OneRtt`).
        self.one_rtt: OneRtt | None = None

    def __getitem__(self, frame_type: int) -> tuple[Callable[..., None], frozenset[tls.Epoch]]:
        if frame_type not in _QUIET_FRAMES:
            self.loud = True
        handler, epochs = self._table[frame_type]
        return handler.__get__(self._conn), epochs


#: The 1-RTT keys, packet space and CRYPTO stream of a connection whose handshake is
#: confirmed with no 0-RTT keys left: none is replaced after that (aioquic makes them
#: when the first Initial goes or comes, and updates keys in place;
#: :meth:`LeanQuicConnection.release_handshake_state` spends only the other epochs'
#: streams).  Held, they are not looked up in aioquic's dicts by ``Epoch.ONE_RTT``, whose
#: hash is a Python call: the 20 look-ups of a transaction at both ends took 4.5% of the
#: transport's instructions; held, 2.4% fewer (callgrind: 584k -> 570k a transaction).
OneRtt = tuple[CryptoPair, QuicPacketSpace, QuicStream]


def one_rtt_space(conn: QuicConnection) -> QuicPacketSpace | None:
    """A lean connection's 1-RTT packet space: the one held (:data:`OneRtt`), else
    aioquic's, if made yet."""
    # aioquic's attribute by its mangled name (_HANDLERS), read without getattr's call
    held: OneRtt | None = conn._QuicConnection__frame_handlers.one_rtt  # type: ignore[attr-defined]
    return conn._spaces.get(_ONE_RTT) if held is None else held[1]


#: Room (octets) left in a 1-RTT packet that shows everything pending went into it: a
#: STREAM frame that does not fit is cut to fill the packet, and any other frame that
#: does not fit ends aioquic's pass; the largest frame header is 25 octets.
_ROOM = 64


def _start_packet(builder: QuicPacketBuilder, packet_type: QuicPacketType,
                  crypto: CryptoPair) -> None:
    """aioquic's ``start_packet`` while an established connection writes its 1-RTT
    packets: another packet is started only when the one built so far is full (see
    :data:`_ROOM`); otherwise the pass ends there, as it would after building an empty
    one (module docstring)."""
    if (builder._packet is not None and not builder.packet_is_empty
            and builder.remaining_flight_space >= _ROOM):
        raise QuicPacketBuilderStop
    QuicPacketBuilder.start_packet(builder, packet_type, crypto)


def probe_timeout(loss: QuicPacketRecovery) -> float:
    """aioquic's ``loss.get_probe_timeout()`` (max_ack_delay included), its arithmetic in
    its order, without its keyword argument's handling and ``max()`` call."""
    if not loss._rtt_initialized:
        return 2 * loss._rtt_initial
    variance = 4 * loss._rtt_variance
    return (loss._rtt_smoothed + (variance if variance >= K_GRANULARITY else K_GRANULARITY)
            + loss.max_ack_delay)


class _Recovery(QuicPacketRecovery):
    """aioquic's loss recovery, counting the times it declared packets lost (their data
    is to be retransmitted: :meth:`LeanQuicConnection.transmit_due`)."""

    #: Times packets were declared lost: set on each instance by :func:`_recovery`, the
    #: one maker of this class (a class default read through an instance is never
    #: specialised by CPython 3.11).
    losses: int

    def _on_packets_lost(self, *, packets: Iterable[QuicSentPacket], **kwargs: Any) -> None:
        if packets:  # a list or a tuple: only when one was lost
            self.losses += 1
        super()._on_packets_lost(packets=packets, **kwargs)

    def discard_space(self, space: QuicPacketSpace) -> None:
        """aioquic's, and the space leaves :attr:`spaces`: discarded (once, for good:
        RFC 9001, Section 4.9), it has nothing in flight and no ACK, loss or probe
        timer, and gets none again (its keys are gone; aioquic records packets received
        only in a space not discarded), so every loop over the spaces (the timer's,
        the loss detection timer's, a probe's) would pass it by: an established
        connection's timer (``get_timer``) goes over one space, not three."""
        super().discard_space(space)
        self.spaces.remove(space)

    def on_ack_range(self, lowest: int, largest: int, ack_delay: float, now: float,
                     space: QuicPacketSpace) -> None:
        """aioquic's ``on_ack_received`` for an ACK frame of one range, ``lowest`` to
        ``largest`` (RFC 9002, Sections 5 and 6.1), with no qlog: its steps in its
        order, without a range set, and loss detection only when a packet at or below
        the largest acknowledged is left unacknowledged (with none, aioquic's
        ``_detect_loss`` only clears the space's loss time).  Reno's ``on_packet_acked``
        and the pacer's ``update_rate`` are taken here, their steps without their calls:
        2.0k instructions fewer a transaction (callgrind: 568.9k -> 566.9k); so is
        Reno's ``on_rtt_measurement`` (its RTT monitor called only in slow start: it does
        nothing after): 20.8k -> 20.3k an ACK frame (sans-I/O).  So is a stream sender's
        ``on_data_delivery`` for the data next in order (with an enum compared by ``==``
        and three calls on a range set): 566.9k -> 560.5k; and an ACK frame's delivery
        (:func:`_ack_acked`, without the handler's call)."""
        if largest > space.largest_acked_packet:
            space.largest_acked_packet = largest
        sent = space.sent_packets
        acked = []
        for number in sent:  # in the order sent: sorted
            if number > largest:
                break
            if number >= lowest:
                acked.append(number)
        if not acked:
            return
        cc = self._cc
        reno = cc if type(cc) is RenoCongestionControl else None  # its steps taken here
        eliciting = False
        for number in acked:
            packet = sent.pop(number)
            if packet.is_ack_eliciting:
                eliciting = True
                space.ack_eliciting_in_flight -= 1
            if not packet.in_flight:
                pass
            elif reno is not None:  # Reno's on_packet_acked
                size, sent_time = packet.sent_bytes, packet.sent_time
                assert sent_time is not None  # the packet was sent
                reno.bytes_in_flight -= size
                if sent_time > reno._congestion_recovery_start_time:
                    ssthresh = reno.ssthresh
                    if ssthresh is None or reno.congestion_window < ssthresh:
                        reno.congestion_window += size  # slow start
                    else:  # congestion avoidance
                        reno._congestion_stash += size
                        count = reno._congestion_stash // reno.congestion_window
                        if count:
                            reno._congestion_stash -= count * reno.congestion_window
                            reno.congestion_window += count * reno._max_datagram_size
            else:
                cc.on_packet_acked(packet=packet, now=now)
            for handler, args in packet.delivery_handlers:
                func = getattr(handler, "__func__", None)
                if func is _ACK_DELIVERY:  # the call's, not the handler's (timeit: 90 ns, 25)
                    _ack_acked(*args)
                    continue
                if func is _DATA_DELIVERY:
                    sender: QuicStreamSender = handler.__self__  # type: ignore[attr-defined]
                    start, stop, fin = args
                    if (start == sender._buffer_start and sender._reset_error_code is None
                            and not sender._acked._RangeSet__ranges):  # type: ignore[attr-defined]
                        # its on_data_delivery, for the data next in order with none
                        # acknowledged beyond it: what that adds to the range set of
                        # data acknowledged, it takes out at once
                        assert not fin or stop == sender._buffer_fin
                        if stop > start:
                            sender._buffer_start = stop
                            del sender._buffer[:stop - start]
                        if fin:
                            sender._acked_fin = True
                        if sender._buffer_start == sender._buffer_fin and sender._acked_fin:
                            sender.is_finished = True
                        continue
                handler(_ACKED, *args)
        if acked[-1] == largest and eliciting:  # an RTT sample, as aioquic takes it
            assert packet.sent_time is not None  # the last acknowledged: the largest
            latest_rtt = now - packet.sent_time
            # min() and max() as conditionals, here and below: 88 ns a call, 9 (timeit)
            if self.max_ack_delay < ack_delay:
                ack_delay = self.max_ack_delay
            latest = 0.001 if latest_rtt < 0.001 else latest_rtt
            rtt_min = self._rtt_min
            if latest < rtt_min:
                self._rtt_min = rtt_min = latest
            if latest > rtt_min + ack_delay:
                latest -= ack_delay
            self._rtt_latest = latest
            if not self._rtt_initialized:
                self._rtt_first_sample_time = now
                self._rtt_initialized = True
                self._rtt_variance = latest_rtt / 2
                self._rtt_smoothed = smoothed = latest_rtt
            else:
                self._rtt_variance = 3 / 4 * self._rtt_variance + 1 / 4 * abs(rtt_min - latest)
                self._rtt_smoothed = smoothed = 7 / 8 * self._rtt_smoothed + 1 / 8 * latest
            if reno is None:
                cc.on_rtt_measurement(now=now, rtt=latest_rtt)
            elif reno.ssthresh is None and reno._rtt_monitor.is_rtt_increasing(
                    now=now, rtt=latest_rtt):  # Reno's, its steps: nothing after slow start
                reno.ssthresh = reno.congestion_window
            # the pacer's update_rate, its steps
            pacer = self._pacer
            window = cc.congestion_window
            size = pacer._max_datagram_size
            rate = window / (K_MICRO_SECOND if smoothed < K_MICRO_SECOND else smoothed)
            packet_time = size / rate
            if packet_time > K_SECOND:
                packet_time = K_SECOND
            pacer.packet_time = packet_time if packet_time > K_MICRO_SECOND else K_MICRO_SECOND
            bucket = window // 4
            if bucket > 16 * size:
                bucket = 16 * size
            pacer.bucket_max = bucket_max = (bucket if bucket > 2 * size else 2 * size) / rate
            if pacer.bucket_time > bucket_max:
                pacer.bucket_time = bucket_max
        oldest = next(iter(sent), None)
        if oldest is not None and oldest <= space.largest_acked_packet:
            self._detect_loss(now=now, space=space)
        else:
            space.loss_time = None
        if self.peer_completed_address_validation:
            self._pto_count = 0


def _ack_acked(space: QuicPacketSpace, highest_acked: int) -> None:
    """An ACK frame of ``space`` acknowledging up to ``highest_acked`` was acknowledged: the
    packets it acknowledged need no acknowledgement any more (aioquic's
    ``space.ack_queue.subtract(0, highest_acked + 1)``, its steps)."""
    ranges: list[range] = space.ack_queue._RangeSet__ranges  # type: ignore[attr-defined]
    stop = highest_acked + 1
    while ranges and ranges[0].stop <= stop:
        del ranges[0]
    if ranges and ranges[0].start < stop:
        ranges[0] = range(stop, ranges[0].stop)


def _recovery(loss: QuicPacketRecovery) -> _Recovery:
    """aioquic's loss recovery as a :class:`_Recovery`: a new one, its attributes set in
    their order.  Its class swapped in place (``loss.__class__ = _Recovery``), it would keep
    the layout of aioquic's class, and CPython 3.11 could specialise none of the
    attribute reads of loss recovery (RTT, PTO, idle timeout, congestion control: about
    30 ns more each, timeit).  Its congestion control's ``bytes_in_flight`` and
    ``ssthresh``, read on every ACK, are set on it at once: read from their class's
    defaults (until first set, and ``ssthresh`` stays so in slow start), or added to it
    in an order that varies, they are not specialised either (a sans-I/O round:
    479.4k -> 478.1k instructions, callgrind)."""
    new = _Recovery.__new__(_Recovery)
    for name, value in vars(loss).items():
        setattr(new, name, value)
    new.losses = 0
    cc = new._cc
    cc.bytes_in_flight, cc.ssthresh = cc.bytes_in_flight, cc.ssthresh
    return new


class _Fifo(list[T]):
    """What aioquic does with its small queues (``append``, ``popleft``, ``[0]``,
    ``len``, ``in``, ``clear``), on a list: 56 octets empty where a deque takes 760."""

    __slots__ = ()

    def popleft(self) -> T:
        return self.pop(0)


class _BoundedFifo(_Fifo[T]):
    """A :class:`_Fifo` whose oldest item goes when one more than ``maxlen`` is
    appended (as a bounded deque's)."""

    __slots__ = ("maxlen",)

    def __init__(self, items: Iterable[T], maxlen: int) -> None:
        super().__init__(items)
        self.maxlen = maxlen

    def append(self, item: T) -> None:
        super().append(item)
        if len(self) > self.maxlen:
            del self[0]


def _fifo(items: Iterable[T] = (), maxlen: int | None = None) -> deque[T]:
    """A :class:`_Fifo` (with ``maxlen``, a :class:`_BoundedFifo`) where aioquic
    declares a deque (it uses only what both have)."""
    return cast("deque[T]", _Fifo(items) if maxlen is None else _BoundedFifo(items, maxlen))


class _SpentServerTls(tls.Context):
    """A server's TLS context after its handshake (see module): what the connection and
    the DMSC layer read afterwards (the state, ALPN, the client random for the key log,
    the peer certificate, and transport/tls.py's ``peer_identity`` and ``refusal``);
    any TLS message is refused, as aioquic's context refuses every one in
    SERVER_POST_HANDSHAKE (RFC 9001 Sections 4.4 and 6: a client sends none)."""

    __slots__ = ("_peer_certificate", "alpn_negotiated", "client_random", "peer_identity",
                 "refusal", "state")

    def __init__(self, context: tls.Context) -> None:  # not tls.Context's: nothing else
        for name in self.__slots__:
            setattr(self, name, getattr(context, name, None))

    def handle_message(self, input_data: bytes, output_buf: dict[tls.Epoch, Buffer]) -> None:
        if input_data:
            raise tls.AlertUnexpectedMessage


#: The keys of every discarded epoch: never set up, so nothing is sent or received with
#: them (``is_valid()`` is false).
_SPENT_KEYS = CryptoPair()
#: The CRYPTO stream of every discarded epoch: only ever written empty data after that.
_SPENT_STREAM = QuicStream()
#: The TLS output buffers of every server past its handshake: nothing writes to them.
_SPENT_BUFFERS = {epoch: Buffer(capacity=_SPENT_BUFFER) for epoch in tls.Epoch}
#: The Initial keys of every connection past its Initial epoch, by QUIC versions.
_SPENT_INITIALS: dict[tuple[int, ...], dict[int, CryptoPair]] = {}


class LeanQuicConnection(QuicConnection):
    """aioquic's sans-I/O QUIC connection, leaner once established (see module)."""

    __slots__ = ()  # aioquic's instance dict is full at 85 attributes: add none to it

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loss = _recovery(self._loss)
        self._local_active_connection_id_limit = QUIC_CONNECTION_IDS
        table = _TABLES.get(type(self))
        if table is None:
            bound: dict[int, tuple[Any, frozenset[tls.Epoch]]] = getattr(self, _HANDLERS)
            table = _TABLES[type(self)] = {
                frame_type: (handler.__func__, epochs)
                for frame_type, (handler, epochs) in bound.items()}
        setattr(self, _HANDLERS, _FrameHandlers(self, table))
        self._events = _fifo()
        self._datagrams_pending = _fifo()

    @property
    def _frames(self) -> _FrameHandlers:
        return cast(_FrameHandlers, getattr(self, _HANDLERS))

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        loss = cast(_Recovery, self._loss)
        losses, paths = loss.losses, self._network_paths
        if (self._state is not QuicConnectionState.CONNECTED or not self._handshake_confirmed
                or loss.bytes_in_flight + self._max_datagram_size > loss.congestion_window
                or not paths or paths[0].addr != addr):
            self._frames.loud = True
        super().receive_datagram(data, addr, now)
        if loss.losses != losses or len(self._network_paths) > 1:
            self._frames.loud = True

    def next_event(self) -> events.QuicEvent | None:
        """aioquic's, without raising and catching an exception when there is none (at
        the end of every batch of events)."""
        queue = self._events
        return queue.popleft() if queue else None

    def transmit_due(self, now: float) -> bool:
        """Whether what was received since the last transmit needs one now (module
        docstring); if not, the connection's timer covers the rest."""
        # not the property's call, nor getattr's (aioquic's mangled name): once a datagram
        frames: _FrameHandlers = self._QuicConnection__frame_handlers  # type: ignore[attr-defined]
        if frames.loud:
            return True
        held = frames.one_rtt
        space = one_rtt_space(self) if held is None else held[1]
        return space is not None and space.ack_at is not None and space.ack_at <= now

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        self._frames.loud = False
        return super().datagrams_to_send(now)

    def _write_application(self, builder: QuicPacketBuilder, network_path: QuicNetworkPath,
                           now: float) -> None:
        if self._handshake_confirmed:  # no Initial or Handshake packet in this pass
            builder.start_packet = MethodType(_start_packet, builder)  # type: ignore[method-assign]
        super()._write_application(builder, network_path, now)

    def _on_ack_delivery(self, delivery: QuicDeliveryState, space: QuicPacketSpace,
                         highest_acked: int) -> None:
        """aioquic's (an ACK frame sent was acknowledged), the state compared with a
        constant, the rest in :func:`_ack_acked` (which :meth:`_Recovery.on_ack_range`
        calls without this call)."""
        if delivery is _ACKED:
            _ack_acked(space, highest_acked)

    def _idle_timeout(self) -> float:
        """aioquic's (RFC 9000, Section 10.1: the smaller of the two ends' idle timeouts,
        at least three PTOs), with :func:`probe_timeout` and without the
        ``min()`` and ``max()`` calls: it runs for every packet received and the first
        ack-eliciting one sent after it."""
        idle = self._configuration.idle_timeout
        remote = self._remote_max_idle_timeout
        if remote is not None and remote < idle:
            idle = remote
        probes = 3 * probe_timeout(self._loss)
        return probes if probes > idle else idle

    def _replenish_connection_ids(self) -> None:
        limit = self._remote_active_connection_id_limit
        self._remote_active_connection_id_limit = min(limit, QUIC_CONNECTION_IDS)
        try:
            super()._replenish_connection_ids()
        finally:
            self._remote_active_connection_id_limit = limit

    def release_handshake_state(self) -> None:
        """Give back what only the handshake needed; call once it is complete (the
        TLS context has written its last message)."""
        context = self.tls
        assert context.state in (tls.State.CLIENT_POST_HANDSHAKE,
                                 tls.State.SERVER_POST_HANDSHAKE)
        if context._peer_certificate is not None:
            context._peer_certificate = x509.load_der_x509_certificate(
                context._peer_certificate.public_bytes(Encoding.DER))
        if context.state is tls.State.SERVER_POST_HANDSHAKE:
            self.tls = _SpentServerTls(context)
            self._crypto_buffers = _SPENT_BUFFERS
        else:
            self._crypto_buffers = {epoch: Buffer(capacity=_SPENT_BUFFER)
                                    for epoch in self._crypto_buffers}
            context._ec_private_keys = []
            context._x25519_private_key = None
            context._x448_private_key = None
            context._key_schedule_psk = None
            context._key_schedule_proxy = None
            context._peer_certificate_chain = []
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.ZERO_RTT, tls.Epoch.HANDSHAKE):
            keys = self._cryptos[epoch]
            if epoch != tls.Epoch.ZERO_RTT and not self._spaces[epoch].discarded:
                continue  # a client keeps its Handshake keys until HANDSHAKE_DONE
            if keys.send.is_valid() or keys.recv.is_valid():
                continue  # 0-RTT, were it ever used
            self._cryptos[epoch] = _SPENT_KEYS
            if epoch in self._crypto_streams:
                self._crypto_streams[epoch] = _SPENT_STREAM
        if self._spaces[tls.Epoch.INITIAL].discarded:
            versions = tuple(self._cryptos_initial)
            self._cryptos_initial = _SPENT_INITIALS.setdefault(
                versions, dict.fromkeys(versions, _SPENT_KEYS))
        for path in self._network_paths:
            path.local_challenges = _fifo(path.local_challenges, MAX_LOCAL_CHALLENGES)
            path.remote_challenges = _fifo(path.remote_challenges)


#: The delivery handler of an ACK frame, which :meth:`_Recovery.on_ack_range` takes in
#: its own steps.
_ACK_DELIVERY = LeanQuicConnection._on_ack_delivery
