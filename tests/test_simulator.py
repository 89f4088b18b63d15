"""The federation simulator on small topologies (draft-dmsc-protocol-00, Sections 6.4-6.6;
issue 10 item 9): registrations converge, withdrawn records leave no ghost, partitions and
restarts heal, and what the simulator measures (PDUs per link, ghosts) is right.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmscproto.codec.registry import MessageType, Scope, timer
from dmscproto.codec.values import CapabilityRecord, DiscoveryQuery, Skill
from dmscproto.testing.harness import make_record
from dmscproto.testing.simulator import Simulation
from dmscproto.testing.topology import Edge, chain, full_mesh, random_graph, ring

DIGEST = timer("DIGEST_INTERVAL")
HOLD = timer("HOLD_TIME")
#: Long enough for a DIGEST round to repair what UPDATEs missed.
SETTLE = DIGEST + 5


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """The gateways' SQLite files, on a tmpfs when there is one (an fsync per learned
    record costs a disk write otherwise)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm) as d:
        yield Path(d)


@pytest.fixture
def sim(scratch: Path) -> Iterator[Simulation]:
    s = Simulation(scratch, seed=3)
    yield s
    s.close()


def names(n: int) -> list[str]:
    return [f"gw-{i}" for i in range(n)]


def build(sim: Simulation, gateways: list[str], edges: list[Edge], per_domain: int = 2) -> None:
    sim.build({g: f"d{i // per_domain}.example" for i, g in enumerate(gateways)}, edges)
    assert sim.settle(10)
    assert sim.established_links == len(edges)


def register(sim: Simulation, n: int, home: str) -> bytes:
    signed = make_record(100 + n, f"agent-{n}", sim.gateways[home].domain)
    sim.register(home, signed)
    return signed.record.agent_id


@pytest.mark.parametrize("topology", [
    chain, ring, full_mesh, lambda g: random_graph(g, 3, random.Random(5))])
def test_registrations_converge_without_ghosts(sim: Simulation,
                                               topology: Callable[[list[str]], list[Edge]]
                                               ) -> None:
    gateways = names(8)
    build(sim, gateways, topology(gateways))
    ids = [register(sim, n, gateways[n % 8]) for n in range(6)]
    assert sim.settle(SETTLE)
    assert sim.check().ok
    assert all(set(sim.holders(a)) == set(gateways) for a in ids)
    convergence = sim.convergence("register")
    assert convergence is not None and convergence < 1.0  # a few link latencies
    for a in ids[:3]:
        sim.deregister(a)
    assert sim.settle(SETTLE)
    check = sim.check()
    assert check.ok, check
    assert sum(len(sim.holders(a)) for a in ids[:3]) == 0


def test_update_pdus_per_registration_on_a_full_mesh(sim: Simulation) -> None:
    """Issue 10's 8-gateway, 4-domain full mesh: at most 2 UPDATEs per peer link for
    one registration and for one deregistration, none of them a duplicate, no ghost."""
    gateways = names(8)
    build(sim, gateways, full_mesh(gateways))
    links = len(sim.links)
    ids = []
    for n in range(3):
        before = sim.count(MessageType.UPDATE)
        ids.append(register(sim, n, gateways[n]))
        assert sim.settle(SETTLE)
        assert sim.count(MessageType.UPDATE) - before <= 2 * links
    for aid in ids:
        before = sim.count(MessageType.UPDATE)
        sim.deregister(aid)
        assert sim.settle(SETTLE)
        assert sim.count(MessageType.UPDATE) - before <= 2 * links
        assert sim.check().ok
    assert sim.duplicates == 0
    # every UPDATE counted went over a peer link, each one in each direction at most
    assert {(s, d) for (s, d, t) in sim.pdus if t is MessageType.UPDATE} <= \
        {(a, b) for a in gateways for b in gateways if a != b}


