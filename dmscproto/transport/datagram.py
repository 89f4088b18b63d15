"""Reliability for DMSC over datagram transports (draft-dmsc-protocol-00, Section 9.3).

DTLS (Section 9.2) and lab UDP (Section 9.4) lose, duplicate and reorder datagrams, so the
DMSC layer itself makes requests reliable:

* One DMSC PDU per datagram.  A PDU larger than the transport's limit (``max_pdu``, derived
  from a maximum datagram payload of 1200 octets by default) is never sent: a requester
  gets :class:`PduTooLarge` (an :class:`EncodeError`), and a responder whose answer is too
  large sends ERROR with PDU_TOO_LARGE and the answer's type in OFFENDING_TYPE instead.
  There is no fragmentation at the DMSC layer.
* A requester retransmits a request that has no answer after RETRANSMIT_INITIAL, doubling
  the timeout after each retransmission up to RETRANSMIT_MAX, at most RETRANSMIT_LIMIT
  times; it abandons the transaction (TRANSACTION_TIMEOUT) when its transaction time
  ends (the ``timeout`` of the request, by default REQUEST_TIMEOUT; the caller gives a
  relayed request's longer one), whether or not every retransmission went out.  A
  request without a transaction time is abandoned one timeout after the last
  retransmission.
  Retransmissions are the same PDU with the RETRANSMISSION flag set.
* An answer matches the outstanding request with the same transaction id from the same
  peer, if it has the answering type of :data:`~dmscproto.codec.registry.ANSWER_TO` or is
  ERROR; any other answer (a late or duplicated one) is dropped.
* A responder keeps, for DUPLICATE_CACHE_TIME after answering, the answer keyed by
  (peer, transaction id).  A repeated request gets the cached answer and is not processed
  again; a repeat that arrives while the request is still being processed is dropped (the
  answer goes out when it is ready).  A different request reusing a cached transaction id
  is answered with ERROR UNEXPECTED_MESSAGE.
* One-way messages (:data:`~dmscproto.codec.registry.ONE_WAY`) are sent once and never
  answered; the peering protocol tolerates their loss (hold time, DIGEST anti-entropy, Section 6).
* A PDU that does not decode (Section 4.4) is answered with ERROR carrying the decoding
  error code, unless it is an answer, a one-way message or ERROR; as the answer to an
  outstanding request it fails that request with its decoding error code.

:class:`Reliability` is sans-I/O: it is fed datagrams and ``now`` and returns datagrams to
send, a timer and events.  :class:`DatagramNode` is the asyncio glue shared by the DTLS and
lab UDP bindings; it sits on a :class:`Channel`, the sans-I/O security layer below (DTLS or
cleartext), and exposes the same ``request``/handler API as the QUIC binding.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, TypeAlias, cast

from cryptography import x509

from ..codec.errors import DecodeError, EncodeError
from ..codec.messages import Error, Message
from ..codec.pdu import decode, encode
from ..codec.registry import (
    ANSWER_TO,
    DEFAULT_MAX_DATAGRAM,
    HEADER_SIZE,
    ONE_WAY,
    ErrorCode,
    Flags,
    MessageType,
    timer,
)
from ..codec.wire import HEADER_STRUCT
from ..security.ca import Identity
from .errors import TransportError
from .peer import Handler as AnyHandler
from .peer import PeerInfo as AnyPeerInfo
from .tap import DatagramTap

log = logging.getLogger(__name__)

Address = Hashable


class PduTooLarge(EncodeError):
    """A PDU does not fit in one datagram of the transport (Section 9.2; PDU_TOO_LARGE)."""

    code = ErrorCode.PDU_TOO_LARGE


# --- events of the reliability layer ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request to hand to the application; answer it with :meth:`Reliability.respond`."""

    peer: Address
    message: Message


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A one-way message (or an UPDATE that answers nothing outstanding)."""

    peer: Address
    message: Message


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to the outstanding request ``transaction_id``."""

    peer: Address
    transaction_id: int
    response: Message


@dataclass(frozen=True, slots=True)
class RequestAbandoned:
    """The outstanding request ``transaction_id`` was abandoned."""

    peer: Address
    transaction_id: int
    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class DatagramRejected:
    """A datagram that is not a valid PDU (Section 4.4)."""

    peer: Address
    error: DecodeError


