"""No step over the whole table on the sending side (issue 10 item 4; draft-dmsc-protocol-00
Sections 6.1, 6.5.3, 6.9): the bulk table is filled into UPDATEs a slice at a time, the
routes of a closed session are dropped a slice at a time, and a capability summary is
kept on write, never built by a walk over the records; the originator sends its summary
into its own domain only where summaries are exchanged with some peer domain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmscproto.codec.changes import TableChanges
from dmscproto.codec.messages import Digest, Message, Summary, SyncAck, SyncRequest, Update
from dmscproto.codec.registry import ErrorCode, timer
from dmscproto.codec.values import CapabilityRecord, Skill
from dmscproto.codec.wire import VersionedId
from dmscproto.gateway import drops, registry
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.restart import RestartGrace
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.bloom import Bloom
from dmscproto.protocol.machine import Outbox, TransactionIds, slice_of
from dmscproto.protocol.shown import ShownTerms
from dmscproto.protocol.summary import Replication
from dmscproto.protocol.sync import PeerSync, SyncPeer
from dmscproto.protocol.sync_out_inputs import DigestDue, Start
from dmscproto.testing.harness import T0, Network, make_record

PEER = bytes([0x01]) * 16


def sliced() -> Callable[[], float]:
    """A slice clock that advances one second per reading (a slice of 2.5 s looks at a
    record or two)."""
    ticks = iter(range(10**6))
    return lambda: float(next(ticks))


def run_slices(sync: PeerSync, now: float) -> tuple[int, float]:
    """Fire the slice timer while it is due (at once, after other work): how many
    times, and when last."""
    steps = 0
    while (due := sync.get_timer()) is not None and due < now + 10:
        now = due
        sync.handle_timer(now)
        steps += 1
        assert steps < 10_000, "the slice timer never stops being due"
    return steps, now


@pytest.fixture
def core(tmp_path: Path) -> Iterator[GatewayCore]:
    c = GatewayCore(bytes([0xEE]) * 16, "a.example", RegistryStore(tmp_path / "gw.db"))
    for i in range(7):
        c.register(make_record(40 + i, f"agent{i}", "a.example"), 3600, T0)
    yield c
    c.store.close()


def test_bulk_table_filled_in_slices(core: GatewayCore) -> None:
    """Each step fills the UPDATE for one slice; the UPDATE goes when it is full or the
    table is done, and the DIGEST that closes the table after it."""
    msgs: list[Message] = []
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "a.example",
                                             lambda m, _t: msgs.append(m)),
                    TransactionIds(), lambda _h, _s, _t: None, slice_clock=sliced(),
                    work_slice=2.5)
    sync.start(T0)
    assert msgs == [] and sync.get_timer() == T0  # the next slice, at once (after other work)
    steps, _ = run_slices(sync, T0)
    update, digest = msgs  # nothing half-filled went out, nor the closing DIGEST
    assert isinstance(update, Update) and isinstance(digest, Digest) and steps >= 2
    assert {a.record.record.agent_id for a in update.advertise} == set(core.agent_ids())


def test_one_slice_per_turn(core: GatewayCore) -> None:
    """While a slice is due, a SYNC_ACK (or a change) fills nothing: the slice timer
    does, so one turn of the loop fills at most one slice of the session."""
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return float(reads[0])

    msgs: list[Message] = []
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "a.example",
                                             lambda m, _t: msgs.append(m)),
                    TransactionIds(), lambda _h, _s, _t: None, slice_clock=clock,
                    work_slice=2.5)
    sync.start(T0)
    assert sync.get_timer() == T0 and msgs == []
    before = reads[0]
    sync.receive(SyncAck(sequence=0), T0)
    sync.announce(TableChanges(advertised=(core.agent_ids()[0],)), T0)
    assert reads[0] == before and msgs == []
    sync.handle_timer(T0)
    assert reads[0] > before


def test_sync_request_answered_in_slices(core: GatewayCore) -> None:
    """The UPDATE answering a SYNC_REQUEST is filled a slice at a time: it carries every
    record asked for, in order, under the request's transaction id; a change queued
    meanwhile goes after it, and a DIGEST sent meanwhile does not cover its records."""
    msgs: list[Message] = []
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "a.example",
                                             lambda m, _t: msgs.append(m)),
                    TransactionIds(), lambda _h, _s, _t: None)
    asked = sorted(core.agent_ids())
    gone = asked[0]
    sync.out.tree.discard(gone)  # as if the bulk transfer had not sent it
    sync.out.slice_clock, sync.out.work_slice = sliced(), 2.5
    sync.out.run(Start(), T0)
    _, now = run_slices(sync, T0)
    del msgs[:]
    sync.out.tree.discard(gone)
    sync.receive(SyncRequest(transaction_id=77, agent_ids=(tuple(asked),)), now)
    assert msgs == []  # one slice looked at some of the records asked for
    told = sync.out.tree.get(asked[-1])
    assert told is not None and core.deregister(asked[-1], now) is ErrorCode.SUCCESS
    sync.announce(TableChanges(withdrawn=(VersionedId(asked[-1], told),)), now)
    sync.out.run(DigestDue(), now)
    assert [type(m) for m in msgs] == [Digest]
    assert sync.out.tree.get(gone) is None and msgs[0].summary.count == len(asked) - 1
    steps, _ = run_slices(sync, now)
    _, answer, withdraw = msgs
    assert isinstance(answer, Update) and isinstance(withdraw, Update) and steps >= 1
    assert answer.transaction_id == 77
    # the last record asked for was gone when the answer came to it
    assert [a.record.record.agent_id for a in answer.advertise] == asked[:-1]
    assert [w.agent_id for w in withdraw.withdraw] == [asked[-1]]
    assert sync.out.tree.get(gone) is not None


def test_ended_session_memory_freed_in_slices(core: GatewayCore) -> None:
    """What a session's sync remembered (a digest tree and a path per record) is freed a
    part per slice after the session, not all in one step."""
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "a.example", lambda _m, _t: None),
                    TransactionIds(), lambda _h, _s, _t: None)
    sync.start(T0)
    assert len(sync.out.tree) == 7
    clock, steps = sliced(), 1
    while not sync.shed(slice_of(clock, 1.5)):
        steps += 1
    assert steps >= 3 and sync.out.tree.get(core.agent_ids()[0]) is None


def test_closed_session_routes_dropped_in_slices(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The routes through a peer whose session closed go a chunk per slice, each
    propagated; a session with the same peer established again stops the drop."""
    monkeypatch.setattr(drops, "CHUNK", 1)
    net = Network(tmp_path)
    a, b = net.gateway("gw-a"), net.gateway("gw-b")
    for i in range(7):
        net.agent(f"agent{i}", "gw-b").register(net.now)
    a.connect("gw-b", net.now)
    net.advance(2)
    assert len(a.core) == 7
    a.slice_clock, a.work_slice = sliced(), 1.5
    a.disconnect("gw-b", net.now)
    assert 0 < len(a.core) < 7 and a.get_timer() == net.now
    a.handle_timer(net.now)
    assert 0 < len(a.core) < 5
    a.connect("gw-b", net.now)  # back before the end: its table transfer sweeps
    net.advance(2)
    assert len(a.core) == 7 and not a.drops and len(b.core) == 7
    net.close()


