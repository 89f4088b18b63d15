"""Gateway sync, the sending half (draft-dmsc-protocol-00, Sections 6.5, 6.6).

About 480 lines, kept in one module: SyncOut's table, its per-record queue and the
UPDATE filling its rows drive are read together (as ``routing.py``).

:class:`SyncOut` remembers what it advertised to the peer (the records' versions in a
:class:`~dmscproto.codec.digest.DigestTree` and their paths), so it never sends the same
ADVERTISE twice, withdraws only what it advertised, and answers the peer's
DIGEST_REQUEST from that tree.  When the session is established it sends its whole
exportable table (bulk sync), packed into as many UPDATEs as needed, then a DIGEST that
closes the table.  Changes are queued per record (a record changed twice before it is
sent is sent once; one already in the UPDATE being filled has its TLV there replaced),
ADVERTISEs of one record are at least MIN_ADVERTISEMENT_INTERVAL
apart, WITHDRAW and PURGE go at once, at most SYNC_WINDOW UPDATEs are unacknowledged,
and every message fits the transport's PDU limit.  UPDATEs are built in slices of at
most WORK_SLICE (records not decoded since a restart cost a decode each), the table
taken a chunk at a time, so no step copies it whole: where a slice
ends, the UPDATE being filled waits, and is filled on and sent in the next slice, after
the gateway's other work (the slice timer is due at once: whatever else is ready or
due runs first); until then, inputs that would send (a SYNC_ACK, a change) leave
the sending to the slice timer.  The answer to a SYNC_REQUEST is filled the same way, sent
before any other UPDATE, and taken into the session's memory only once sent.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

from ..codec.digest import DigestTree, valid
from ..codec.messages import Digest, DigestRequest, Error, Message, SyncAck, SyncRequest, Update
from ..codec.registry import (
    DIGEST_LEAF_LEVEL,
    SYNC_WINDOW,
    ErrorCode,
    MessageType,
    limit,
    timer,
)
from ..codec.wire import Advertisement, VersionedId
from .machine import Outbox, ProtocolError, TransactionIds, earliest, slice_of
from .ports import SyncLink, SyncTable
from .sync_out_inputs import (
    Acked,
    AckInvalid,
    AdvertiseDue,
    Changed,
    DigestDue,
    NodeAsked,
    NodeInvalid,
    OutAction,
    OutInput,
    OutState,
    RecordsAsked,
    SliceDue,
    Start,
    TableSent,
)
from .sync_pdus import (
    ITEM_SIZE,
    SEQUENCE_SPACE,
    PduSpace,
    ad_size,
    ahead,
    entries_per_digest,
    update_budget,
)
from .typed import TypedMachine


class _Sent:
    """The path and time of the last ADVERTISE of a record on the session.  An object
    (always tracked by the garbage collector), not a tuple: a dict holding only tuples
    of bytes and floats is untracked by each collection and tracked again by the next
    insertion, young again, so every collection walked the whole table."""

    __slots__ = ("at", "path")

    def __init__(self, path: tuple[bytes, ...], at: float) -> None:
        self.path, self.at = path, at


class _Answer:
    """The UPDATE answering a SYNC_REQUEST, filled a slice at a time: the Agent IDs asked
    for, in order, how many were looked at, and the ADVERTISEs (and their Agent IDs)
    that fit so far."""

    __slots__ = ("ads", "ids", "looked", "room", "txid")

    def __init__(self, request: SyncRequest, room: int) -> None:
        self.txid = request.transaction_id
        self.ids = [a for run in request.agent_ids for a in run]
        self.looked = 0
        self.room = room
        self.ads: list[tuple[bytes, Advertisement]] = []


_O, _OI, _OA = OutState, OutInput, OutAction
_SENDING = (_O.BULK, _O.READY)


class SyncOut(TypedMachine):
    """What this gateway advertises on one session (Sections 6.5, 6.6; module doc)."""

    NAME = "gateway-sync-out"
    TITLE = "Gateway sync, sending half"
    State, Input, Action = OutState, OutInput, OutAction
    INITIAL = OutState.NEW
    TIMERS = ("DIGEST_INTERVAL", "MIN_ADVERTISEMENT_INTERVAL")
    MESSAGE_INPUTS = {
        MessageType.SYNC_ACK: (_OI.ACK, _OI.ACK_INVALID),
        MessageType.SYNC_REQUEST: (_OI.SYNC_REQUEST,),
        MessageType.DIGEST_REQUEST: (_OI.DIGEST_REQUEST, _OI.DIGEST_REQUEST_INVALID),
    }
    TABLE = {
        (_O.NEW, _OI.START): (_OA.BEGIN, _O.BULK),
        (_O.BULK, _OI.TABLE_SENT): (_OA.END_TABLE, _O.READY),
        (_O.READY, _OI.DIGEST_DUE): (_OA.SEND_DIGEST, _O.READY),
        **{(s, _OI.CHANGED): (_OA.QUEUE, s) for s in _SENDING},
        **{(s, _OI.ACK): (_OA.OPEN_WINDOW, s) for s in _SENDING},
        **{(s, _OI.ACK_INVALID): (_OA.REFUSE_ACK, s) for s in _SENDING},
        **{(s, _OI.SYNC_REQUEST): (_OA.ANSWER_RECORDS, s) for s in _SENDING},
        **{(s, _OI.DIGEST_REQUEST): (_OA.ANSWER_NODE, s) for s in _SENDING},
        **{(s, _OI.DIGEST_REQUEST_INVALID): (_OA.REFUSE_NODE, s) for s in _SENDING},
        **{(s, _OI.ADVERTISE_DUE): (_OA.SEND_DUE, s) for s in _SENDING},
        **{(s, _OI.SLICE_DUE): (_OA.SEND_SLICE, s) for s in _SENDING},
    }

    def __init__(self, outbox: Outbox, table: SyncTable, link: SyncLink,
                 txids: TransactionIds, *,
                 digest_interval: float = timer("DIGEST_INTERVAL"),
                 min_interval: float = timer("MIN_ADVERTISEMENT_INTERVAL"),
                 slice_clock: Callable[[], float] | None = None,
                 work_slice: float = limit("WORK_SLICE")) -> None:
        super().__init__(outbox)
        self.table = table
        self.link = link
        self._txids = txids
        self.digest_interval = digest_interval
        self.min_interval = min_interval
        #: What the peer was told: the versions (a digest tree) and, per record, the
        #: path and when it was last advertised.
        self.tree = DigestTree()
        self._sent: dict[bytes, _Sent] = {}
        #: Records to (re)consider, with the version purged if the origin purged it.
        self._dirty: dict[bytes, int | None] = {}
        #: Records whose next ADVERTISE waits for MIN_ADVERTISEMENT_INTERVAL.
        self._held: list[tuple[float, bytes]] = []
        #: The table snapshot: the chunk being sent, and the chunks still to take.
        self._bulk: list[bytes] = []
        self._chunks: Iterator[list[bytes]] | None = None
        #: Answers to SYNC_REQUESTs, in the order asked, the first being filled.
        self._answers: deque[_Answer] = deque()
        #: The clock that ends a slice of UPDATE building after ``work_slice`` seconds
        #: (None: no slices), the UPDATE a slice left unfinished, and when to go on.
        self.slice_clock = slice_clock
        self.work_slice = work_slice
        self._pdu: PduSpace | None = None
        #: Per record in the UPDATE being filled, what the peer was told of it before
        #: (version, last ADVERTISE): a later change of the record in the same UPDATE
        #: replaces its TLV, decided against that (Section 6.5).
        self._before: dict[bytes, tuple[int | None, _Sent | None]] = {}
        self._slice_at: float | None = None
        self.next_seq = 0
        self.acked = 0
        self.next_digest: float | None = None

    # --- inputs -----------------------------------------------------------------------------
    def receive(self, msg: Message, now: float) -> None:
        """SYNC_ACK, SYNC_REQUEST or DIGEST_REQUEST from the peer."""
        inp = self.classify(msg)
        if not self.rows_for(inp.KIND):
            raise self.unexpected(msg)
        self.run(inp, now)

    def classify(self, msg: Message) -> Acked | AckInvalid | RecordsAsked | NodeAsked \
            | NodeInvalid:
        if isinstance(msg, SyncAck):
            if ahead(msg.sequence, self.acked) > self.in_flight:
                return AckInvalid(msg.sequence)
            return Acked(msg.sequence)
        if isinstance(msg, SyncRequest):
            return RecordsAsked(msg)
        if isinstance(msg, DigestRequest):
            return NodeAsked(msg) if valid(msg.node) else NodeInvalid(msg)
        raise self.unexpected(msg)

    @property
    def in_flight(self) -> int:
        """Sequenced messages sent and not yet acknowledged."""
        return (self.next_seq - self.acked) % SEQUENCE_SPACE

    @property
    def table_sent(self) -> bool:
        """Whether the bulk snapshot has been sent (the input TABLE_SENT is due)."""
        return self.state is _O.BULK and not self._bulk_pending and self._pdu is None

    def get_timer(self) -> float | None:
        return earliest(self.next_digest, self._held[0][0] if self._held else None,
                        self._slice_at)

    def due(self, now: float) -> Iterator[AdvertiseDue | DigestDue | SliceDue]:
        """The timer inputs due at ``now``."""
        if self._slice_at is not None and now >= self._slice_at:
            yield SliceDue()
        if self._held and now >= self._held[0][0]:
            yield AdvertiseDue()
        if self.next_digest is not None and now >= self.next_digest:
            yield DigestDue()

    # --- sending ----------------------------------------------------------------------------
    def take_sequence(self) -> int:
        """The next SEQUENCE, counted as sent (for a message built elsewhere: tests)."""
        seq, self.next_seq = self.next_seq, (self.next_seq + 1) % SEQUENCE_SPACE
        return seq

    def _send_sequenced(self, msg: Update | Digest, now: float) -> None:
        self.take_sequence()
        self.link.send(msg, now)

    def _decide(self, aid: bytes, purged: int | None,
                now: float) -> Advertisement | tuple[str, VersionedId] | float | None:
        """What to tell the peer about ``aid`` now: an ADVERTISE, ("withdraw" | "purge",
        item), the time its ADVERTISE may be sent, or None (nothing to say)."""
        ad = self.table.advertisement(aid, self.link.gateway_id, self.link.allow)
        told = self.tree.get(aid)
        if ad is not None:
            sent = self._sent.get(aid)
            if told == ad.version and sent is not None and sent.path == ad.path[:-1]:
                return None
            if sent is not None and now < sent.at + self.min_interval:
                return sent.at + self.min_interval
            return ad
        if told is None:
            return None
        if purged is not None and purged >= told:
            return ("purge", VersionedId(aid, purged))
        return ("withdraw", VersionedId(aid, told))

    def _fill(self, pdu: PduSpace, aid: bytes, purged: int | None, now: float) -> bool:
        """Put what ``aid`` needs into ``pdu``, instead of what ``pdu`` held for it; False
        if it does not fit (then ``pdu`` holds nothing for it)."""
        what = self._decide(aid, purged, now)
        if what is None:
            return True
        if aid in self._before:  # decided again against what the peer was told before
            self._undo(pdu, aid)
            what = self._decide(aid, purged, now)
            if what is None:
                return True
        if isinstance(what, float):
            heapq.heappush(self._held, (what, aid))
            return True
        if isinstance(what, Advertisement):
            size = ad_size(what)
            if size > pdu.room:
                # a record too large for any UPDATE of this session is never advertised
                return size > update_budget(self.link.pdu_limit)
            self._before[aid] = (self.tree.get(aid), self._sent.get(aid))
            pdu.advertise[aid] = what
            pdu.room -= size
            self.tree.put(aid, what.version)
            self._sent[aid] = _Sent(what.path[:-1], now)
            return True
        if pdu.room < ITEM_SIZE:
            return False
        kind, item = what
        self._before[aid] = (self.tree.get(aid), self._sent.get(aid))
        (pdu.purge if kind == "purge" else pdu.withdraw)[aid] = item
        pdu.room -= ITEM_SIZE
        self.tree.discard(aid)
        self._sent.pop(aid, None)
        return True

    def _undo(self, pdu: PduSpace, aid: bytes) -> None:
        """Take ``aid``'s TLV out of the unsent ``pdu``: the peer's state of it is again
        what it was told before."""
        pdu.take(aid)
        version, sent = self._before.pop(aid)
        if version is None:
            self.tree.discard(aid)
        else:
            self.tree.put(aid, version)
        if sent is None:
            self._sent.pop(aid, None)
        else:
            self._sent[aid] = sent

    def _fill_next(self, pdu: PduSpace, now: float, more: Callable[[], bool]) -> bool:
        """Fill the next UPDATE: queued changes first, then the bulk snapshot.  True
        when it is complete (full, or nothing is left), False when ``more()`` ended the
        slice first (at least one record was looked at)."""
        while self._dirty:
            aid = next(iter(self._dirty))
            if not self._fill(pdu, aid, self._dirty[aid], now):
                return True
            del self._dirty[aid]
            if not more():
                return not (self._dirty or self._bulk_left())
        while self._bulk_left():
            if not self._fill(pdu, self._bulk[-1], None, now):
                return True
            self._bulk.pop()
            if not more():
                return not self._bulk_left()
        return True

    @property
    def _bulk_pending(self) -> bool:
        return bool(self._bulk) or self._chunks is not None

    def _bulk_left(self) -> bool:
        """Whether records of the table are left, the next chunk taken (read from the
        store, in agent id order) when the last is done."""
        while not self._bulk and self._chunks is not None:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
            else:
                self._bulk = chunk
        return bool(self._bulk)

    def _flush(self, now: float, *, slice_due: bool = False) -> None:
        """Send the answers to SYNC_REQUESTs, then UPDATEs while the window is open and
        there is something to send, until the slice's time is up; the slice timer, due at
        once, goes on after the gateway's other work.  Until then only the slice timer
        works: an input between two slices (a SYNC_ACK, a change) leaves the work to it."""
        if self._slice_at is not None and not slice_due:
            return
        more = slice_of(self.slice_clock, self.work_slice)
        self._slice_at = None
        while self._answers:
            if not self._fill_answer(self._answers[0], more):
                self._slice_at = now
                return
            self._send_answer(self._answers.popleft(), now)
            if not more() and (self._answers or self._dirty or self._pdu
                               or self._bulk_left()):
                self._slice_at = now
                return
        while self.in_flight < SYNC_WINDOW and (self._dirty or self._pdu or self._bulk_left()):
            pdu = self._pdu or PduSpace(update_budget(self.link.pdu_limit))
            self._pdu = None
            if not self._fill_next(pdu, now, more):
                self._pdu, self._slice_at = pdu, now
                return
            self._send_update(pdu, now)
            if not more() and (self._dirty or self._bulk_left()):
                self._slice_at = now
                return

    def _fill_answer(self, answer: _Answer, more: Callable[[], bool]) -> bool:
        """Fill ``answer`` with the ADVERTISE of each record asked for that is exported to
        the peer, in order, as many as fit (a record larger than any UPDATE of the session
        is left out); True when it is complete, False when ``more()`` ended the slice
        first (at least one record was looked at)."""
        ids = answer.ids
        while answer.looked < len(ids):
            aid = ids[answer.looked]
            ad = self.table.advertisement(aid, self.link.gateway_id, self.link.allow)
            if ad is not None:
                size = ad_size(ad)
                if size <= answer.room:
                    answer.ads.append((aid, ad))
                    answer.room -= size
                elif answer.ads:
                    return True
            answer.looked += 1
            if not more():
                return answer.looked == len(ids)
        return True

    def _send_answer(self, answer: _Answer, now: float) -> None:
        """Send a filled answer; only now is the peer told what it holds (the DIGESTs sent
        while it was filled did not cover it)."""
        for aid, ad in answer.ads:
            if aid in self._before:  # the UPDATE being filled goes after the answer
                self._before[aid] = (ad.version, _Sent(ad.path[:-1], now))
                continue
            self.tree.put(aid, ad.version)
            self._sent[aid] = _Sent(ad.path[:-1], now)
        self._send_sequenced(Update(transaction_id=answer.txid, sequence=self.next_seq,
                                    advertise=tuple(ad for _aid, ad in answer.ads)), now)

    def shed(self, more: Callable[[], bool]) -> bool:
        """Free what the session remembered, after it ended, a part at a time (one at
        least) until ``more()`` says no; whether all is freed."""
        self._answers.clear()
        self._bulk, self._chunks = [], None
        sent = self._sent
        while sent:
            for _ in range(min(len(sent), 64)):
                sent.popitem()
            if not more():
                return False
        return self.tree.shed(more)

    def _send_update(self, pdu: PduSpace, now: float) -> None:
        self._before.clear()
        if pdu:
            self._send_sequenced(Update(transaction_id=self._txids(), sequence=self.next_seq,
                                        advertise=tuple(pdu.advertise.values()),
                                        withdraw=tuple(pdu.withdraw.values()),
                                        purge=tuple(pdu.purge.values())), now)

    def _send_root(self, now: float) -> None:
        if self._pdu is not None:  # what the digest covers goes first
            pdu, self._pdu = self._pdu, None
            self._send_update(pdu, now)
        self.next_digest = now + self.digest_interval
        self._send_sequenced(Digest(transaction_id=self._txids(), sequence=self.next_seq,
                                    summary=self.tree.summary()), now)

    # --- actions ----------------------------------------------------------------------------
    def _begin(self, now: float, inp: Start) -> None:
        self._chunks = self.table.agent_id_chunks()
        self._flush(now)

    def _queue(self, now: float, inp: Changed) -> None:
        ch = inp.changes
        for aid in ch.advertised:
            self._dirty.setdefault(aid, None)
        for w in ch.withdrawn:
            self._dirty.setdefault(w.agent_id, None)
        for p in ch.purged:
            prev = self._dirty.get(p.agent_id)
            self._dirty[p.agent_id] = p.version if prev is None else max(prev, p.version)
        self._flush(now)

    def _open_window(self, now: float, inp: Acked) -> None:
        if ahead(inp.applied, self.acked) > 0:
            self.acked = inp.applied
        self._flush(now)

    def _refuse_ack(self, now: float, inp: AckInvalid) -> None:
        raise ProtocolError(ErrorCode.INVALID_TLV_VALUE,
                            f"SYNC_ACK {inp.applied} acknowledges messages never sent",
                            MessageType.SYNC_ACK)

    def _answer_records(self, now: float, inp: RecordsAsked) -> None:
        self._answers.append(_Answer(inp.request, update_budget(self.link.pdu_limit)))
        self._flush(now)

    def _answer_node(self, now: float, inp: NodeAsked) -> None:
        node = inp.request.node
        summary = self.tree.summary(node)
        per = entries_per_digest(self.link.pdu_limit)
        txid = inp.request.transaction_id
        if node.level < DIGEST_LEAF_LEVEL and summary.count > per:
            self._send_sequenced(Digest(transaction_id=txid, sequence=self.next_seq,
                                        summary=summary, node=node,
                                        children=self.tree.children(node)), now)
            return
        entries = list(self.tree.entries(node))
        for i in range(0, max(len(entries), 1), per):
            run = tuple(entries[i:i + per])
            self._send_sequenced(Digest(transaction_id=txid if i == 0 else self._txids(),
                                        sequence=self.next_seq, summary=summary, node=node,
                                        entries=(run,) if run else ()), now)

    def _refuse_node(self, now: float, inp: NodeInvalid) -> None:
        req = inp.request
        self.link.send(Error(transaction_id=req.transaction_id,
                             status=ErrorCode.INVALID_TLV_VALUE,
                             offending_type=int(MessageType.DIGEST_REQUEST),
                             diagnostic=f"no digest tree node {req.node.level}/"
                                        f"{req.node.index}"), now)

    def _end_table(self, now: float, inp: TableSent) -> None:
        self._send_root(now)

    def _send_due(self, now: float, inp: AdvertiseDue) -> None:
        while self._held and self._held[0][0] <= now:
            self._dirty.setdefault(heapq.heappop(self._held)[1], None)
        self._flush(now)

    def _send_digest(self, now: float, inp: DigestDue) -> None:
        self._send_root(now)

    def _send_slice(self, now: float, inp: SliceDue) -> None:
        self._flush(now, slice_due=True)


