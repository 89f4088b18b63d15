"""Every row of the receiving half of gateway sync, one test each (draft-dmsc-protocol-00
Sections 6.5, 6.6; :mod:`row_cases`): driven through the session's sync
(:class:`~dmscproto.protocol.sync.PeerSync`) with PDUs through the codec, learning
records signed by their agents into a real registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from row_cases import PEER, RowCases, SyncRig, row_tests, sync_rig

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.digest import ROOT, DigestTree, summarize
from dmscproto.codec.messages import (
    Digest,
    DigestRequest,
    Error,
    Message,
    SyncAck,
    SyncRequest,
    Update,
)
from dmscproto.codec.registry import ErrorCode, MessageType, timer
from dmscproto.codec.wire import Advertisement, DigestNode, VersionedId
from dmscproto.protocol.events import TableChanged
from dmscproto.protocol.sync_in import SyncIn
from dmscproto.protocol.sync_in_inputs import InInput, InState
from dmscproto.testing.harness import T0, make_record

N, NI = InState, InInput
ANY = tuple(InState)
CASES = RowCases(SyncIn)
row = CASES.row
T1 = T0 + 1
ACK_DELAY, REORDER = timer("ACK_DELAY"), timer("REORDER_TIMEOUT")
#: Records the peer advertises (its domain's agents).
BOB, DAVE, FRANK, GINA, HANK, IVY = (make_record(n, name, "b.example") for n, name in (
    (31, "bob"), (33, "dave"), (35, "frank"), (37, "gina"), (39, "hank"), (41, "ivy")))
B, D = BOB.record.agent_id, DAVE.record.agent_id
#: The peer's table as its DIGESTs describe it: bob and dave.
ENTRIES = tuple(sorted((VersionedId(B, 1), VersionedId(D, 1)), key=lambda e: e.agent_id))
THEIRS = summarize(ENTRIES)
NOTHING = summarize(())


def ad(signed: SignedRecord) -> Advertisement:
    return Advertisement(1, (PEER,), signed)


def aid(signed: SignedRecord) -> bytes:
    return signed.record.agent_id


@dataclass
class At:
    """Sync receiving in a state: the next sequence and the DIGEST_REQUEST for the root
    it has outstanding (RECONCILING)."""

    r: SyncRig
    seq: int
    ask: int = 0

    @property
    def inc(self) -> SyncIn:
        return self.r.sync.inc

    def asking(self) -> float | None:
        """The request timer of the root's DIGEST_REQUEST, if one is outstanding."""
        return T0 + timer("REQUEST_TIMEOUT") if self.ask else None

    def timers_after_ack(self) -> float | None:
        """The receiving half's timer once the acknowledgement due is sent."""
        self.r.sync.handle_timer(T1 + ACK_DELAY)
        assert [type(m) for m in self.r.sent()] == [SyncAck]
        return self.inc.get_timer()

    def asks(self) -> list[Message]:
        """The requests sent since last asked (acknowledgements left out)."""
        return [m for m in self.r.sent() if not isinstance(m, SyncAck)]


def reach(state: InState, tmp_path: Path, *, learned: tuple[SignedRecord, ...] = (),
          sliced: bool = False) -> At:
    """Sync started at T0 and brought to ``state`` by the peer's table: AWAITING_TABLE
    (nothing yet), READY (an empty table), RECONCILING (a table unlike ours: the root
    asked for); anything applied is acknowledged by T1."""
    r = sync_rig(tmp_path, learned=learned, sliced=sliced)
    r.sync.start(T0)
    r.sent()
    at = At(r, 0)
    if state is not N.AWAITING_TABLE:
        r.feed(Digest(sequence=0, summary=THEIRS if state is N.RECONCILING else NOTHING), T0)
        r.sync.handle_timer(T0 + ACK_DELAY)
        sent = r.sent()
        assert isinstance(sent[-1], SyncAck) and sent[-1].sequence == 1
        if state is N.RECONCILING:
            [ask, _ack] = sent
            assert isinstance(ask, DigestRequest) and ask.node == ROOT
            at.ask = ask.transaction_id
        at.seq = 1
    r.events()
    assert at.inc.state is state
    return at


def learn(at: At, *signed: SignedRecord, seq: int | None = None) -> None:
    """The peer's next UPDATE (or that of ``seq``) advertising ``signed``, at T1."""
    at.r.feed(Update(sequence=at.seq if seq is None else seq,
                     advertise=tuple(ad(s) for s in signed)), T1)