def test_filtered_summary_counted_in_slices(core: GatewayCore) -> None:
    """A target with an export filter is counted once, a slice at a time (no filter until
    then), and afterwards from the records written since (Section 6.9)."""
    shown = ShownTerms(core, lambda _d: lambda r: r.name != "agent0", lambda: set(),
                       sliced(), 2.5)
    assert shown.bloom("b.example") is None
    steps = 1
    while not shown.gather():
        steps += 1

    def expected() -> Bloom:
        return Bloom.of(r.signed.record for a in core.agent_ids()
                        if (r := core.get(a)) is not None and r.signed.record.name != "agent0")

    assert steps >= 3 and shown.bloom("b.example") == expected()
    core.deregister(core.agent_ids()[-1], T0)
    core.register(make_record(60, "agent9", "a.example", skills=skills("new")), 3600, T0)
    assert shown.gather() and shown.bloom("b.example") == expected()


def skills(tag: str) -> tuple[Skill, ...]:
    return (Skill(f"s-{tag}", "Skill", (tag,)),)


def test_summary_kept_on_write(tmp_path: Path) -> None:
    """What gw-a summarizes for b.example (everything) and for c.example (its export
    filter: no "internal" tag) is, after registrations and deregistrations, the filter of
    the records shown, as built from scratch (Section 6.9)."""
    def export_for(domain: str) -> Callable[[CapabilityRecord], bool] | None:
        if domain == "c.example":
            return lambda r: all("internal" not in s.tags for s in r.skills)
        return None

    net = Network(tmp_path)
    a = net.gateway("gw-a", "a.example", replication=lambda _d: Replication.SUMMARY,
                    summary_mode=True, export_for=export_for)
    for name, dom in (("gw-b", "b.example"), ("gw-c", "c.example")):
        net.gateway(name, dom, replication=lambda _d: Replication.SUMMARY, summary_mode=True)
        a.connect(name, net.now)
    agents = [net.agent(f"agent{i}", "gw-a", skills=skills("internal" if i % 2 else f"t{i}"))
              for i in range(6)]
    for agent in agents[:4]:
        agent.register(net.now)
    net.advance(3)
    for agent in agents[4:]:
        agent.register(net.now)
    agents[0].deregister(net.now)
    agents[1].deregister(net.now)
    net.advance(3)

    def held(dom: str) -> list[CapabilityRecord]:
        return [r.signed.record for aid in a.core.agent_ids()
                if (r := a.core.get(aid)) is not None
                and (export_for(dom) or (lambda _r: True))(r.signed.record)]

    for name, dom in (("gw-b", "b.example"), ("gw-c", "c.example")):
        best = net.gateways[name].summaries.table.best(a.core.gateway_id)
        assert best is not None and best.bloom == Bloom.of(held(dom)), dom
    assert len(held("c.example")) == 2 and len(held("b.example")) == 4
    net.close()


