"""Gateway sync converges whatever happens (draft-dmsc-protocol-00, 6.5-6.7;
draft-dmsc-state-machines-00, gateway sync).

Random runs on a triangle of gateways: agents register and deregister, links between
gateways are cut (UPDATEs lost, sessions closing on the hold timer) and healed, time
passes.  Afterwards, with every link healed, a hold time passed and every closed
session reopened, one DIGEST_INTERVAL and a bit must be enough for every gateway to
hold exactly the live registrations, each learned one on a loop-free path through an
established peer.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dmscproto.codec.registry import timer
from dmscproto.protocol.agent_registration import AgentState
from dmscproto.protocol.peering import PeerState
from dmscproto.testing.harness import Network

GATEWAYS = ("gw-a", "gw-b", "gw-c")
LINKS = [frozenset(p) for p in itertools.combinations(GATEWAYS, 2)]
AGENTS = {"x": "gw-a", "y": "gw-b", "z": "gw-c", "w": "gw-a"}

step = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(sorted(AGENTS))),
    st.tuples(st.just("deregister"), st.sampled_from(sorted(AGENTS))),
    st.tuples(st.just("cut"), st.integers(0, len(LINKS) - 1)),
    st.tuples(st.just("heal"), st.integers(0, len(LINKS) - 1)),
    st.tuples(st.just("advance"), st.integers(1, 120)),
)


def connect_all(net: Network) -> None:
    for a, b in itertools.combinations(GATEWAYS, 2):
        if b not in net.gateways[a].sessions and a not in net.gateways[b].sessions:
            net.gateways[a].connect(b, net.now)
    net.pump()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=20))
# A PURGE that reached gw-b through gw-c while gw-a's PURGE and its new ADVERTISE of the
# same version were lost: gw-b must ask gw-a again once their DIGESTs differ.
@example([("register", "w"), ("cut", 0), ("deregister", "w"), ("register", "w")])
def test_sync_converges(steps: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        net = Network(Path(d))
        try:
            run(net, steps)
        finally:
            net.close()


def run(net: Network, steps: list[tuple[str, object]]) -> None:
    for i, name in enumerate(GATEWAYS):
        net.gateway(name, f"{'abc'[i]}.example")
    for name, home in AGENTS.items():
        net.agent(name, home)
    connect_all(net)
    for kind, arg in steps:
        if kind == "register" and net.agents[str(arg)].registration.state is AgentState.IDLE:
            net.agents[str(arg)].register(net.now)
        elif kind == "deregister" and \
                net.agents[str(arg)].registration.state is AgentState.REGISTERED:
            net.agents[str(arg)].deregister(net.now)
        elif kind == "cut":
            net.cut.add(LINKS[int(str(arg))])
        elif kind == "heal":
            net.cut.discard(LINKS[int(str(arg))])
        elif kind == "advance":
            net.advance(int(str(arg)))
        net.pump()
    net.cut.clear()
    net.advance(timer("HOLD_TIME") + 1)  # sessions that lost a hold time's worth close
    connect_all(net)
    net.advance(timer("DIGEST_INTERVAL") + 5)  # one DIGEST_INTERVAL and a bit

    live = {net.agents[n].agent_id for n in AGENTS
            if net.agents[n].registration.state is AgentState.REGISTERED}
    peers = {net.gateway_id(g): g for g in GATEWAYS}
    for g in GATEWAYS:
        node = net.gateways[g]
        assert {s.state for s in node.sessions.values()} == {PeerState.ESTABLISHED}
        assert set(node.core.agent_ids()) == live, g
        for aid in node.core.agent_ids():
            for route in node.core.routes.routes(aid):
                assert node.core.gateway_id not in route.path
                if route.next_hop is not None:
                    assert peers[route.next_hop] in node.sessions
