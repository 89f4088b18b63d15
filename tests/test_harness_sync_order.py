"""Gateway sync applies each session's UPDATEs and DIGESTs in the order sent, whatever
order they arrive in, and converges without ghosts (draft-dmsc-protocol-00, Sections
6.5, 6.6; draft-dmsc-state-machines-00, gateway sync).

QUIC does not order streams against each other and datagrams are reordered or lost, so a
PURGE can arrive before the ADVERTISE it purges and a DIGEST after the UPDATE sent after
it: the receiver holds what arrives early until the sequence is complete.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from dmscproto.codec.messages import Digest, SyncAck, Update
from dmscproto.codec.registry import timer
from dmscproto.protocol.events import TableChanged
from dmscproto.testing.harness import Network


def pair(tmp_path: Path) -> Network:
    net = Network(tmp_path)
    net.gateway("gw-a")
    net.gateway("gw-b")
    net.gateways["gw-a"].connect("gw-b", net.now)
    net.advance(1)
    return net


def test_purge_overtaking_its_advertise_waits_for_it(tmp_path: Path) -> None:
    net = pair(tmp_path)
    try:
        gwa, gwb = net.gateways["gw-a"], net.gateways["gw-b"]
        x = net.agent("x", "gw-a")
        ups: list[Update] = []
        for call in (x.register, x.deregister):     # gw-a's UPDATEs to gw-b are kept back
            call(net.now)
            for _, msg in x.messages_to_send():
                net.deliver("x", "gw-a", msg)
            for dest, msg in gwa.messages_to_send():
                if dest == "gw-b":
                    assert isinstance(msg, Update)
                    ups.append(msg)
                else:
                    net.deliver("gw-a", dest, msg)
        assert [(bool(u.advertise), bool(u.purge)) for u in ups] == [(True, False),
                                                                     (False, True)]
        net.deliver("gw-a", "gw-b", ups[1])
        net.pump()
        assert net.take("gw-b", TableChanged) == []            # held, not applied
        net.deliver("gw-a", "gw-b", ups[0])
        net.pump()
        changes = net.take("gw-b", TableChanged)
        assert [(c.advertised, c.purged) for c in changes] == \
            [((x.agent_id,), ()), ((), ups[1].purge)]
        assert x.agent_id not in gwb.core
        net.advance(timer("DIGEST_INTERVAL") * 2)                # and the digests agree
        assert x.agent_id not in gwb.core and net.take("gw-b", TableChanged) == []
    finally:
        net.close()


def test_digest_overtaken_by_an_update_is_applied_first(tmp_path: Path) -> None:
    net = pair(tmp_path)
    try:
        gwa, gwb = net.gateways["gw-a"], net.gateways["gw-b"]
        x = net.agent("x", "gw-a")
        due = gwa.get_timer()
        assert due is not None
        net.now = due
        gwa.handle_timer(net.now)                    # gw-a generates a DIGEST without x ...
        held = [(d, m) for d, m in gwa.messages_to_send() if isinstance(m, Digest)]
        assert len(held) == 1                        # (a KEEPALIVE may be due too: dropped)
        x.register(net.now)                          # ... then advertises x, delivered first
        net.pump()
        assert x.agent_id not in gwb.core            # held: the DIGEST comes before it
        for dest, msg in held:
            net.deliver("gw-a", dest, msg)
        net.pump()
        assert x.agent_id in gwb.core
        assert [e for e in net.take("gw-b", TableChanged) if e.withdrawn or e.purged] == []
        net.advance(timer("DIGEST_INTERVAL") + 1)    # the next DIGEST lists x: no change
        assert x.agent_id in gwb.core and net.take("gw-b", TableChanged) == []
    finally:
        net.close()


def test_a_lost_update_is_skipped_and_repaired(tmp_path: Path) -> None:
    """A sequenced message lost on a datagram link: the gap is skipped after
    REORDER_TIMEOUT and the digest trees, compared, repair what it carried."""
    net = pair(tmp_path)
    try:
        gwa, gwb = net.gateways["gw-a"], net.gateways["gw-b"]
        x = net.agent("x", "gw-a")
        x.register(net.now)
        net.advance(31)
        assert x.agent_id in gwb.core
        net.cut.add(frozenset(("gw-a", "gw-b")))
        x.deregister(net.now)                        # the PURGE is lost
        net.pump()
        net.cut.clear()
        assert x.agent_id not in gwa.core and x.agent_id in gwb.core
        net.advance(timer("DIGEST_INTERVAL") + timer("REORDER_TIMEOUT"))
        assert x.agent_id not in gwb.core
        sync = gwa.sessions["gw-b"].sync
        assert sync is not None and sync.out.in_flight < 16   # the peer acknowledged past it
    finally:
        net.close()


# --- an 8-gateway full mesh (issue: 49 UPDATEs per registration, 655 per deregistration) ----
GATEWAYS = [f"gw-{i}" for i in range(8)]


def full_mesh(tmp_path: Path) -> Network:
    net = Network(tmp_path, shuffle=True)
    for i, name in enumerate(GATEWAYS):
        net.gateway(name, f"{'abcd'[i // 2]}.example")
    for a, b in itertools.combinations(GATEWAYS, 2):
        net.gateways[a].connect(b, net.now)
    net.advance(1)
    return net


def updates(net: Network) -> list[tuple[str, str, Update]]:
    return [(s.source, s.dest, s.msg) for s in net.log
            if isinstance(s.msg, Update) and s.source in net.gateways]


def duplicates(sent: list[tuple[str, str, Update]]) -> int:
    """ADVERTISEs of the same record version and path sent twice to the same peer."""
    seen = Counter((src, dst, ad.record.record.agent_id, ad.version, ad.path)
                   for src, dst, up in sent for ad in up.advertise)
    return sum(n - 1 for n in seen.values())


def test_full_mesh_update_counts_and_no_ghosts(tmp_path: Path) -> None:
    net = full_mesh(tmp_path)
    try:
        links = len(GATEWAYS) * (len(GATEWAYS) - 1) // 2
        agents = [net.agent(f"agent{i}", GATEWAYS[i % 8]) for i in range(10)]
        for i, agent in enumerate(agents):
            net.log.clear()
            agent.register(net.now)
            net.pump()
            sent = updates(net)
            assert len(sent) <= 2 * links, i
            assert duplicates(sent) == 0
            assert all(agent.agent_id in net.gateways[g].core for g in GATEWAYS)
            net.advance(timer("MIN_ADVERTISEMENT_INTERVAL"))
        for i, agent in enumerate(agents):
            net.log.clear()
            agent.deregister(net.now)
            net.pump()
            sent = updates(net)
            assert len(sent) <= 2 * links, i
            assert duplicates(sent) == 0
            ghosts = [g for g in GATEWAYS if agent.agent_id in net.gateways[g].core]
            assert ghosts == [], i
        net.log.clear()
        net.advance(timer("DIGEST_INTERVAL") + 1)
        assert updates(net) == []                                   # nothing to repair
        assert all(len(net.gateways[g].core) == 0 for g in GATEWAYS)
        assert any(isinstance(s.msg, SyncAck) for s in net.log)
    finally:
        net.close()