def test_a_lost_withdraw_is_a_ghost_until_anti_entropy(sim: Simulation) -> None:
    """The checker sees a ghost; DIGEST removes it (within two rounds: a route learned
    since the previous DIGEST is kept once, Section 6.6)."""
    gateways = names(3)
    build(sim, gateways, chain(gateways))
    a = register(sim, 0, "gw-0")
    assert sim.settle(SETTLE)
    sim.cut("gw-1", "gw-2")
    sim.deregister(a)
    sim.run(1)
    assert sim.count(MessageType.UPDATE) and sim.lost[MessageType.UPDATE] == 1
    sim.heal("gw-1", "gw-2")
    assert sim.check().ghosts == {"gw-2": {a}}
    sim.run(2 * DIGEST + 1)
    assert sim.check().ok


def test_a_partition_longer_than_the_hold_time_heals(sim: Simulation) -> None:
    gateways = names(4)
    build(sim, gateways, ring(gateways))
    ids = [register(sim, n, g) for n, g in enumerate(gateways)]
    assert sim.settle(SETTLE)
    for a, b in (("gw-0", "gw-1"), ("gw-2", "gw-3")):  # {gw-1, gw-2} | {gw-3, gw-0}
        sim.cut(a, b)
    sim.deregister(ids[1])
    extra = register(sim, 9, "gw-3")
    sim.run(HOLD + 5)
    assert sim.established_links == 2
    assert sim.holders(extra) == ["gw-0", "gw-3"]
    for a, b in (("gw-0", "gw-1"), ("gw-2", "gw-3")):
        sim.heal(a, b)
    assert sim.settle(4 * DIGEST)
    assert sim.check().ok
    assert set(sim.holders(extra)) == set(gateways) and sim.holders(ids[1]) == []


def test_killed_gateway_is_dropped_and_restarts_with_its_registrations(sim: Simulation) -> None:
    gateways = names(5)
    build(sim, gateways, chain(gateways))
    mine = register(sim, 0, "gw-2")
    other = register(sim, 1, "gw-0")
    assert sim.settle(SETTLE)
    sim.kill("gw-2")
    sim.run(HOLD + 5)
    assert sim.holders(mine) == [] and sim.holders(other) == ["gw-0", "gw-1"]
    assert sim.check().ok
    sim.restart("gw-2")
    assert sim.settle(4 * DIGEST)
    assert sim.check().ok
    assert set(sim.holders(mine)) == set(gateways) == set(sim.holders(other))
    # gw-2 kept its route to ``other`` in its file; gw-1's table transfer on the new
    # session confirms it (Section 6.5.3): the same record again, but no duplicate
    assert sim.duplicates == 0


def test_export_policy_bounds_where_a_record_is_expected(scratch: Path) -> None:
    def export(own: str, peer: str, record: CapabilityRecord) -> bool:
        return peer != "d2.example" or record.domain == own

    policy = Simulation(scratch, seed=1, export=export)
    try:
        gateways = names(6)
        build(policy, gateways, chain(gateways))
        a = register(policy, 0, "gw-0")   # d0: stops before d2 (gw-4, gw-5)
        b = register(policy, 1, "gw-4")   # d2: everywhere
        assert policy.settle(SETTLE)
        assert policy.check().ok
        assert policy.holders(a) == ["gw-0", "gw-1", "gw-2", "gw-3"]
        assert set(policy.holders(b)) == set(gateways)
    finally:
        policy.close()