@pytest.mark.parametrize("summary_mode", [False, True])
def test_summaries_inside_a_domain_only_in_summary_mode(tmp_path: Path,
                                                        summary_mode: bool) -> None:
    """Two gateways of one domain replicate every record: the originator sends its summary
    to the other only when this gateway exchanges summaries with some peer domain."""
    net = Network(tmp_path)
    first, second = (net.gateway(n, "a.example", summary_mode=summary_mode)
                     for n in ("gw-1", "gw-2"))
    net.agent("alice", "gw-1").register(net.now)
    first.connect("gw-2", net.now)
    net.advance(5)
    assert len(second.core) == 1
    inside = [s for s in net.log if isinstance(s.msg, Summary)]
    assert bool(inside) is summary_mode
    net.close()


def test_gateway_without_its_domains_summary_originates_its_own(tmp_path: Path) -> None:
    """A gateway that shows a peer domain every record but is given no summary of its
    domain to pass on (its originator is in full-replication mode) originates its own."""
    net = Network(tmp_path)
    one, two = net.gateway("gw-1", "a.example"), net.gateway("gw-2", "a.example")
    low, high = sorted((one, two), key=lambda g: g.core.gateway_id)
    b = net.gateway("gw-b", "b.example", replication=lambda _d: Replication.SUMMARY,
                    summary_mode=True)
    net.agent("alice", "gw-1").register(net.now)
    one.connect("gw-2", net.now)
    high.connect("gw-b", net.now)
    net.advance(5)
    assert not low.summaries.inside and b.summaries.table.origins() == [high.core.gateway_id]
    net.close()


def test_gateway_awaits_its_domains_summary_before_originating_its_own(
        tmp_path: Path) -> None:
    """A gateway that exchanges summaries and comes up with a gateway of its domain with
    a lower Gateway ID waits OWN_SUMMARY_WAIT for that originator's summary: it passes
    that on and never floods one of its own (Section 6.9)."""
    net = Network(tmp_path)
    one = net.gateway("gw-1", "a.example", summary_mode=True)
    two = net.gateway("gw-2", "a.example", summary_mode=True)
    low, high = sorted((one, two), key=lambda g: g.core.gateway_id)
    b = net.gateway("gw-b", "b.example", replication=lambda _d: Replication.SUMMARY,
                    summary_mode=True)
    net.agent("alice", "gw-1").register(net.now)
    one.connect("gw-2", net.now)
    high.connect("gw-b", net.now)
    net.advance(timer("OWN_SUMMARY_WAIT") + 3)
    origins = {s.msg.gateway_id for s in net.log
               if isinstance(s.msg, Summary) and s.msg.summary is not None}
    assert high.summaries.inside and high.core.gateway_id not in origins
    assert b.summaries.table.origins() == [low.core.gateway_id]
    net.close()