ReliabilityEvent = RequestReceived | MessageReceived | ResponseReceived | RequestAbandoned \
    | DatagramRejected


@dataclass(slots=True)
class _Pending:
    answers: tuple[int, int]  # the answer's message type code, and ERROR's
    data: bytes
    rto: float
    next_at: float
    deadline: float
    retransmissions: int = 0


@dataclass(slots=True)
class _Cached:
    fingerprint: bytes
    answer: bytes | None = None  # None while the request is being processed
    expires: float = math.inf


@dataclass(slots=True)
class Counters:
    """What the reliability layer did, for metrics and tests."""

    requests_sent: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    duplicates_answered: int = 0
    duplicates_in_progress: int = 0
    stray_answers: int = 0
    rejected: int = 0


def _fingerprint(data: bytes) -> bytes:
    """What identifies a request apart from its header flags: type and body."""
    return hashlib.blake2b(data[1:2] + data[HEADER_SIZE:], digest_size=16).digest()


class Reliability:
    """Sans-I/O retransmission and duplicate detection for one endpoint (Section 9.3).

    ``peer`` values are opaque hashable addresses.  Timer values come from the registry
    (Section 8) unless overridden.
    """

    def __init__(self, *, max_pdu: int = DEFAULT_MAX_DATAGRAM,
                 retransmit_initial: float = timer("RETRANSMIT_INITIAL"),
                 retransmit_max: float = timer("RETRANSMIT_MAX"),
                 retransmit_limit: int = int(timer("RETRANSMIT_LIMIT")),
                 request_timeout: float = timer("REQUEST_TIMEOUT"),
                 duplicate_cache_time: float = timer("DUPLICATE_CACHE_TIME"),
                 max_cache_entries: int = 65536) -> None:
        self.max_pdu = max_pdu
        self.retransmit_initial = retransmit_initial
        self.retransmit_max = retransmit_max
        self.retransmit_limit = retransmit_limit
        self.request_timeout = request_timeout
        self.duplicate_cache_time = duplicate_cache_time
        self.max_cache_entries = max_cache_entries
        self.counters = Counters()
        self._pending: dict[tuple[Address, int], _Pending] = {}
        self._cache: dict[tuple[Address, int], _Cached] = {}
        self._expiry: list[tuple[float, int, tuple[Address, int]]] = []  # heap
        self._expiry_seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[ReliabilityEvent] = deque()

    # -- requester side --------------------------------------------------------------------
    def send_request(self, peer: Address, msg: Message, now: float,
                     timeout: float | None = None) -> int:
        """Send request ``msg`` to ``peer``; returns its transaction id.  A zero transaction
        id is replaced by a random one.  Raises :class:`PduTooLarge` or ValueError."""
        if msg.TYPE not in ANSWER_TO:
            raise ValueError(f"{msg.TYPE.name} is not a request")
        if msg.transaction_id == 0:
            msg = replace(msg, transaction_id=self._free_transaction_id(peer))
        return self.send_request_bytes(peer, self._encode_within_limit(msg), now, timeout)

    def send_request_bytes(self, peer: Address, pdu: bytes, now: float,
                           timeout: float | None = None) -> int:
        """:meth:`send_request` with the request as octets, which need not decode
        (conformance tests send malformed ones) but must hold a header; the answer is
        the type's answer (:data:`ANSWER_TO`) or ERROR."""
        if len(pdu) < HEADER_SIZE:
            raise ValueError(f"a request needs a {HEADER_SIZE}-octet header")
        if len(pdu) > self.max_pdu:
            raise PduTooLarge(f"request of {len(pdu)} octets exceeds the datagram limit "
                              f"of {self.max_pdu}")
        _version, mtype, _flags, _length, txid = HEADER_STRUCT.unpack_from(pdu)
        key = (peer, txid)
        if key in self._pending:
            raise ValueError(f"transaction {txid} already outstanding")
        answer = ANSWER_TO.get(MessageType(mtype)) if mtype in _TYPE_CODES else None
        rto = self.retransmit_initial
        limit = self.request_timeout if timeout is None else timeout
        self._pending[key] = _Pending((answer or MessageType.ERROR, MessageType.ERROR),
                                      pdu, rto, now + rto, now + limit)
        self._out.append((pdu, peer))
        self.counters.requests_sent += 1
        return int(txid)

    def send_message(self, peer: Address, msg: Message) -> None:
        """Send a one-way message once (no retransmission, no answer expected)."""
        self._out.append((self._encode_within_limit(msg), peer))

    def _encode_within_limit(self, msg: Message) -> bytes:
        data = encode(msg)
        if len(data) > self.max_pdu:
            raise PduTooLarge(f"{msg.TYPE.name} PDU of {len(data)} octets exceeds the "
                              f"datagram limit of {self.max_pdu}")
        return data

    def cancel(self, peer: Address, transaction_id: int) -> None:
        """Stop retransmitting a request (its answer is no longer wanted)."""
        self._pending.pop((peer, transaction_id), None)

    def forget_peer(self, peer: Address, reason: str) -> None:
        """Fail every request outstanding to ``peer`` (its association is gone)."""
        for key in [k for k in self._pending if k[0] == peer]:
            del self._pending[key]
            self._events.append(RequestAbandoned(peer, key[1], ErrorCode.TARGET_UNREACHABLE,
                                              reason))

    def outstanding(self) -> int:
        return len(self._pending)

    # -- responder side --------------------------------------------------------------------
    def respond(self, peer: Address, request: Message, response: Message, now: float) -> None:
        """Answer ``request`` (from a :class:`RequestReceived`) with ``response``; its
        transaction id is set to the request's.  An answer too large for one datagram is
        replaced by ERROR PDU_TOO_LARGE."""
        self._answer(peer, request.transaction_id, response, now)

    def _answer(self, peer: Address, txid: int, response: Message, now: float) -> None:
        response = replace(response, transaction_id=txid)
        data = encode(response)
        if len(data) > self.max_pdu:
            data = encode(Error(
                transaction_id=txid, status=ErrorCode.PDU_TOO_LARGE,
                offending_type=response.TYPE.value,
                diagnostic=f"{response.TYPE.name} of {len(data)} octets exceeds "
                           f"{self.max_pdu}"))
        key = (peer, txid)
        entry = self._cache.get(key)
        if entry is not None and entry.answer is None:
            entry.answer = data
            entry.expires = now + self.duplicate_cache_time
            self._expiry_seq += 1
            heapq.heappush(self._expiry, (entry.expires, self._expiry_seq, key))
        self._out.append((data, peer))

    def cached_answers(self) -> int:
        return len(self._cache)

    # -- input -----------------------------------------------------------------------------
    def receive(self, peer: Address, data: bytes, now: float) -> None:
        """Process one datagram payload (one PDU) from ``peer``."""
        try:
            msg = decode(data)
        except DecodeError as exc:
            self.counters.rejected += 1
            self._events.append(DatagramRejected(peer, exc))
            if len(data) >= HEADER_SIZE:
                self._undecodable(peer, data, exc, now)
            return
        key = (peer, msg.transaction_id)
        pending = self._pending.get(key)
        if pending is not None and msg.TYPE in pending.answers:
            del self._pending[key]
            self._events.append(ResponseReceived(peer, msg.transaction_id, msg))
            return
        if msg.TYPE in ANSWER_TO:
            if self._is_duplicate(key, _fingerprint(data), now):
                return
            self._events.append(RequestReceived(peer, msg))
        elif msg.TYPE in ONE_WAY:
            self._events.append(MessageReceived(peer, msg))
        else:
            self.counters.stray_answers += 1

    def _is_duplicate(self, key: tuple[Address, int], fingerprint: bytes, now: float) -> bool:
        """Handle a request against the duplicate cache; False if it is new (and now held)."""
        entry = self._cache.get(key)
        if entry is not None and entry.expires <= now:
            del self._cache[key]
            entry = None
        if entry is None:
            if len(self._cache) >= self.max_cache_entries and not self._evict_one():
                self._out.append((encode(Error(
                    transaction_id=key[1], status=ErrorCode.RESOURCE_EXHAUSTED,
                    diagnostic="duplicate cache full")), key[0]))
                return True
            self._cache[key] = _Cached(fingerprint)
            return False
        if entry.fingerprint != fingerprint:
            self._out.append((encode(Error(
                transaction_id=key[1], status=ErrorCode.UNEXPECTED_MESSAGE,
                diagnostic="transaction id reused by a different request")), key[0]))
        elif entry.answer is None:
            self.counters.duplicates_in_progress += 1
        else:
            self.counters.duplicates_answered += 1
            self._out.append((entry.answer, key[0]))
        return True

    def _undecodable(self, peer: Address, data: bytes, exc: DecodeError, now: float) -> None:
        """A PDU that does not decode (Section 4.4): as the answer to an outstanding
        request it fails that request; a request or a PDU of unknown type is answered
        with ERROR (through the cache); an answer, a one-way message or ERROR is dropped."""
        mtype, txid = data[1], int(HEADER_STRUCT.unpack_from(data)[4])
        pending = self._pending.get((peer, txid))
        if pending is not None and mtype in pending.answers:
            del self._pending[(peer, txid)]
            self._events.append(RequestAbandoned(peer, txid, exc.code, f"malformed answer: {exc}"))
        elif (mtype not in _NOT_ANSWERED
              and not self._is_duplicate((peer, txid), _fingerprint(data), now)):
            self._answer(peer, txid, Error(status=exc.code, offending_type=mtype,
                                           diagnostic=exc.reason[:200]), now)

    # -- output, timers, events ------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ReliabilityEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        times = [min(p.next_at, p.deadline) for p in self._pending.values()]
        if self._expiry:
            times.append(self._expiry[0][0])
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for key, p in list(self._pending.items()):
            if now < p.next_at and now < p.deadline:
                continue
            exhausted = p.retransmissions >= self.retransmit_limit
            if now >= p.deadline or (exhausted and not math.isfinite(p.deadline)):
                del self._pending[key]
                self.counters.timeouts += 1
                self._events.append(RequestAbandoned(
                    key[0], key[1], ErrorCode.TRANSACTION_TIMEOUT,
                    f"no answer after {p.retransmissions} retransmissions"))
                continue
            if exhausted:  # no more retransmissions: wait for the answer until the deadline
                p.next_at = p.deadline
                continue
            if p.retransmissions == 0:
                version, mtype, flags, length, txid = HEADER_STRUCT.unpack_from(p.data)
                p.data = HEADER_STRUCT.pack(version, mtype, flags | Flags.RETRANSMISSION,
                                            length, txid) + p.data[HEADER_SIZE:]
            p.retransmissions += 1
            self.counters.retransmissions += 1
            p.rto = min(2 * p.rto, self.retransmit_max)
            p.next_at = now + p.rto
            self._out.append((p.data, key[0]))
        while self._expiry and self._expiry[0][0] <= now:
            expires, _seq, key = heapq.heappop(self._expiry)
            entry = self._cache.get(key)
            if entry is not None and entry.expires == expires:
                del self._cache[key]

    def _evict_one(self) -> bool:
        """Drop the answered cache entry closest to expiry; False if none is answered."""
        while self._expiry:
            expires, _seq, key = heapq.heappop(self._expiry)
            entry = self._cache.get(key)
            if entry is not None and entry.expires == expires:
                del self._cache[key]
                return True
        return False

    def _free_transaction_id(self, peer: Address) -> int:
        while True:
            txid = secrets.randbits(64)
            if txid and (peer, txid) not in self._pending:
                return txid