# --- UPDATE --------------------------------------------------------------------------------
@row(ANY, NI.UPDATE)
def _apply(state: InState, tmp_path: Path) -> None:
    at = reach(state, tmp_path)
    learn(at, BOB)
    assert B in at.r.core and at.inc.tree.get(B) == 1
    assert at.r.events() == [TableChanged("peer", (B,), ())]
    assert at.inc.expected == at.seq + 1 and at.inc.state is state
    assert at.r.sync.get_timer() == T1 + ACK_DELAY
    assert at.timers_after_ack() == at.asking()  # a request outstanding still is


@row(ANY, NI.ACK_DUE)
def _send_ack(state: InState, tmp_path: Path) -> None:
    at = reach(state, tmp_path)
    learn(at, BOB)
    at.r.sync.handle_timer(T1 + ACK_DELAY)
    [ack] = at.r.sent()
    assert isinstance(ack, SyncAck) and ack.sequence == at.seq + 1
    assert at.inc.state is state and at.r.sync.get_timer() != T1 + ACK_DELAY


@row(ANY, NI.STALE)
def _drop(state: InState, tmp_path: Path) -> None:
    """A duplicate UPDATE, an ERROR answering nothing: dropped."""
    at = reach(state, tmp_path)
    learn(at, BOB)
    at.r.events()
    learn(at, BOB)
    at.r.feed(Error(transaction_id=4242, status=ErrorCode.RATE_LIMITED,
                    offending_type=int(MessageType.SYNC_REQUEST)), T1)
    assert at.r.events() == [] and at.inc.expected == at.seq + 1
    assert at.r.sent() == [] and at.inc.state is state
    assert at.timers_after_ack() == at.asking()


@row(ANY, NI.AHEAD)
def _hold(state: InState, tmp_path: Path) -> None:
    """An UPDATE ahead of sequence waits for the one before it."""
    at = reach(state, tmp_path)
    learn(at, BOB, seq=at.seq + 1)
    assert B not in at.r.core and at.inc.expected == at.seq and at.inc.state is state
    assert at.inc.get_timer() == T1 + REORDER
    learn(at, DAVE)
    assert {B, D} <= set(at.r.core.agent_ids())
    assert at.inc.expected == at.seq + 2 and at.inc.state is state


@row(ANY, NI.REORDER_DUE)
def _skip(state: InState, tmp_path: Path) -> None:
    """The gap (two messages) before a held UPDATE is skipped after REORDER_TIMEOUT; a
    table that has ended is then reconciled (the root asked for)."""
    at = reach(state, tmp_path)
    learn(at, BOB, seq=at.seq + 2)
    at.r.sync.handle_timer(T1 + REORDER)
    assert B in at.r.core and at.inc.expected == at.seq + 3
    asks = at.asks()
    if state is N.AWAITING_TABLE:
        assert asks == [] and at.inc.state is N.AWAITING_TABLE
    else:
        [ask] = asks
        assert isinstance(ask, DigestRequest) and ask.node == ROOT
        assert at.inc.state is N.RECONCILING


@row(ANY, NI.AHEAD_APPLYING)
@row(ANY, NI.SLICE_DUE)
def _apply_slice(state: InState, tmp_path: Path) -> None:
    """A large UPDATE is applied a slice at a time; the next one waits behind it."""
    at = reach(state, tmp_path, sliced=True)
    five = (BOB, DAVE, FRANK, GINA, HANK)
    learn(at, *five)
    first = len(at.r.core)
    assert 0 < first < 5 and at.r.sync.get_timer() == T1
    learn(at, IVY, seq=at.seq + 1)
    assert aid(IVY) not in at.r.core and at.inc.expected == at.seq
    for _ in range(5):  # a slice takes a record or two
        if at.r.sync.get_timer() != T1:
            break
        at.r.sync.handle_timer(T1)
        assert at.inc.state is state
    assert set(at.r.core.agent_ids()) == {aid(s) for s in (*five, IVY)}
    assert at.inc.expected == at.seq + 2
    assert {type(e) for e in at.r.events()} == {TableChanged}


@row(ANY, NI.PURGED)
def _forget(state: InState, tmp_path: Path) -> None:
    """A record purged here is no longer mirrored (the peer's next DIGEST may differ)."""
    at = reach(state, tmp_path)
    learn(at, BOB)
    changes = at.r.core.purge_many([VersionedId(B, 1)], T1)
    assert changes.purged == (VersionedId(B, 1),)
    at.r.sync.announce(changes, T1)
    assert at.inc.tree.get(B) is None and at.inc.state is state


