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
import secrets
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
    MessageType,
    limit,
    timer,
)
from ..codec.wire import HEADER_STRUCT
from .reliability_events import (
    Address,
    DatagramRejected,
    MessageReceived,
    ReliabilityEvent,
)
from .transactions import (
    CANCEL,
    EVICT,
    EXPIRE,
    REPEAT,
    REQUEST_FULL,
    REUSED,
    SEND,
    Answered,
    BadAnswer,
    DuplicateEntry,
    Malformed,
    PeerGone,
    Request,
    Respond,
    Retransmission,
    RetransmitState,
    Sink,
)

log = logging.getLogger(__name__)


class PduTooLarge(EncodeError):
    """A PDU does not fit in one datagram of the transport (Section 9.2; PDU_TOO_LARGE)."""

    code = ErrorCode.PDU_TOO_LARGE


def _fingerprint(data: bytes) -> bytes:
    """What identifies a request apart from its header flags: type and body."""
    return hashlib.blake2b(data[1:2] + data[HEADER_SIZE:], digest_size=16).digest()


class Reliability:
    """Sans-I/O retransmission and duplicate detection for one endpoint (Section 9.3):
    each request sent is a :class:`~.transactions.Retransmission`, each received a
    :class:`~.transactions.DuplicateEntry`; this class classifies datagrams, calls and
    timers into their inputs.

    ``peer`` values are opaque hashable addresses.  Timer values come from the registry
    (Section 8) unless overridden.
    """

    def __init__(self, *, max_pdu: int = DEFAULT_MAX_DATAGRAM,
                 retransmit_initial: float = timer("RETRANSMIT_INITIAL"),
                 retransmit_max: float = timer("RETRANSMIT_MAX"),
                 retransmit_limit: int = int(timer("RETRANSMIT_LIMIT")),
                 request_timeout: float = timer("REQUEST_TIMEOUT"),
                 duplicate_cache_time: float = timer("DUPLICATE_CACHE_TIME"),
                 max_cache_entries: int = int(limit("DUPLICATE_CACHE_MAX"))) -> None:
        self.max_pdu = max_pdu
        self.retransmit_initial = retransmit_initial
        self.retransmit_max = retransmit_max
        self.retransmit_limit = retransmit_limit
        self.request_timeout = request_timeout
        self.duplicate_cache_time = duplicate_cache_time
        self.max_cache_entries = max_cache_entries
        self._sink = Sink()
        self.counters = self._sink.counters
        self._pending: dict[tuple[Address, int], Retransmission] = {}
        self._cache: dict[tuple[Address, int], DuplicateEntry] = {}

    # -- requester side --------------------------------------------------------------------
    def send_request(self, peer: Address, msg: Message, now: float,
                     timeout: float | None = None) -> int:
        """Send request ``msg`` to ``peer``; returns its transaction id.  A zero transaction
        id is replaced by a random one.  Raises :class:`PduTooLarge` or ValueError."""
        if msg.TYPE not in ANSWER_TO:
            raise ValueError(f"{msg.TYPE.name} is not a request")
        data = self._encode_within_limit(msg)
        if msg.transaction_id == 0:
            data = _with_transaction_id(data, self._free_transaction_id(peer))
        return self.send_request_bytes(peer, data, now, timeout)

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
        req = Retransmission(self._sink, peer, txid, _ANSWERS.get(mtype, _ERROR_ONLY),
                             pdu, self.retransmit_initial, self.retransmit_max,
                             self.retransmit_limit,
                             self.request_timeout if timeout is None else timeout)
        req.run(SEND, now)
        self._pending[key] = req
        return int(txid)

    def send_message(self, peer: Address, msg: Message) -> None:
        """Send a one-way message once (no retransmission, no answer expected)."""
        self._sink.out.append((self._encode_within_limit(msg), peer))

    def _encode_within_limit(self, msg: Message) -> bytes:
        data = encode(msg)
        if len(data) > self.max_pdu:
            raise PduTooLarge(f"{msg.TYPE.name} PDU of {len(data)} octets exceeds the "
                              f"datagram limit of {self.max_pdu}")
        return data

    def cancel(self, peer: Address, transaction_id: int) -> None:
        """Stop retransmitting a request (its answer is no longer wanted)."""
        req = self._pending.pop((peer, transaction_id), None)
        if req is not None:
            req.run(CANCEL, 0.0)

    def forget_peer(self, peer: Address, reason: str) -> None:
        """Fail every request outstanding to ``peer`` (its association is gone)."""
        for key in [k for k in self._pending if k[0] == peer]:
            self._pending.pop(key).run(PeerGone(reason), 0.0)

    def outstanding(self) -> int:
        return len(self._pending)

    # -- responder side --------------------------------------------------------------------
    def respond(self, peer: Address, request: Message, response: Message, now: float) -> None:
        """Answer ``request`` (from a :class:`RequestReceived`) with ``response``; its
        transaction id is set to the request's.  An answer too large for one datagram is
        replaced by ERROR PDU_TOO_LARGE."""
        txid = request.transaction_id
        data = encode(response)
        if response.transaction_id != txid:
            data = _with_transaction_id(data, txid)
        if len(data) > self.max_pdu:
            data = encode(Error(
                transaction_id=txid, status=ErrorCode.PDU_TOO_LARGE,
                offending_type=response.TYPE.value,
                diagnostic=f"{response.TYPE.name} of {len(data)} octets exceeds "
                           f"{self.max_pdu}"))
        entry = self._cache.get((peer, txid)) or DuplicateEntry(
            self._sink, peer, txid, b"", self.duplicate_cache_time)
        entry.run(Respond(data), now)

    def cached_answers(self) -> int:
        return len(self._cache)

    # -- input -----------------------------------------------------------------------------
    def receive(self, peer: Address, data: bytes, now: float) -> None:
        """Process one datagram payload (one PDU) from ``peer``."""
        try:
            msg = decode(data)
        except DecodeError as exc:
            self.counters.rejected += 1
            self._sink.events.append(DatagramRejected(peer, exc))
            if len(data) >= HEADER_SIZE:
                self._undecodable(peer, data, exc, now)
            return
        key = (peer, msg.transaction_id)
        pending = self._pending.get(key)
        if pending is not None and msg.TYPE in pending.answers:
            del self._pending[key]
            pending.run(Answered(msg), now)
            return
        if msg.TYPE in ANSWER_TO:
            self._request(key, _fingerprint(data), Request(msg), now)
        elif msg.TYPE in ONE_WAY:
            self._sink.events.append(MessageReceived(peer, msg))
        else:
            self.counters.stray_answers += 1

    def _request(self, key: tuple[Address, int], fingerprint: bytes,
                 new: Request | Malformed, now: float) -> None:
        """A request against the duplicate cache: the input it is for the entry of its
        (peer, transaction id), or ``new`` for a new entry (REQUEST_FULL if none fits)."""
        entry = self._cache.get(key)
        if entry is not None and entry.expires <= now:
            del self._cache[key]
            entry.run(EXPIRE, now)
            entry = None
        if entry is not None:
            entry.run(REPEAT if entry.fingerprint == fingerprint else REUSED, now)
            return
        entry = DuplicateEntry(self._sink, key[0], key[1], fingerprint,
                               self.duplicate_cache_time)
        if len(self._cache) >= self.max_cache_entries and not self._evict_one(now):
            entry.run(REQUEST_FULL, now)
            return
        self._cache[key] = entry
        entry.run(new, now)

    def _undecodable(self, peer: Address, data: bytes, exc: DecodeError, now: float) -> None:
        """A PDU that does not decode (Section 4.4): as the answer to an outstanding
        request it fails that request; a request or a PDU of unknown type is answered
        with ERROR (through the cache); an answer, a one-way message or ERROR is dropped."""
        mtype, txid = data[1], int(HEADER_STRUCT.unpack_from(data)[4])
        pending = self._pending.get((peer, txid))
        if pending is not None and mtype in pending.answers:
            del self._pending[(peer, txid)]
            pending.run(BadAnswer(exc), now)
        elif mtype not in _NOT_ANSWERED:
            self._request((peer, txid), _fingerprint(data), Malformed(mtype, exc), now)

    # -- output, timers, events ------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._sink.out = self._sink.out, []
        return out

    def next_event(self) -> ReliabilityEvent | None:
        events = self._sink.events
        return events.popleft() if events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        at = min([p.due for p in self._pending.values()], default=None)
        expiry = self._sink.expiry
        if expiry and (at is None or expiry[0][0] < at):
            return expiry[0][0]
        return at

    def handle_timer(self, now: float) -> None:
        for key, req in list(self._pending.items()):
            inp = req.classify_timer(now)
            if inp is None:
                continue
            req.run(inp, now)
            if req.state is RetransmitState.DONE:
                del self._pending[key]
        expiry = self._sink.expiry
        while expiry and expiry[0][0] <= now:
            expires, _order, key = heapq.heappop(expiry)
            entry = self._cache.get(key)
            if entry is not None and entry.expires == expires:
                del self._cache[key]
                entry.run(EXPIRE, now)

    def _evict_one(self, now: float) -> bool:
        """Forget the kept answer closest to expiry; False if no answer is kept."""
        expiry = self._sink.expiry
        while expiry:
            expires, _order, key = heapq.heappop(expiry)
            entry = self._cache.get(key)
            if entry is not None and entry.expires == expires:
                del self._cache[key]
                entry.run(EVICT, now)
                return True
        return False

    def _free_transaction_id(self, peer: Address) -> int:
        while True:
            txid = secrets.randbits(64)
            if txid and (peer, txid) not in self._pending:
                return txid


def _with_transaction_id(pdu: bytes, txid: int) -> bytes:
    """``pdu`` with another transaction id in its header (Section 4.1), which no TLV
    repeats: what encoding a copy of the message with that id gives, without the copy."""
    version, mtype, flags, length, _old = HEADER_STRUCT.unpack_from(pdu)
    return HEADER_STRUCT.pack(version, mtype, flags, length, txid) + pdu[HEADER_SIZE:]


#: By request type code: the answer's type code and ERROR's (:data:`ANSWER_TO`); a
#: request of an unknown type is answered by ERROR only.
_ANSWERS: Final = {int(t): (int(a), int(MessageType.ERROR)) for t, a in ANSWER_TO.items()}
_ERROR_ONLY: Final = (int(MessageType.ERROR), int(MessageType.ERROR))
#: Codes of the messages that are never answered, even with ERROR (Section 4.4).
_NOT_ANSWERED: Final = frozenset(
    t.value for t in {*ANSWER_TO.values(), *ONE_WAY, MessageType.ERROR} - set(ANSWER_TO))