_TYPE_CODES: Final = frozenset(t.value for t in MessageType)
#: Codes of the messages that are never answered, even with ERROR (Section 4.4).
_NOT_ANSWERED: Final = frozenset(
    t.value for t in {*ANSWER_TO.values(), *ONE_WAY, MessageType.ERROR} - set(ANSWER_TO))


# --- the sans-I/O layer below: DTLS or cleartext ----------------------------------------
@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A peer's association is up, with its verified identity and certificate (None in
    lab mode)."""

    addr: Address
    identity: Identity | None = None
    certificate: x509.Certificate | None = None


@dataclass(frozen=True, slots=True)
class PayloadReceived:
    """One datagram payload (one PDU) from an associated peer."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """A peer's association ended (close alert, handshake failure, idle timeout)."""

    addr: Address
    reason: str
    code: ErrorCode = ErrorCode.TARGET_UNREACHABLE


ChannelEvent = PeerConnected | PayloadReceived | PeerClosed


class Channel(Protocol):
    """The sans-I/O security layer a :class:`DatagramNode` drives (DTLS or lab cleartext)."""

    max_pdu: int

    def connect(self, addr: Address, now: float) -> None: ...
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def send(self, addr: Address, payload: bytes) -> None: ...
    def close(self, addr: Address) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def next_event(self) -> ChannelEvent | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...