# --- DIGEST of the root ----------------------------------------------------------------------
def sweep(tmp_path: Path, *, differs: bool) -> None:
    """The table ends: a route through the peer loaded before the session that it did
    not advertise on it goes; a table unlike ours is then reconciled."""
    at = reach(N.AWAITING_TABLE, tmp_path, learned=(BOB,))
    at.r.feed(Digest(sequence=0, summary=THEIRS if differs else NOTHING), T1)
    assert B not in at.r.core
    [changed] = at.r.events()
    assert isinstance(changed, TableChanged)
    assert [w.agent_id for w in changed.withdrawn] == [B]
    asks = at.asks()
    if differs:
        assert [type(m) for m in asks] == [DigestRequest] and at.inc.state is N.RECONCILING
    else:
        assert asks == [] and at.inc.state is N.READY


@row(N.AWAITING_TABLE, NI.DIGEST_SAME)
def _sweep(state: InState, tmp_path: Path) -> None:
    sweep(tmp_path, differs=False)


@row(N.AWAITING_TABLE, NI.DIGEST_DIFFERS)
def _sweep_and_reconcile(state: InState, tmp_path: Path) -> None:
    sweep(tmp_path, differs=True)


@row((N.READY, N.RECONCILING), NI.DIGEST_SAME)
def _nothing(state: InState, tmp_path: Path) -> None:
    """A DIGEST equal to ours (or one while reconciling): acknowledged, nothing asked."""
    at = reach(state, tmp_path)
    at.r.feed(Digest(sequence=1, summary=NOTHING), T1)
    assert at.asks() == [] and at.inc.expected == 2 and at.inc.state is state


@row(N.READY, NI.DIGEST_DIFFERS)
def _reconcile(state: InState, tmp_path: Path) -> None:
    at = reach(state, tmp_path)
    at.r.feed(Digest(sequence=1, summary=THEIRS), T1)
    [ask] = at.asks()
    assert isinstance(ask, DigestRequest) and ask.node == ROOT
    assert at.inc.expected == 2 and at.inc.state is N.RECONCILING


@row(N.RECONCILING, NI.DIGEST_DIFFERS)
def _nothing_while_reconciling(state: InState, tmp_path: Path) -> None:
    """A differing DIGEST while the root is asked for: it asks nothing more."""
    at = reach(state, tmp_path)
    at.r.feed(Digest(sequence=1, summary=THEIRS), T1)
    assert at.asks() == [] and at.inc.expected == 2 and at.inc.state is N.RECONCILING


# --- DIGEST of a node, and the records asked for ----------------------------------------------
def answer_root(at: At, *runs: tuple[VersionedId, ...], seq: int = 1,
                summary: object = THEIRS) -> None:
    at.r.feed(Digest(transaction_id=at.ask, sequence=seq, summary=summary, node=ROOT,
                     entries=runs), T1)


def asked_records(tmp_path: Path) -> tuple[At, SyncRequest]:
    """RECONCILING: the root's entries answered, bob and dave asked for."""
    at = reach(N.RECONCILING, tmp_path)
    answer_root(at, ENTRIES)
    [pull] = at.asks()
    assert isinstance(pull, SyncRequest) and pull.agent_ids == (tuple(e.agent_id
                                                                      for e in ENTRIES),)
    assert at.inc.state is N.RECONCILING
    assert at.timers_after_ack() == T1 + timer("REQUEST_TIMEOUT")  # the records' request
    return at, pull


@row(N.RECONCILING, NI.NODE_MORE)
def _descend(state: InState, tmp_path: Path) -> None:
    asked_records(tmp_path)


@row(N.RECONCILING, NI.NODE_PARTIAL)
def _collect(state: InState, tmp_path: Path) -> None:
    """A node's entries in two runs: compared once both are in."""
    at = reach(state, tmp_path)
    answer_root(at, ENTRIES[:1])
    assert at.asks() == [] and at.inc.state is N.RECONCILING
    at.r.feed(Digest(sequence=2, summary=THEIRS, node=ROOT, entries=(ENTRIES[1:],)), T1)
    [pull] = at.asks()
    assert isinstance(pull, SyncRequest) and len(pull.agent_ids[0]) == 2