def test_summaries_between_domains_keep_records_home_and_discovery_relayed(
        scratch: Path) -> None:
    """Per-peer summary mode (Section 6.9): a domain's records stay on its gateways, a
    FEDERATED DISCOVER from another domain is relayed to it and finds them, and once
    withdrawn they are found nowhere after the relayed answers' cache time.  A chain of
    6 domains of 2 gateways: the summary crossed 11 gateways, and the DISCOVER is relayed
    by the 10 between (Section 5.2.1), no further."""
    sim = Simulation(scratch, seed=2, summaries=True)
    try:
        gateways = names(12)
        build(sim, gateways, chain(gateways))
        skill = Skill("tide-tables", "Tide tables", ("sea",))
        signed = make_record(100, "tides", "d5.example", skills=(skill,))
        sim.register("gw-11", signed)
        assert sim.settle(SETTLE)
        assert sim.check().ok
        aid = signed.record.agent_id
        assert sim.holders(aid) == ["gw-10", "gw-11"]
        table = sim.node("gw-0").summaries.table
        assert [len(r.path) for r in map(table.best, table.origins())
                if r is not None and r.domain == "d5.example"] == [11]

        def found(scope: Scope) -> list[bytes]:
            txid = sim.discover("gw-0", DiscoveryQuery(skills=("tide-tables",)), scope=scope)
            sim.run(2)
            return [r.record.record.agent_id for r in sim.answers.pop(txid).results]

        assert found(Scope.FEDERATED) == [aid]
        assert sim.count(MessageType.DISCOVER) == 10
        assert found(Scope.DOMAIN) == []
        # a call by the same query follows the relayed answer over the 11 gateways
        # (DEFAULT_HOP_LIMIT allows any path a gateway learns, Section 5.3)
        sim.route("gw-0", DiscoveryQuery(skills=("tide-tables",)), b"call")
        sim.run(2)
        assert sim.called == {b"call": "gw-11"}
        sim.deregister(aid)
        assert sim.settle(SETTLE)
        assert sim.check().ok
        sim.run(timer("DISCOVERY_CACHE_TTL"))
        assert found(Scope.FEDERATED) == []
    finally:
        sim.close()


def _summary_domains(sim: Simulation, gateway: str) -> set[str]:
    table = sim.node(gateway).summaries.table
    return {r.domain for r in map(table.best, table.origins()) if r is not None}


def test_summaries_originated_once_per_domain_change_and_a_cut_domain_withdrawn(
        scratch: Path) -> None:
    """Section 6.9: one originator per domain (3 gateways in a full mesh), so a change
    of the domain's records crosses each directed link at most once; a domain cut off
    from the others has its summary withdrawn everywhere within the hold time (no path
    exploration), and it comes back when the links heal."""
    sim = Simulation(scratch, seed=3, summaries=True)
    try:
        gateways = names(12)
        doms = [gateways[i:i + 3] for i in range(0, 12, 3)]
        between = [(doms[0][0], doms[1][1]), (doms[1][2], doms[2][0]),
                   (doms[2][1], doms[3][2]), (doms[3][0], doms[0][2]),
                   (doms[0][1], doms[2][2])]
        build(sim, gateways, [e for d in doms for e in full_mesh(d)] + between, per_domain=3)
        directed = 2 * len(sim.links)
        for d in doms:
            assert sum(sim.node(g).summaries.originator() for g in d) == 1
        assert sim.settle(SETTLE)
        before = sim.count(MessageType.SUMMARY)
        register(sim, 1, doms[1][2])  # at a gateway that is not d1's originator
        assert sim.settle(SETTLE)
        assert 0 < sim.count(MessageType.SUMMARY) - before <= directed
        cut = [(a, b) for a, b in between if (a in doms[1]) != (b in doms[1])]
        before = sim.count(MessageType.SUMMARY)
        for a, b in cut:
            sim.cut(a, b)
        sim.run(2 * HOLD)
        outside = [g for d in (doms[0], doms[2], doms[3]) for g in d]
        assert not any("d1.example" in _summary_domains(sim, g) for g in outside)
        # d1's summary withdrawn outside, the 3 others inside d1: about a withdrawal per
        # directed link, with the switches to paths through the link that drops later
        assert sim.count(MessageType.SUMMARY) - before <= 2 * directed
        for a, b in cut:
            sim.heal(a, b)
        assert sim.settle(SETTLE, quiet=5)
        assert all("d1.example" in _summary_domains(sim, g) for g in outside)
        assert sim.check().ok
    finally:
        sim.close()
