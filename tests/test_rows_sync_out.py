"""Every row of the sending half of gateway sync, one test each (draft-dmsc-protocol-00
Sections 6.5, 6.6; :mod:`row_cases`): driven through the session's sync
(:class:`~dmscproto.protocol.sync.PeerSync`) with PDUs through the codec."""

from __future__ import annotations

from pathlib import Path

import pytest
from row_cases import ME, RowCases, SyncRig, row_tests, sync_rig

from dmscproto.codec.changes import TableChanges
from dmscproto.codec.digest import ROOT, summarize
from dmscproto.codec.messages import (
    Digest,
    DigestRequest,
    Error,
    Message,
    SyncAck,
    SyncRequest,
    Update,
)
from dmscproto.codec.registry import (
    DIGEST_LEAF_LEVEL,
    SYNC_WINDOW,
    ErrorCode,
    MessageType,
    timer,
)
from dmscproto.codec.wire import DigestNode, VersionedId
from dmscproto.protocol.machine import ProtocolError
from dmscproto.protocol.sync_out import SyncOut
from dmscproto.protocol.sync_out_inputs import OutInput, OutState
from dmscproto.testing.harness import T0, make_record

Out, OI = OutState, OutInput
CASES = RowCases(SyncOut)
row = CASES.row
T1 = T0 + 1
DIGEST_INTERVAL = timer("DIGEST_INTERVAL")
MIN_INTERVAL = timer("MIN_ADVERTISEMENT_INTERVAL")
ALICE, CAROL, ERIN = (make_record(n, name, "a.example")
                      for n, name in ((30, "alice"), (32, "carol"), (34, "erin")))
A, C, E = (r.record.agent_id for r in (ALICE, CAROL, ERIN))
SENDING = (Out.BULK, Out.READY)


def advertised(msg: Message) -> list[tuple[bytes, int]]:
    """The (agent id, version) of an UPDATE's ADVERTISEs, each with our path."""
    assert isinstance(msg, Update)
    assert all(ad.path == (ME,) for ad in msg.advertise)
    return [(ad.record.record.agent_id, ad.version) for ad in msg.advertise]


def started(state: OutState, tmp_path: Path) -> SyncRig:
    """Sync started at T0 on a gateway holding alice.  READY: the table (one UPDATE) and
    the DIGEST closing it sent.  BULK: the window was full (SYNC_WINDOW messages sent
    before and unacknowledged), so the table waits."""
    r = sync_rig(tmp_path, local=(ALICE,))
    if state is Out.BULK:
        for _ in range(SYNC_WINDOW):
            r.sync.out.take_sequence()
    r.sync.start(T0)
    msgs = r.sent()
    assert r.sync.out.state is state
    assert msgs == ([] if state is Out.BULK else [msgs[0], Digest(
        transaction_id=msgs[1].transaction_id, sequence=1,
        summary=summarize([VersionedId(A, 1)]))])
    return r


def _next_seq(state: OutState) -> int:
    return SYNC_WINDOW if state is Out.BULK else 2


@row(Out.NEW, OI.START)
def _begin(state: OutState, tmp_path: Path) -> None:
    """The table snapshot, built a slice (one record) at a time."""
    r = sync_rig(tmp_path, local=(ALICE, CAROL), sliced=True)
    r.sync.start(T0)
    assert r.sent() == [] and r.sync.out.state is Out.BULK
    assert len(r.sync.out.tree) == 1
    assert r.sync.get_timer() == T0  # the next slice, at once (after other work)


@row(Out.BULK, OI.TABLE_SENT)
def _end_table(state: OutState, tmp_path: Path) -> None:
    r = sync_rig(tmp_path, local=(ALICE,))
    r.sync.start(T0)
    up, digest = r.sent()
    assert advertised(up) == [(A, 1)] and up.sequence == 0
    assert isinstance(digest, Digest) and digest.sequence == 1 and digest.node is None
    assert digest.summary == summarize([VersionedId(A, 1)])
    assert r.sync.out.state is Out.READY and r.sync.get_timer() == T0 + DIGEST_INTERVAL


