"""GatewayCore on a real SQLite file: registration, discovery, restart, routing, sync."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dmscproto.codec.changes import TableChanges
from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.registry import ErrorCode, Scope, timer
from dmscproto.codec.signing import entity_id, sign_record, spki
from dmscproto.codec.values import CapabilityRecord, DiscoveryQuery, ExportPolicy, Skill
from dmscproto.codec.wire import Advertisement, VersionedId
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.directory import RemoteDirectory
from dmscproto.gateway.drops import PeerDrops
from dmscproto.gateway.routing import DeliverLocal, Forward, Reject
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.policy import export_filter, exportable
from dmscproto.protocol.ports import Relayed
from dmscproto.testing.examples import example_key, weather_record

ME, P1, P2, FAR = (bytes([n]) * 16 for n in (0xEE, 0x01, 0x02, 0x0F))
T0 = 1_000_000.0


def signed(n: int, name: str | None = None, version: int = 1, domain: str = "a.example",
           skill: str = "forecast", description: str | None = None) -> SignedRecord:
    key = example_key(n)
    pub = key.public_key()
    rec = replace(weather_record(), agent_id=entity_id(pub), public_key=spki(pub),
                  agent_uri=f"dmsc://{domain}/{name or f'agent{n}'}", domain=domain,
                  record_version=version, skills=(Skill(skill, skill.title(), ("t",)),),
                  description=description)
    return sign_record(rec, key)


def agent(n: int) -> bytes:
    return entity_id(example_key(n).public_key())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gw.db"


@pytest.fixture
def core(db: Path) -> Iterator[GatewayCore]:
    c = GatewayCore(ME, "a.example", RegistryStore(db), min_lease=30, max_lease=3600)
    yield c
    c.store.close()


def q(skill: str = "forecast") -> DiscoveryQuery:
    return DiscoveryQuery(skills=(skill,))


def found(core: GatewayCore, scope: Scope = Scope.FEDERATED, now: float = T0,
          skill: str = "forecast") -> list[bytes]:
    return [r.record.record.agent_id for r in core.discover(q(skill), scope, 10, now)]


def test_register_commits_before_success(core: GatewayCore, db: Path) -> None:
    out = core.register(signed(1), 600, T0)
    assert (out.status, out.lease) == (ErrorCode.SUCCESS, 600)
    # another connection sees the committed row at once
    with sqlite3.connect(db) as other:
        row = other.execute("SELECT agent_uri, expires_at FROM entries").fetchone()
    assert row == ("dmsc://a.example/agent1", T0 + 600)
    assert core.store.settings()["synchronous"] == 2
    assert found(core) == [agent(1)]
    assert core.route(agent(1), 8, ()) == DeliverLocal(agent(1))


def test_lease_is_clamped(core: GatewayCore) -> None:
    assert core.register(signed(1), 1, T0).lease == 30
    assert core.register(signed(2), 10**9, T0).lease == 3600
    assert core.refresh(agent(2), 0, T0).lease == 30


def test_wrong_domain_is_refused(core: GatewayCore) -> None:
    out = core.register(signed(1, domain="b.example"), 600, T0)
    assert out.status is ErrorCode.POLICY_DENIED and len(core) == 0


def test_name_conflict_until_the_lease_ends(core: GatewayCore) -> None:
    assert core.register(signed(1, name="weather"), 60, T0).status is ErrorCode.SUCCESS
    out = core.register(signed(2, name="weather"), 60, T0 + 59)
    assert out.status is ErrorCode.NAME_CONFLICT and out.lease == 0
    assert core.get(agent(2)) is None
    # once the holder's lease has ended the name is free; the old holder is evicted
    assert core.register(signed(2, name="weather"), 60, T0 + 60).status is ErrorCode.SUCCESS
    assert core.get(agent(1)) is None
    assert core.store.get(agent(1)) is None
    assert found(core, now=T0 + 61) == [agent(2)]
    # and reported by the next expire() (peers must get its WITHDRAW), which is due now
    assert core.next_expiry() == T0 + 60
    assert core.expire(T0 + 61) == [VersionedId(agent(1), 1)]
    assert core.next_expiry() == T0 + 120 and core.expire(T0 + 61) == []
    # a lapsed holder that registers again (under another name) is not withdrawn
    assert core.register(signed(3, name="w3"), 60, T0).status is ErrorCode.SUCCESS
    assert core.register(signed(4, name="w3"), 60, T0 + 60).status is ErrorCode.SUCCESS
    assert core.register(signed(3, name="w4"), 60, T0 + 61).status is ErrorCode.SUCCESS
    assert core.expire(T0 + 62) == []


def test_versions(core: GatewayCore) -> None:
    assert core.register(signed(1, version=2), 600, T0).status is ErrorCode.SUCCESS
    assert core.register(signed(1, version=1), 600, T0).status is ErrorCode.REPLAY
    changed = signed(1, version=2, description="changed")
    assert core.register(changed, 600, T0).status is ErrorCode.INVALID_TLV_VALUE
    # a retransmission (same version, same payload) renews the lease
    assert core.register(signed(1, version=2), 600, T0 + 100).status is ErrorCode.SUCCESS
    assert core.store.get(agent(1)).expires_at == T0 + 700  # type: ignore[union-attr]
    v3 = signed(1, version=3, name="renamed", skill="alerts")
    assert core.register(v3, 600, T0).status is ErrorCode.SUCCESS
    assert len(core) == 1 and core.get(agent(1)).version == 3  # type: ignore[union-attr]
    assert found(core) == [] and found(core, skill="alerts") == [agent(1)]
    assert core.store.by_uri("dmsc://a.example/agent1") is None
    # the old name is free for another key now
    assert core.register(signed(2, name="agent1"), 600, T0).status is ErrorCode.SUCCESS


def test_refresh_deregister_expire(core: GatewayCore) -> None:
    assert core.refresh(agent(1), 60, T0).status is ErrorCode.UNKNOWN_AGENT
    core.register(signed(1), 60, T0)
    core.register(signed(2), 100, T0)
    assert core.refresh(agent(1), 60, T0 + 59).status is ErrorCode.SUCCESS
    assert core.store.get(agent(1)).expires_at == T0 + 119  # type: ignore[union-attr]
    assert core.next_expiry() == T0 + 100
    # a lapsed lease cannot be refreshed and is no longer discoverable
    assert core.refresh(agent(2), 60, T0 + 100).status is ErrorCode.LEASE_EXPIRED
    assert found(core, now=T0 + 100) == [agent(1)]
    assert core.expire(T0 + 100) == [VersionedId(agent(2), 1)]
    assert core.refresh(agent(2), 60, T0 + 100).status is ErrorCode.UNKNOWN_AGENT
    assert core.route(agent(2), 8, ()) == Reject(ErrorCode.NO_ROUTE)
    assert core.deregister(agent(1), T0 + 101) is ErrorCode.SUCCESS
    assert core.deregister(agent(1), T0 + 101) is ErrorCode.UNKNOWN_AGENT
    assert len(core) == 0 and len(core.store) == 0 and core.expire(T0 + 10**6) == []


def test_restart_keeps_registrations(db: Path) -> None:
    c = GatewayCore(ME, "a.example", RegistryStore(db))
    c.register(signed(1), 600, T0)
    c.register(signed(2, skill="alerts"), 600, T0)
    c.learn(Advertisement(1, (FAR, P1), signed(3, domain="b.example")), P1, T0)
    before = [(a, r.version, r.path) for a in c.agent_ids() for r in c.routes.routes(a)]
    c.store.close()
    c = GatewayCore(ME, "a.example", RegistryStore(db))
    assert len(c) == 3
    assert [(a, r.version, r.path) for a in c.agent_ids() for r in c.routes.routes(a)] == before
    assert c.warm(2) == 1 and c.warm(5) == 0  # decode the loaded records ahead of use
    assert sorted(found(c)) == sorted([agent(1), agent(3)])
    res = c.discover(q("alerts"), Scope.LOCAL, 10, T0)
    assert [r.record.encode() for r in res] == [signed(2, skill="alerts").encode()]
    assert c.route(agent(1), 8, ()) == DeliverLocal(agent(1))
    assert c.route(agent(3), 8, ()) == Forward(P1, 7, (ME,))
    assert c.get(agent(3)).path == (FAR, P1)  # type: ignore[union-attr]
    assert c.register(signed(5, name="agent1"), 60, T0).status is ErrorCode.NAME_CONFLICT
    assert c.expire(T0 + 600) == sorted([VersionedId(agent(1), 1), VersionedId(agent(2), 1)],
                                        key=lambda v: v.agent_id)
    c.store.close()


def test_group_commit(core: GatewayCore) -> None:
    outs = core.register_many([(signed(1, name="x"), 60), (signed(2, name="x"), 60),
                               (signed(3), 60), (signed(3, version=2), 60),
                               (signed(4, domain="b.example"), 60)], T0)
    assert [o.status for o in outs] == [ErrorCode.SUCCESS, ErrorCode.NAME_CONFLICT,
                                        ErrorCode.SUCCESS, ErrorCode.SUCCESS,
                                        ErrorCode.POLICY_DENIED]
    assert sorted(e.agent_id for e in core.store.all()) == sorted([agent(1), agent(3)])
    assert core.store.get(agent(3)).version == 2  # type: ignore[union-attr]


def test_failed_write_changes_nothing(core: GatewayCore, monkeypatch: pytest.MonkeyPatch) -> None:
    core.register(signed(1), 60, T0)

    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(core.store, "put_many", broken)
    with pytest.raises(sqlite3.OperationalError):
        core.register(signed(1, version=2, skill="alerts"), 60, T0)
    with pytest.raises(sqlite3.OperationalError):
        core.register(signed(2), 60, T0)
    assert core.get(agent(1)).version == 1  # type: ignore[union-attr]
    assert found(core) == [agent(1)] and agent(2) not in core


def test_discover_scopes_and_policy(core: GatewayCore) -> None:
    core.register(signed(1), 600, T0)
    core.learn(Advertisement(1, (P1,), signed(2)), P1, T0)                     # same domain
    core.learn(Advertisement(1, (P2,), signed(3, domain="b.example")), P2, T0)
    assert found(core, Scope.LOCAL) == [agent(1)]
    assert sorted(found(core, Scope.DOMAIN)) == sorted([agent(1), agent(2)])
    assert sorted(found(core, Scope.FEDERATED)) == sorted([agent(1), agent(2), agent(3)])
    other = DiscoveryQuery(skills=("forecast",), domain="b.example")
    assert core.discover(other, Scope.DOMAIN, 10, T0) == []
    assert [r.record.record.agent_id for r in core.discover(other, Scope.FEDERATED, 10, T0)] \
        == [agent(3)]
    assert core.discover(other, Scope.LOCAL, 10, T0) == []
    res = core.discover(q(), Scope.FEDERATED, 10, T0,
                        allow=lambda r: r.domain == "b.example")
    assert [r.record.record.agent_id for r in res] == [agent(3)]
    assert all(r.score == 10000 for r in core.discover(q(), Scope.FEDERATED, 10, T0))
    assert len(core.discover(q(), Scope.FEDERATED, 2, T0)) == 2


def test_learn_rules(core: GatewayCore) -> None:
    rec = signed(2, domain="b.example")
    assert not core.learn(Advertisement(1, (ME, P1), rec), P1, T0)    # loop
    assert not core.learn(Advertisement(1, (P2,), rec), P1, T0)       # sender not last
    assert not core.learn(Advertisement(1, (), rec), P1, T0)          # empty path
    assert not core.learn(Advertisement(1, (P1, P1), rec), P1, T0)    # repeated id
    assert not core.learn(Advertisement(2, (P1,), rec), P1, T0)       # version mismatch
    assert len(core) == 0
    assert core.learn(Advertisement(1, (FAR, P1), rec), P1, T0)
    assert not core.learn(Advertisement(1, (FAR, P1), rec), P1, T0)   # nothing new
    # local beats remote, and a learned record cannot take a local name
    core.register(signed(1), 600, T0)
    assert not core.learn(Advertisement(1, (P1,), signed(1)), P1, T0)
    assert not core.learn(Advertisement(1, (P1,), signed(9, name="agent1")), P1, T0)
    assert core.get(agent(1)).local  # type: ignore[union-attr]
    # a newer version replaces, an older one is ignored
    v2 = signed(2, version=2, domain="b.example", skill="alerts")
    assert core.learn(Advertisement(2, (P2,), v2), P2, T0)
    assert not core.learn(Advertisement(1, (P1,), rec), P1, T0)
    assert core.get(agent(2)).version == 2  # type: ignore[union-attr]
    assert found(core, skill="alerts") == [agent(2)]
    assert core.route(agent(2), 8, ()) == Forward(P2, 7, (ME,))
    # a local registration replaces a learned record of the same agent
    assert core.register(signed(2, version=2, domain="b.example"), 60, T0).status \
        is ErrorCode.POLICY_DENIED
    assert core.store.get(agent(2)).origin == P2  # type: ignore[union-attr]


def test_alternative_routes_and_withdraw(core: GatewayCore) -> None:
    rec = signed(2, domain="b.example")
    assert core.learn(Advertisement(1, (FAR, P2), rec), P2, T0)
    assert core.route(agent(2), 8, ()) == Forward(P2, 7, (ME,))
    # the same version through P1 on a shorter path becomes the best route
    assert core.learn(Advertisement(1, (P1,), rec), P1, T0)
    assert core.route(agent(2), 8, ()) == Forward(P1, 7, (ME,))
    assert core.store.get(agent(2)).next_hop == P1  # type: ignore[union-attr]
    # a withdrawal of an older version than the route's is stale
    assert not core.withdraw(agent(2), 0, P1)
    # withdrawing the best route falls back to the other one (persisted)
    assert core.withdraw(agent(2), 1, P1)
    assert core.route(agent(2), 8, ()) == Forward(P2, 7, (ME,))
    stored = core.store.get(agent(2))
    assert stored is not None and (stored.next_hop, stored.path) == (P2, (FAR, P2))
    assert not core.withdraw(agent(2), 1, P1)
    # P1 back on the short path, then P1's own best path runs through us: its
    # looping advertisement replaces (withdraws) its earlier route
    assert core.learn(Advertisement(1, (P1,), rec), P1, T0)
    assert core.learn(Advertisement(1, (FAR, ME, P1), rec), P1, T0)
    assert core.route(agent(2), 8, ()) == Forward(P2, 7, (ME,))
    assert core.store.get(agent(2)).next_hop == P2  # type: ignore[union-attr]
    # the last route gone, the record goes
    assert core.withdraw(agent(2), 1, P2)
    assert agent(2) not in core and core.store.get(agent(2)) is None
    assert not core.withdraw(agent(9), 1, P2)


def test_drop_peer(core: GatewayCore) -> None:
    core.register(signed(1), 600, T0)
    core.learn(Advertisement(1, (P1,), signed(2)), P1, T0)
    core.learn(Advertisement(1, (P1,), signed(3)), P1, T0)
    core.learn(Advertisement(1, (FAR, P2), signed(3)), P2, T0)
    core.learn(Advertisement(1, (P2,), signed(4)), P2, T0)
    ch = drop_peer(core, P1)
    assert ch == TableChanges(advertised=(agent(3),), withdrawn=(VersionedId(agent(2), 1),))
    assert core.route(agent(3), 8, ()) == Forward(P2, 7, (ME,))
    assert core.store.get(agent(3)).next_hop == P2  # type: ignore[union-attr]
    assert agent(2) not in core and core.store.get(agent(2)) is None
    assert drop_peer(core, P1) == TableChanges()


def drop_peer(core: GatewayCore, peer: bytes) -> TableChanges:
    """The node's path when the session with ``peer`` ends (:class:`PeerDrops`), run to
    the end."""
    drops = PeerDrops()
    drops.start(peer, core.route_chunks_via(peer))
    return drops.work(core, lambda: True)


def test_purge_removes_every_route_and_holds_the_version(core: GatewayCore) -> None:
    core.register(signed(1), 600, T0)
    core.learn(Advertisement(1, (FAR, P1), signed(2)), P1, T0)
    core.learn(Advertisement(1, (FAR, P2), signed(2)), P2, T0)
    core.learn(Advertisement(2, (P2,), signed(3, version=2)), P2, T0)
    ch = core.purge_many([VersionedId(agent(1), 1), VersionedId(agent(2), 1),
                          VersionedId(agent(3), 1)], T0)
    # never a local registration; a newer version stays
    assert ch == TableChanges(purged=(VersionedId(agent(2), 1),))
    assert agent(2) not in core and core.store.get(agent(2)) is None
    assert agent(1) in core and agent(3) in core
    # a late ADVERTISE of the purged version is ignored for PURGE_HOLD ...
    assert not core.learn(Advertisement(1, (FAR, P1), signed(2)), P1, T0 + 1)
    # ... unless it comes from the origin itself (it registered the record again)
    assert core.learn(Advertisement(1, (FAR,), signed(2)), FAR, T0 + 2)
    core.purge_many([VersionedId(agent(2), 1)], T0 + 3)
    assert not core.learn(Advertisement(1, (FAR, P1), signed(2)), P1, T0 + 4)
    assert core.learn(Advertisement(1, (FAR, P1), signed(2)), P1,
                      T0 + 3 + timer("PURGE_HOLD"))
    assert [a for chunk in core.route_chunks_via(P1) for a in chunk] == [agent(2)]


def test_learn_many_commits_once(core: GatewayCore) -> None:
    ads = [Advertisement(1, (P1,), signed(n)) for n in range(2, 7)]
    writes = []
    real = core.store.put_many

    def put_many(*args: object, **kwargs: object) -> list[bytes]:
        writes.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    core.store.put_many = put_many  # type: ignore[method-assign]
    ch = core.learn_many(ads, P1, T0)
    assert ch.advertised == tuple(agent(n) for n in range(2, 7)) and len(writes) == 1
    assert all(core.store.get(agent(n)) is not None for n in range(2, 7))


def only_local(r: CapabilityRecord) -> bool:
    return r.agent_id == agent(1)


def test_advertisements_for(core: GatewayCore) -> None:
    core.register(signed(1), 600, T0)
    core.learn(Advertisement(1, (FAR, P1), signed(2)), P1, T0)
    ads = core.advertisements_for([agent(1), agent(2), agent(9)])
    assert [(ad.version, ad.path) for ad in ads] == [(1, (ME,)), (1, (FAR, P1, ME))]
    assert ads[0].record.encode() == signed(1).encode()
    # one record towards a peer: what advertisements_for gives
    for peer, allow in ((P2, None), (P1, None), (P2, only_local)):
        assert [core.advertisement(a, peer, allow) for a in (agent(1), agent(2))
                if core.advertisement(a, peer, allow)] \
            == core.advertisements_for([agent(1), agent(2)], peer, allow)
    # split horizon: P1 would drop its own advertisement as a loop
    assert [ad.path for ad in core.advertisements_for([agent(1), agent(2)], to_peer=P1)] \
        == [(ME,)]
    assert core.agent_ids(local_only=True) == [agent(1)]


def test_export_policy() -> None:
    def rec(n: int, *tags: str) -> CapabilityRecord:
        return replace(signed(n).record, skills=(Skill("s", "S", tags),))

    weather, secret, plain = rec(1, "weather"), rec(2, "weather", "Internal"), rec(3, "misc")
    tags_only = ExportPolicy(("b.example",), include_tags=("weather",),
                             exclude_tags=("internal",))
    assert exportable(tags_only, "b.example", weather)
    assert not exportable(tags_only, "b.example", secret)   # excluded tag wins
    assert not exportable(tags_only, "b.example", plain)    # not included
    assert not exportable(tags_only, "c.example", weather)  # peer not listed
    by_name = ExportPolicy(("b.example",), exclude_tags=("internal",),
                           include_agents=("dmsc://a.example/agent2",))
    assert exportable(by_name, "b.example", secret)         # named agent always
    assert not exportable(by_name, "b.example", plain)      # only named ones
    everything = ExportPolicy(("b.example",), exclude_tags=("internal",))
    assert exportable(everything, "b.example", plain)
    assert not exportable(everything, "b.example", secret)


def test_export_filter_in_discovery_and_updates(core: GatewayCore) -> None:
    core.register(signed(1, skill="forecast"), 600, T0)
    core.register(signed(2, skill="alerts"), 600, T0)
    only_agent2 = export_filter(ExportPolicy(("b.example",),
                                             include_agents=("dmsc://a.example/agent2",)),
                                "b.example")
    assert core.discover(q(), Scope.FEDERATED, 10, T0, allow=only_agent2) == []
    ads = core.advertisements_for(core.agent_ids(), allow=only_agent2)
    assert [ad.record.record.agent_id for ad in ads] == [agent(2)]


def test_remote_directory_expires_from_the_front() -> None:
    """Relayed answers and their records are forgotten in the order they expire, a record
    kept again by a later answer only with that answer (Section 5.2.1)."""
    one, two, peer = signed(71), signed(72), bytes([0x01]) * 16
    d = RemoteDirectory(ttl=10)
    d.put(b"q1", (Relayed(1, one, peer), Relayed(1, two, peer)), T0, {peer: 8})
    d.put(b"q2", (Relayed(1, one, peer),), T0 + 5, {peer: 8})
    d.expire(T0 + 10)
    assert d.answers(b"q1", T0 + 10) is None and d.answers(b"q2", T0 + 10) is not None
    assert d.get(two.record.agent_id) is None and len(d) == 1
    assert d.get(one.record.agent_id, T0 + 14) is not None
    d.expire(T0 + 15)
    assert len(d) == 0 and d.answers(b"q2", T0) is None