@row(N.RECONCILING, NI.NODE_LAST)
def _descend_last(state: InState, tmp_path: Path) -> None:
    """The root holds nothing the peer advertised: bob, mirrored, is withdrawn and
    nothing is left to ask."""
    at = reach(state, tmp_path)
    learn(at, BOB)
    at.r.events()
    answer_root(at, seq=2, summary=NOTHING)
    assert B not in at.r.core and at.asks() == [] and at.inc.state is N.READY
    assert at.timers_after_ack() is None  # no request timer
    [changed] = at.r.events()
    assert isinstance(changed, TableChanged) and [w.agent_id for w in changed.withdrawn] == [B]


@row(ANY, NI.NODE_LATE)
def _node_late(state: InState, tmp_path: Path) -> None:
    """A node's DIGEST not asked for (or no longer): acknowledged, nothing asked (and
    the table has not ended: bob, routed through the peer before, stays)."""
    at = reach(state, tmp_path, learned=(BOB,) if state is N.AWAITING_TABLE else ())
    at.r.feed(Digest(sequence=at.seq, summary=THEIRS, node=DigestNode(1, 3)), T1)
    assert at.asks() == [] and at.inc.expected == at.seq + 1 and at.inc.state is state
    assert state is not N.AWAITING_TABLE or B in at.r.core


@row(N.RECONCILING, NI.ANSWER_MORE)
def _apply_answer(state: InState, tmp_path: Path) -> None:
    """An answer leaving out dave: bob learned, dave asked for again."""
    at, pull = asked_records(tmp_path)
    at.r.feed(Update(transaction_id=pull.transaction_id, sequence=2, advertise=(ad(BOB),)),
              T1)
    assert B in at.r.core and D not in at.r.core
    [again] = at.asks()
    assert isinstance(again, SyncRequest) and again.agent_ids == ((D,),)
    assert at.inc.state is N.RECONCILING


@row(N.RECONCILING, NI.ANSWER_LAST)
def _apply_last_answer(state: InState, tmp_path: Path) -> None:
    at, pull = asked_records(tmp_path)
    at.r.feed(Update(transaction_id=pull.transaction_id, sequence=2,
                     advertise=(ad(BOB), ad(DAVE))), T1)
    assert {B, D} <= set(at.r.core.agent_ids())
    assert at.asks() == [] and at.inc.state is N.READY
    assert at.timers_after_ack() is None  # no request timer


@row(N.RECONCILING, NI.ERROR_MORE)
@row(N.RECONCILING, NI.ERROR_LAST)
def _end_requests(state: InState, tmp_path: Path) -> None:
    """Two children of the root differ: both asked for; an ERROR ends each request,
    the last one the reconciliation."""
    theirs = DigestTree()
    for first in (0x10, 0x20):  # under children 1 and 2 of the root
        theirs.put(bytes([first]) * 16, 1)
    r = sync_rig(tmp_path)
    r.sync.start(T0)
    r.sent()
    r.feed(Digest(sequence=0, summary=theirs.summary()), T0)
    [root] = [m for m in r.sent() if isinstance(m, DigestRequest)]
    r.feed(Digest(transaction_id=root.transaction_id, sequence=1, summary=theirs.summary(),
                  node=ROOT, children=theirs.children(ROOT)), T0)
    r.sync.handle_timer(T0 + ACK_DELAY)
    asks = [m for m in r.sent() if isinstance(m, DigestRequest)]
    assert [a.node for a in asks] == [DigestNode(1, 1), DigestNode(1, 2)]
    for ask, after in zip(asks, (N.RECONCILING, N.READY), strict=True):
        r.feed(Error(transaction_id=ask.transaction_id, status=ErrorCode.RATE_LIMITED,
                     offending_type=int(MessageType.DIGEST_REQUEST)), T1)
        assert r.sent() == [] and r.sync.inc.state is after and r.sync.inc.expected == 2
    assert r.sync.inc.get_timer() is None  # no request timer


@row(N.RECONCILING, NI.REQUEST_DUE)
def _abandon(state: InState, tmp_path: Path) -> None:
    """The root's answer never comes: the requests are forgotten (the next DIGEST
    decides again); a late answer asks nothing."""
    at = reach(state, tmp_path)
    at.r.sync.handle_timer(T0 + timer("REQUEST_TIMEOUT"))
    assert at.asks() == [] and at.inc.state is N.READY and at.inc.get_timer() is None
    answer_root(at, ENTRIES)
    assert at.asks() == [] and at.inc.state is N.READY


test_row, test_every_row_has_a_case = row_tests(CASES)