@row(Out.READY, OI.DIGEST_DUE)
def _send_digest(state: OutState, tmp_path: Path) -> None:
    r = started(state, tmp_path)
    r.sync.handle_timer(T0 + DIGEST_INTERVAL)
    [digest] = r.sent()
    assert isinstance(digest, Digest) and digest.sequence == 2
    assert digest.summary == summarize([VersionedId(A, 1)])
    assert r.sync.out.state is Out.READY and r.sync.get_timer() == T0 + 2 * DIGEST_INTERVAL


@row(SENDING, OI.CHANGED)
def _queue(state: OutState, tmp_path: Path) -> None:
    """A change goes at once in READY; while the window is full it waits, and goes
    before the rest of the table once the window opens."""
    r = started(state, tmp_path)
    assert r.core.register(CAROL, 600, T1).status is ErrorCode.SUCCESS
    r.sync.announce(TableChanges(advertised=(C,)), T1)
    assert r.sync.out.state is state
    if state is Out.READY:
        [up] = r.sent()
        assert advertised(up) == [(C, 1)] and up.sequence == 2
        assert r.core.deregister(A, T1) is ErrorCode.SUCCESS  # and what is withdrawn
        r.sync.announce(TableChanges(withdrawn=(VersionedId(A, 1),)), T1)
        [up] = r.sent()
        assert isinstance(up, Update) and up.withdraw == (VersionedId(A, 1),)
        return
    assert r.sent() == []
    r.feed(SyncAck(sequence=SYNC_WINDOW), T1)
    up, _digest = r.sent()
    assert advertised(up) == [(C, 1), (A, 1)]


@row(SENDING, OI.ACK)
def _open_window(state: OutState, tmp_path: Path) -> None:
    r = started(state, tmp_path)
    r.feed(SyncAck(sequence=_next_seq(state)), T1)
    if state is Out.READY:
        assert r.sent() == [] and r.sync.out.state is Out.READY
        assert r.sync.out.in_flight == 0
        return
    up, digest = r.sent()  # the table, then (its last UPDATE sent) the DIGEST
    assert advertised(up) == [(A, 1)] and up.sequence == SYNC_WINDOW
    assert isinstance(digest, Digest) and r.sync.out.state is Out.READY
    assert r.sync.out.in_flight == 2


@row(SENDING, OI.ACK_INVALID)
def _refuse_ack(state: OutState, tmp_path: Path) -> None:
    """A SYNC_ACK beyond what was sent: the session closes (it answers NOTIFY)."""
    r = started(state, tmp_path)
    with pytest.raises(ProtocolError) as err:
        r.feed(SyncAck(sequence=_next_seq(state) + 1), T1)
    assert (err.value.code, err.value.message_type) == (ErrorCode.INVALID_TLV_VALUE,
                                                        MessageType.SYNC_ACK)
    assert r.sent() == [] and r.sync.out.state is state
    assert r.sync.out.in_flight == _next_seq(state)


@row(SENDING, OI.SYNC_REQUEST)
def _answer_records(state: OutState, tmp_path: Path) -> None:
    """Answered on the request's transaction, in sequence, with the records it has."""
    r = started(state, tmp_path)
    r.feed(SyncRequest(transaction_id=77, agent_ids=(tuple(sorted((A, bytes(16)))),)), T1)
    [up] = r.sent()
    assert advertised(up) == [(A, 1)]
    assert (up.transaction_id, up.sequence) == (77, _next_seq(state))
    assert r.sync.out.state is state


@row(SENDING, OI.DIGEST_REQUEST)
def _answer_node(state: OutState, tmp_path: Path) -> None:
    """Answered from what was sent: nothing yet while the table waits."""
    r = started(state, tmp_path)
    r.feed(DigestRequest(transaction_id=78, node=ROOT), T1)
    entries = [VersionedId(A, 1)] if state is Out.READY else []
    assert r.sent() == [Digest(transaction_id=78, sequence=_next_seq(state), node=ROOT,
                               summary=summarize(entries),
                               entries=(tuple(entries),) if entries else ())]
    assert r.sync.out.state is state