def test_restart_grace_ends_in_slices() -> None:
    """At the end of the grace period (Section 6.1.2) the withheld records are released a
    chunk per slice, in the order given, the timer due until the last one is."""
    ids = [i.to_bytes(16, "big") for i in range(3000)]
    grace = RestartGrace(ids, T0)
    grace.back(ids[1])
    clock, released, steps = sliced(), list[bytes](), 0
    while grace.get_timer() is not None:
        released += grace.expire(T0, slice_of(clock, 0.5))
        steps += 1
        assert grace.stale.isdisjoint(released)
    assert released == [ids[0], *ids[2:]] and steps == 3


def test_table_walked_a_chunk_at_a_time_in_agent_id_order(
        core: GatewayCore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table transfer takes the table a chunk at a time from the store, in agent id
    order (Registry.agent_id_chunks): no chunk is the whole table, and a record held
    from the first chunk to the last is in exactly one, though the table grows
    meanwhile."""
    monkeypatch.setattr(registry, "WALK_CHUNK", 4)
    for i in range(20):
        core.register(make_record(100 + i, f"w{i}", "a.example"), 3600, T0)
    held = set(core.agent_ids())
    chunks = core.agent_id_chunks()
    walked = [next(chunks)]
    for i in range(5):
        core.register(make_record(200 + i, f"late{i}", "a.example"), 3600, T0)
    walked += chunks
    flat = [a for c in walked for a in c]
    assert flat == sorted(set(flat)) and max(map(len, walked)) == 4
    assert held <= set(flat)


def test_summary_filter_built_in_slices(core: GatewayCore) -> None:
    """A filter of many terms is built a batch of terms per slice (none until it is
    done, gather() going on with it), the same filter as built in one go; a term that
    comes meanwhile starts it again (Section 6.9)."""
    for i in range(60):
        core.register(make_record(100 + i, f"many{i}", "a.example", skills=skills(f"x{i}")),
                      3600, T0)
    shown = ShownTerms(core, lambda _d: None, lambda: set(), sliced(), 1.5)
    assert shown.bloom("b.example") is None
    core.register(make_record(99, "late", "a.example", skills=skills("late")), 3600, T0)
    steps = 1
    while not shown.gather():
        steps += 1
    held = [r.signed.record for a in core.agent_ids() if (r := core.get(a)) is not None]
    assert steps >= 2 and shown.bloom("b.example") == Bloom.of(held)


def test_pending_update_carries_a_records_newest_state_only(core: GatewayCore) -> None:
    """A record changed, more than MIN_ADVERTISEMENT_INTERVAL later, while the UPDATE it
    went into is still being filled has its TLV there replaced (one ADVERTISE, the new
    version), and one withdrawn meanwhile that the peer was never told of leaves that
    UPDATE without ADVERTISE or WITHDRAW of it (Section 6.5)."""
    msgs: list[Message] = []
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "a.example",
                                             lambda m, _t: msgs.append(m)),
                    TransactionIds(), lambda _h, _s, _t: None, slice_clock=sliced(),
                    work_slice=4.5)
    sync.start(T0)  # one slice
    pending = [a for a in core.agent_ids() if sync.out.tree.get(a) is not None]
    assert msgs == [] and len(pending) >= 2  # in the UPDATE still being filled
    changed, gone = pending[:2]
    later = T0 + timer("MIN_ADVERTISEMENT_INTERVAL") + 1
    i = next(i for i in range(7)
             if make_record(40 + i, f"agent{i}", "a.example").record.agent_id == changed)
    core.register(make_record(40 + i, f"agent{i}", "a.example", version=2), 3600, later)
    assert core.deregister(gone, later) is ErrorCode.SUCCESS
    sync.announce(TableChanges(advertised=(changed,), withdrawn=(VersionedId(gone, 1),)),
                  later)
    run_slices(sync, later)
    updates = [m for m in msgs if isinstance(m, Update)]
    ads = [a for u in updates for a in u.advertise]
    assert [a.version for a in ads if a.record.record.agent_id == changed] == [2]
    assert gone not in {a.record.record.agent_id for a in ads}
    assert not any(u.withdraw or u.purge for u in updates)
    assert sync.out.tree.get(changed) == 2 and sync.out.tree.get(gone) is None