# --- asyncio glue shared by DTLS and lab UDP ----------------------------------------------
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

    async def request(self, msg: Message,
                      timeout: float | None = timer("REQUEST_TIMEOUT")) -> Message:
        """Send request ``msg`` (retransmitted as needed) and return its answer, which may
        be ERROR.  Raises :class:`TransportError` (TRANSACTION_TIMEOUT, peer gone) or
        :class:`PduTooLarge`."""
        return await self.node.request(self.peer.address, msg,
                                       math.inf if timeout is None else timeout)

    async def request_bytes(self, pdu: bytes,
                            timeout: float | None = timer("REQUEST_TIMEOUT")) -> Message:
        """:meth:`request` with the request given as octets (which need not be a valid
        PDU, but must hold a header: conformance tests send malformed ones)."""
        return await self.node.request(self.peer.address, pdu,
                                       math.inf if timeout is None else timeout)

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
        self._waiting: dict[tuple[Address, int], asyncio.Future[Message]] = {}
        self._connecting: dict[Address, asyncio.Future[DatagramConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

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
        for task in self._tasks:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
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
        if addr not in self.connections:
            raise TransportError(ErrorCode.TARGET_UNREACHABLE, f"no association with {addr}")
        now = self._loop.time()
        txid = (self.reliability.send_request_bytes(addr, msg, now, timeout)
                if isinstance(msg, bytes)
                else self.reliability.send_request(addr, msg, now, timeout))
        fut: asyncio.Future[Message] = self._loop.create_future()
        self._waiting[(addr, txid)] = fut
        self._process()
        try:
            return await fut
        finally:
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
        self._arm_timer()

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
        if isinstance(ev, ResponseReceived | RequestAbandoned):
            fut = self._waiting.pop((ev.peer, ev.transaction_id), None)
            if fut is not None and not fut.done():
                if isinstance(ev, ResponseReceived):
                    fut.set_result(ev.response)
                else:
                    fut.set_exception(TransportError(ev.code, ev.reason))
        elif isinstance(ev, RequestReceived | MessageReceived):
            conn = self.connections.get(ev.peer)
            if conn is not None:
                task = self._loop.create_task(self._serve(conn, ev))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            log.info("%s: invalid PDU from %s: %s", self.transport_name, ev.peer, ev.error)

    async def _serve(self, conn: DatagramConnection,
                     ev: RequestReceived | MessageReceived) -> None:
        msg = ev.message
        answer: Message | None
        if self.handler is None:
            answer = Error(status=ErrorCode.UNEXPECTED_MESSAGE, offending_type=msg.TYPE,
                           diagnostic="this endpoint serves no requests")
        else:
            try:
                answer = await self.handler(msg, conn.peer)
            except Exception:
                log.exception("%s handler failed on %s", self.transport_name, msg.TYPE.name)
                answer = Error(status=ErrorCode.INTERNAL_ERROR, offending_type=msg.TYPE)
        if isinstance(ev, MessageReceived) or conn.closed:
            return
        if answer is None:
            answer = Error(status=ErrorCode.UNEXPECTED_MESSAGE, offending_type=msg.TYPE,
                           diagnostic="no response")
        self.reliability.respond(ev.peer, msg, answer, self._loop.time())
        self._process()

    def _arm_timer(self) -> None:
        times = [t for t in (self.channel.get_timer(), self.reliability.get_timer())
                 if t is not None]
        at = min(times) if times else None
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        # asyncio may run a timer up to one clock resolution early: never pass a time
        # before the one asked for.
        now = max(self._loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        self.channel.handle_timer(now)
        self.reliability.handle_timer(now)
        self._process()


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