@row(SENDING, OI.DIGEST_REQUEST_INVALID)
def _refuse_node(state: OutState, tmp_path: Path) -> None:
    r = started(state, tmp_path)
    r.feed(DigestRequest(transaction_id=79, node=DigestNode(DIGEST_LEAF_LEVEL + 1, 0)), T1)
    [err] = r.sent()
    assert isinstance(err, Error) and (err.transaction_id, err.status, err.offending_type) \
        == (79, ErrorCode.INVALID_TLV_VALUE, int(MessageType.DIGEST_REQUEST))
    assert r.sync.out.in_flight == _next_seq(state) and r.sync.out.state is state


@row(Out.READY, OI.ADVERTISE_DUE)
def _send_due(state: OutState, tmp_path: Path) -> None:
    """A record changed within MIN_ADVERTISEMENT_INTERVAL of its ADVERTISE waits."""
    r = started(state, tmp_path)
    assert r.core.register(make_record(30, "alice", "a.example", version=2), 600,
                           T1).status is ErrorCode.SUCCESS
    r.sync.announce(TableChanges(advertised=(A,)), T1)
    assert r.sent() == [] and r.sync.get_timer() == T0 + MIN_INTERVAL
    r.sync.handle_timer(T0 + MIN_INTERVAL)
    [up] = r.sent()
    assert advertised(up) == [(A, 2)] and r.sync.out.state is Out.READY


@row(Out.BULK, OI.ADVERTISE_DUE)
def _send_due_in_bulk(state: OutState, tmp_path: Path) -> None:
    """The same while the table is being sent in slices (a record a slice, from the
    highest Agent ID down): the middle record's first version went in the answer to a
    SYNC_REQUEST, and its second, made at once, waits MIN_ADVERTISEMENT_INTERVAL while
    the table goes on; then the table's UPDATE (its last slice, without it) and its
    second version go, then the DIGEST."""
    r = sync_rig(tmp_path, local=(ALICE, CAROL, ERIN), sliced=True)
    low, middle, high = sorted((A, C, E))
    r.sync.start(T0)
    assert [e.agent_id for e in r.sync.out.tree.entries()] == [high]  # being filled
    r.feed(SyncRequest(transaction_id=77, agent_ids=((middle,),)), T0)
    r.sync.handle_timer(T0)  # the slice timer: the answer
    [answer] = r.sent()
    assert advertised(answer) == [(middle, 1)] and answer.transaction_id == 77
    n, name = {A: (30, "alice"), C: (32, "carol"), E: (34, "erin")}[middle]
    assert r.core.register(make_record(n, name, "a.example", version=2), 600,
                           T1).status is ErrorCode.SUCCESS
    r.sync.announce(TableChanges(advertised=(middle,)), T1)  # left to the slice timer
    r.sync.handle_timer(T1)  # the slice timer: the change waits
    r.sync.handle_timer(T1)  # and the table's slice that comes to it
    assert r.sent() == [] and r.sync.out.state is Out.BULK
    r.sync.handle_timer(T0 + MIN_INTERVAL)  # the last slice of the table, then this
    table, again, digest = r.sent()
    assert sorted(advertised(table)) == sorted([(high, 1), (low, 1)])
    assert advertised(again) == [(middle, 2)] and again.sequence == 2
    assert isinstance(digest, Digest) and r.sync.out.state is Out.READY


@row(SENDING, OI.SLICE_DUE)
def _send_slice(state: OutState, tmp_path: Path) -> None:
    """An UPDATE is filled a record a slice: the table (BULK), or two changes (READY)."""
    r = sync_rig(tmp_path, local=(ALICE, CAROL) if state is Out.BULK else (ALICE,),
                 sliced=True)
    r.sync.start(T0)
    at = T0
    if state is Out.READY:
        assert [type(m) for m in r.sent()] == [Update, Digest]
        for signed in (CAROL, ERIN):
            assert r.core.register(signed, 600, T1).status is ErrorCode.SUCCESS
        r.sync.announce(TableChanges(advertised=(C, E)), T1)
        at = T1
    assert r.sent() == [] and r.sync.out.state is state
    assert r.sync.get_timer() == at
    r.sync.handle_timer(at)
    up, *rest = r.sent()
    expect = {(A, 1), (C, 1)} if state is Out.BULK else {(C, 1), (E, 1)}
    assert set(advertised(up)) == expect
    assert [type(m) for m in rest] == ([Digest] if state is Out.BULK else [])
    assert r.sync.out.state is Out.READY


test_row, test_every_row_has_a_case = row_tests(CASES)
