"""Gateway sync, the receiving half (draft-dmsc-protocol-00, Sections 6.5, 6.6).

About 505 lines, kept in one module: SyncIn's table, its classification of a message
into inputs and the slice that learns records are read together (as ``routing.py``).

:class:`SyncIn` applies the peer's sequenced messages strictly in order, holding one that
arrives early until the gap before it fills (or REORDER_TIMEOUT passes), and
acknowledges them with SYNC_ACK.  It mirrors in its own tree what the peer advertised
(records it refused included, so a refused record is not requested again until its
version changes), compares the peer's DIGESTs with it, and on a difference walks the
peer's tree with DIGEST_REQUEST down to the leaves that differ, then asks for the
records it lacks with SYNC_REQUEST, asking again for those an answer left out.

A large UPDATE is applied in slices (Section 6.5.1): each slice checks ADVERTISEs while
the gateway's learning budget for the current step lasts (``learn_budget``: LEARN_SLICE a
step shared by every session of the gateway, in a gateway process what is left of its
event loop's turn budget), learns those that pass in one commit and reports them, then
lets the gateway's other work run before the next slice; the messages after it wait,
and it is acknowledged when its last slice is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..codec.changes import TableChanges
from ..codec.digest import ROOT, DigestTree, children_of, leaf_of, leaves_under
from ..codec.messages import Digest, DigestRequest, Error, Message, SyncAck, SyncRequest, Update
from ..codec.registry import DIGEST_LEAF_LEVEL, SYNC_WINDOW, MessageType, limit, timer
from ..codec.wire import Advertisement, DigestNode, DigestSummary, VersionedId
from .events import RecordRefused, SyncEvent, TableChanged
from .machine import Outbox, TransactionIds, earliest, learning_budget
from .ports import SyncLink, SyncTable
from .registration import RecordVerifier
from .sync_in_inputs import (
    AckDue,
    Ahead,
    AheadApplying,
    AnswerError,
    AnswerLast,
    AnswerMore,
    InAction,
    InEvent,
    InInput,
    InState,
    LastAnswerError,
    NodeDiff,
    NodeDiffLast,
    NodeLate,
    NodePartial,
    Purged,
    ReorderDue,
    RequestDue,
    RootDiffers,
    RootSame,
    SliceDue,
    Stale,
    UpdateNext,
)
from .sync_pdus import SEQUENCE_SPACE, ahead, ids_per_request, merge
from .typed import TypedMachine


@dataclass(slots=True)
class _Applying:
    """An UPDATE whose ADVERTISEs are being checked and learned, slice by slice."""

    update: Update
    #: How many of its ADVERTISEs are done.
    done: int = 0
_N, _NI, _NA = InState, InInput, InAction
_ANY = tuple(InState)


class SyncIn(TypedMachine):
    """What the peer advertises on one session (Sections 6.5, 6.6; module doc)."""

    NAME = "gateway-sync-in"
    TITLE = "Gateway sync, receiving half"
    EVENTS = SyncEvent
    State, Input, Action = InState, InInput, InAction
    INITIAL = InState.AWAITING_TABLE
    TIMERS = ("ACK_DELAY", "REORDER_TIMEOUT", "REQUEST_TIMEOUT")
    MESSAGE_INPUTS = {
        MessageType.UPDATE: (_NI.UPDATE, _NI.ANSWER_MORE, _NI.ANSWER_LAST, _NI.AHEAD,
                             _NI.AHEAD_APPLYING, _NI.STALE),
        MessageType.DIGEST: (_NI.DIGEST_SAME, _NI.DIGEST_DIFFERS, _NI.NODE_PARTIAL,
                             _NI.NODE_MORE, _NI.NODE_LAST, _NI.NODE_LATE, _NI.AHEAD,
                             _NI.AHEAD_APPLYING, _NI.STALE),
        MessageType.ERROR: (_NI.ERROR_MORE, _NI.ERROR_LAST, _NI.STALE),
    }
    TABLE = {
        **{(s, _NI.UPDATE): (_NA.APPLY, s) for s in _ANY},
        (_N.RECONCILING, _NI.ANSWER_MORE): (_NA.APPLY_ANSWER, _N.RECONCILING),
        (_N.RECONCILING, _NI.ANSWER_LAST): (_NA.APPLY_LAST_ANSWER, _N.READY),
        (_N.AWAITING_TABLE, _NI.DIGEST_SAME): (_NA.SWEEP, _N.READY),
        (_N.AWAITING_TABLE, _NI.DIGEST_DIFFERS): (_NA.SWEEP_AND_RECONCILE, _N.RECONCILING),
        (_N.READY, _NI.DIGEST_SAME): (_NA.NOTHING, _N.READY),
        (_N.READY, _NI.DIGEST_DIFFERS): (_NA.RECONCILE, _N.RECONCILING),
        (_N.RECONCILING, _NI.DIGEST_SAME): (_NA.NOTHING, _N.RECONCILING),
        (_N.RECONCILING, _NI.DIGEST_DIFFERS): (_NA.NOTHING, _N.RECONCILING),
        (_N.RECONCILING, _NI.NODE_PARTIAL): (_NA.COLLECT, _N.RECONCILING),
        (_N.RECONCILING, _NI.NODE_MORE): (_NA.DESCEND, _N.RECONCILING),
        (_N.RECONCILING, _NI.NODE_LAST): (_NA.DESCEND_LAST, _N.READY),
        **{(s, _NI.NODE_LATE): (_NA.NOTHING, s) for s in _ANY},
        **{(s, _NI.AHEAD): (_NA.HOLD, s) for s in _ANY},
        **{(s, _NI.AHEAD_APPLYING): (_NA.HOLD_BEHIND, s) for s in _ANY},
        **{(s, _NI.SLICE_DUE): (_NA.APPLY_SLICE, s) for s in _ANY},
        **{(s, _NI.STALE): (_NA.DROP, s) for s in _ANY},
        (_N.RECONCILING, _NI.ERROR_MORE): (_NA.END_REQUEST, _N.RECONCILING),
        (_N.RECONCILING, _NI.ERROR_LAST): (_NA.END_LAST_REQUEST, _N.READY),
        **{(s, _NI.ACK_DUE): (_NA.SEND_ACK, s) for s in _ANY},
        (_N.AWAITING_TABLE, _NI.REORDER_DUE): (_NA.SKIP, _N.AWAITING_TABLE),
        (_N.READY, _NI.REORDER_DUE): (_NA.SKIP_AND_RECONCILE, _N.RECONCILING),
        (_N.RECONCILING, _NI.REORDER_DUE): (_NA.SKIP_AND_RECONCILE, _N.RECONCILING),
        (_N.RECONCILING, _NI.REQUEST_DUE): (_NA.ABANDON, _N.READY),
        **{(s, _NI.PURGED): (_NA.FORGET, s) for s in _ANY},
    }

    def __init__(self, outbox: Outbox, table: SyncTable, link: SyncLink,
                 txids: TransactionIds, verifier: RecordVerifier, *,
                 ack_delay: float = timer("ACK_DELAY"),
                 reorder_timeout: float = timer("REORDER_TIMEOUT"),
                 request_timeout: float = timer("REQUEST_TIMEOUT"),
                 slice_clock: Callable[[], float] | None = None,
                 learn_slice: float = limit("LEARN_SLICE"),
                 learn_budget: Callable[[float], float] | None = None) -> None:
        super().__init__(outbox)
        self.table = table
        self.link = link
        self._txids = txids
        self.verifier = verifier
        self.ack_delay = ack_delay
        self.reorder_timeout = reorder_timeout
        self.request_timeout = request_timeout
        #: The time left for learning in the caller's current step or turn, given its
        #: ``now`` (seconds; shared with the gateway's other sessions, and in a gateway
        #: process with its event loop's other work: one budget per loop); by default
        #: ``learn_slice`` of ``slice_clock`` per step for this session alone (None:
        #: an UPDATE is applied in one slice).
        self.learn_budget = learning_budget(learn_budget, slice_clock, learn_slice)
        #: What learning one checked record costs (seconds; the first slice assumes a
        #: fifth of a millisecond, several times what it is): :meth:`_measured`.
        self._learn_cost = 0.0002
        #: What the peer advertised on this session (refused records included).
        self.tree = DigestTree()
        #: The records routed through the peer when the session began (a restart
        #: loaded them) that it has not advertised on this session yet: stale once
        #: its table has ended (SWEEP), so that costs what is stale, not the table.
        #: Taken from the routing table a shard at a time, one in each slice (no step
        #: copies them all), the rest at the sweep.
        self._unconfirmed: set[bytes] = set()
        self._to_confirm: Iterator[list[bytes]] | None = table.route_chunks_via(
            link.gateway_id)
        self.expected = 0
        self._early: dict[int, Update | Digest] = {}
        self._unacked = 0
        self._ack_at: float | None = None
        self._reorder_at: float | None = None
        self._request_at: float | None = None
        #: Outstanding requests: DIGEST_REQUEST by node, SYNC_REQUEST by transaction id.
        self._nodes: dict[DigestNode, int] = {}
        self._records: dict[int, tuple[bytes, ...]] = {}
        self._runs: tuple[DigestNode, DigestSummary, list[VersionedId]] | None = None
        self._applying: _Applying | None = None
        self._slice_at: float | None = None
        #: ADVERTISEs not checked because learning them would change nothing: the same
        #: signed record, version and path this session's peer advertised before and
        #: the table holds through it, or one that passed earlier in the same slice.
        self.unchanged = 0

    # --- inputs -----------------------------------------------------------------------------
    def receive(self, msg: Message, now: float) -> None:
        """UPDATE, DIGEST, or ERROR answering one of our requests."""
        inp = self.classify(msg)
        if not self.rows_for(inp.KIND):
            raise self.unexpected(msg)
        self.run(inp, now)

    def classify(self, msg: Message) -> InEvent:
        if isinstance(msg, Error):
            if msg.transaction_id in self._records \
                    or msg.transaction_id in self._nodes.values():
                if self._outstanding == 1:
                    return LastAnswerError(msg.transaction_id)
                return AnswerError(msg.transaction_id)
            return Stale()
        if not isinstance(msg, Update | Digest):
            raise self.unexpected(msg)
        d = ahead(msg.sequence, self.expected)
        if self._applying is not None:  # it holds sequence ``expected``
            return AheadApplying(msg) if d > 0 and len(self._early) < 4 * SYNC_WINDOW \
                else Stale()
        if d > 0:
            return Ahead(msg)
        if d < 0:
            return Stale()
        if isinstance(msg, Update):
            asked = self._records.get(msg.transaction_id)
            if asked is None:
                return UpdateNext(msg)
            got = {ad.record.record.agent_id for ad in msg.advertise}
            rest = tuple(a for a in asked if a not in got)
            if msg.advertise and rest:
                return AnswerMore(msg, rest)
            if self._outstanding == 1:
                return AnswerLast(msg)
            return AnswerMore(msg, ())
        if msg.node is None:
            return RootSame() if self.tree.summary() == msg.summary else RootDiffers()
        return self._compare(msg)

    @property
    def _outstanding(self) -> int:
        return len(self._nodes) + len(self._records)

    def _compare(self, d: Digest) -> NodeDiff | NodePartial | NodeLate:
        """A node's answer against our tree (pure)."""
        node = d.node
        assert node is not None
        if node not in self._nodes:
            return NodeLate()
        collected: list[VersionedId] = []
        if self._runs is not None and self._runs[:2] == (node, d.summary):
            collected = list(self._runs[2])
        for run in d.entries:
            collected.extend(run)
        if d.children is None and len(collected) < d.summary.count:
            return NodePartial(d)
        children: tuple[DigestNode, ...] = ()
        wanted: list[bytes] = []
        omitted: list[VersionedId] = []
        if d.children is not None:
            if node.level < DIGEST_LEAF_LEVEL and len(d.children) == len(children_of(node)):
                children = tuple(c for c, s in zip(children_of(node), d.children,
                                                   strict=True)
                                 if self.tree.summary(c) != s)
        else:
            listed = {e.agent_id: e.version for e in collected
                      if leaf_of(e.agent_id) in leaves_under(node)}
            wanted = [a for a, v in listed.items() if self.tree.get(a) != v]
            omitted = [e for e in self.tree.entries(node) if e.agent_id not in listed]
        kind = NodeDiff if children or wanted or self._outstanding > 1 else NodeDiffLast
        return kind(node, children, tuple(wanted), tuple(omitted))

    def get_timer(self) -> float | None:
        return earliest(self._ack_at, self._reorder_at, self._request_at, self._slice_at)

    def due(self, now: float) -> Iterator[AckDue | ReorderDue | RequestDue | SliceDue]:
        """The timer inputs due at ``now``."""
        if self._slice_at is not None and now >= self._slice_at:
            yield SliceDue()
        if self._request_at is not None and now >= self._request_at:
            yield RequestDue()
        if self._reorder_at is not None and now >= self._reorder_at:
            yield ReorderDue()
        if self._ack_at is not None and now >= self._ack_at:
            yield AckDue()

    def next_held(self) -> Update | Digest | None:
        """A held message that is now next in sequence (to feed again), if any."""
        return None if self._applying is not None else self._early.get(self.expected)

    # --- helpers ----------------------------------------------------------------------------
    def _consume(self, now: float) -> None:
        """One more sequenced message applied: acknowledge now or soon."""
        self._early.pop(self.expected, None)
        self.expected = (self.expected + 1) % SEQUENCE_SPACE
        if not self._early:
            self._reorder_at = None
        elif self._reorder_at is None and self.expected not in self._early:
            self._reorder_at = now + self.reorder_timeout
        self._unacked += 1
        if self._unacked >= SYNC_WINDOW // 2:
            self._send_ack(now, AckDue())
        elif self._ack_at is None:
            self._ack_at = now + self.ack_delay

    def _ask_node(self, node: DigestNode, now: float) -> None:
        txid = self._txids()
        self._nodes[node] = txid
        self._request_at = now + self.request_timeout
        self.link.send(DigestRequest(transaction_id=txid, node=node), now)

    def _ask_records(self, ids: Sequence[bytes], now: float) -> None:
        per = ids_per_request(self.link.pdu_limit)
        for i in range(0, len(ids), per):
            txid = self._txids()
            run = tuple(ids[i:i + per])
            self._records[txid] = run
            self._request_at = now + self.request_timeout
            self.link.send(SyncRequest(transaction_id=txid, agent_ids=(run,)), now)

    def _slice(self, now: float) -> None:
        """Check and learn the next ADVERTISEs of the UPDATE being applied, at least one
        and until the learning budget is spent (learning included, as last measured);
        once all are done, its WITHDRAWs and PURGEs.  An ADVERTISE that would change
        nothing is not checked again (:attr:`unchanged`): a sender MUST NOT repeat one
        (Section 6.5), and checking each copy would let a peer spend the gateway's CPU."""
        job = self._applying
        assert job is not None
        peer = self.link.gateway_id
        ads = job.update.advertise
        left = self.learn_budget
        if left is not None:
            left(now)  # a step's budget starts before its first record
        if self._to_confirm is not None:
            taken = next(self._to_confirm, None)
            if taken is None:
                self._to_confirm = None
            else:
                self._unconfirmed.update(self._unadvertised(taken))
        good: list[Advertisement] = []
        passed: dict[bytes, tuple[int, tuple[bytes, ...], bytes]] = {}
        i = job.done
        while i < len(ads) and (left is None or i == job.done  # at least one a slice
                                or left(now) > len(good) * self._learn_cost):
            ad = ads[i]
            i += 1
            aid = ad.record.record.agent_id
            if self.table.purge_held(ad, peer, now):
                # Not mirrored: a later DIGEST differs and asks for it again, once the
                # hold has ended (Section 6.5).
                self.tree.discard(aid)
            else:
                told = self.tree.get(aid)
                self.tree.put(aid, ad.version)
                self._unconfirmed.discard(aid)
                key = (ad.version, ad.path, ad.record.encode())
                # the table is compared only while this slice has passed nothing for
                # the record: learned in order, the last of its ADVERTISEs decides
                if aid in passed:
                    unchanged = key == passed[aid]
                else:
                    unchanged = told == ad.version and self.table.holds(ad, peer)
                if unchanged:
                    self.unchanged += 1
                    continue
                refused = self.verifier(self.link.handle, ad.record, now)
                if refused is None:
                    good.append(ad)
                    passed[aid] = key
                else:
                    self.outbox.emit(RecordRefused(self.link.handle, aid, refused.code,
                                                   refused.diagnostic))
        job.done = i
        if good:
            before = None if left is None else left(now)
            self._report(self.table.learn_many(good, peer, now))
            if left is not None and before is not None:
                self._measured((before - left(now)) / len(good), len(good))
        if i < len(ads):
            self._reorder_at = None  # nothing is missing before what is held now
            self._slice_at = now
            return
        self._applying = self._slice_at = None
        up = job.update
        self._unmirror((*up.withdraw, *up.purge))
        self._report(merge(self.table.withdraw_many(up.withdraw, peer),
                           self.table.purge_many(up.purge, now)))
        self._consume(now)

    def _unadvertised(self, agent_ids: Iterable[bytes]) -> Iterator[bytes]:
        """Those of ``agent_ids`` the peer has not advertised on this session."""
        tree = self.tree
        return (a for a in agent_ids if a not in tree)

    def _measured(self, cost: float, n: int) -> None:
        """A slice learned ``n`` records at ``cost`` each.  The estimate that sizes the
        next slices rises to a higher cost at once and falls by a quarter of the
        difference per slice: the cost of equal slices varies by up to 40% (commits,
        collections), and sized by the last one alone a slice took up to twice its
        time.  A slice of fewer than 4 records measures its commit more than its
        records (one learned at the end of a turn's slice): not counted."""
        if n >= 4:
            self._learn_cost = max(cost, self._learn_cost - (self._learn_cost - cost) / 4)

    def _unmirror(self, items: Sequence[VersionedId]) -> None:
        """Stop mirroring the records of these versions or older."""
        for item in items:
            told = self.tree.get(item.agent_id)
            if told is not None and told <= item.version:
                self.tree.discard(item.agent_id)

    def _report(self, ch: TableChanges) -> None:
        if ch:
            self.outbox.emit(TableChanged(self.link.handle, ch.advertised, ch.withdrawn,
                                          ch.purged))

    def _end_requests(self) -> None:
        self._nodes.clear()
        self._records.clear()
        self._runs = None
        self._request_at = None

    # --- actions ----------------------------------------------------------------------------
    def _apply(self, now: float, inp: UpdateNext) -> None:
        self._applying = _Applying(inp.update)
        if self.learn_budget is not None and self.learn_budget(now) <= 0:
            # the step's budget is spent (an UPDATE held behind the one that spent it,
            # or other work): its first slice is the next step's
            self._reorder_at = None
            self._slice_at = now
            return
        self._slice(now)

    def _apply_slice(self, now: float, inp: SliceDue) -> None:
        self._slice(now)

    def _apply_answer(self, now: float, inp: AnswerMore) -> None:
        self._records.pop(inp.update.transaction_id, None)
        self._apply(now, UpdateNext(inp.update))
        if inp.ask_again:
            self._ask_records(inp.ask_again, now)

    def _apply_last_answer(self, now: float, inp: AnswerLast) -> None:
        self._apply(now, UpdateNext(inp.update))
        self._end_requests()

    def _sweep(self, now: float, inp: RootSame | RootDiffers) -> None:
        peer = self.link.gateway_id
        unconfirmed = list(self._unadvertised(self._unconfirmed))
        for taken in self._to_confirm or ():
            unconfirmed += self._unadvertised(taken)
        stale = [VersionedId(a, 2**64 - 1) for a in unconfirmed]
        self._unconfirmed, self._to_confirm = set(), None
        if stale:
            self._report(self.table.withdraw_many(stale, peer))
        self._consume(now)

    def _sweep_and_reconcile(self, now: float, inp: RootDiffers) -> None:
        self._sweep(now, inp)
        self._ask_node(ROOT, now)

    def _nothing(self, now: float, inp: object) -> None:
        self._consume(now)

    def _reconcile(self, now: float, inp: RootDiffers) -> None:
        self._ask_node(ROOT, now)
        self._consume(now)

    def _collect(self, now: float, inp: NodePartial) -> None:
        d = inp.digest
        assert d.node is not None
        if self._runs is None or self._runs[:2] != (d.node, d.summary):
            self._runs = (d.node, d.summary, [])
        for run in d.entries:
            self._runs[2].extend(run)
        self._consume(now)

    def _descend(self, now: float, inp: NodeDiff) -> None:
        self._nodes.pop(inp.node, None)
        self._runs = None
        if inp.omitted:
            for item in inp.omitted:
                self.tree.discard(item.agent_id)
            self._report(self.table.withdraw_many(inp.omitted, self.link.gateway_id))
        for child in inp.children:
            self._ask_node(child, now)
        if inp.wanted:
            self._ask_records(inp.wanted, now)
        self._consume(now)

    def _descend_last(self, now: float, inp: NodeDiffLast) -> None:
        self._descend(now, inp)
        self._end_requests()

    def _hold(self, now: float, inp: Ahead) -> None:
        if len(self._early) >= 4 * SYNC_WINDOW:  # a gap that cannot be waited for
            self._reorder_at = now
        self._early[inp.msg.sequence] = inp.msg
        if self._reorder_at is None:
            self._reorder_at = now + self.reorder_timeout

    def _hold_behind(self, now: float, inp: AheadApplying) -> None:
        self._early[inp.msg.sequence] = inp.msg

    def _drop(self, now: float, inp: Stale) -> None:
        """Already applied (a duplicate), or too late to matter."""

    def _end_request(self, now: float, inp: AnswerError) -> None:
        self._records.pop(inp.transaction_id, None)
        self._nodes = {n: t for n, t in self._nodes.items() if t != inp.transaction_id}

    def _end_last_request(self, now: float, inp: LastAnswerError) -> None:
        self._end_requests()

    def _send_ack(self, now: float, inp: AckDue) -> None:
        self._unacked = 0
        self._ack_at = None
        self.link.send(SyncAck(transaction_id=self._txids(), sequence=self.expected), now)

    def _skip(self, now: float, inp: ReorderDue) -> None:
        self._reorder_at = None
        if self._early:
            self.expected = min(self._early, key=lambda s: ahead(s, self.expected))

    def _skip_and_reconcile(self, now: float, inp: ReorderDue) -> None:
        self._skip(now, inp)
        self._ask_node(ROOT, now)

    def _abandon(self, now: float, inp: RequestDue) -> None:
        self._end_requests()

    def _forget(self, now: float, inp: Purged) -> None:
        self._unmirror(inp.items)


