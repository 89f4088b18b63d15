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
send, a timer and events.  :class:`~.datagram.DatagramNode` drives it over a
:class:`~.channel.Channel`.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import secrets
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Final

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
