"""Protocol machines benchmark: the sans-I/O gateway and agent machines in memory
(draft-dmsc-state-machines-00).

    python tools/bench/protocol.py [--agents N] [--calls C] [--queries Q]

Two gateways (``gw-a``, ``gw-b``, peered) and N agents, half homed at each, run in the
in-memory harness (:class:`dmscproto.testing.harness.Network`): every PDU is encoded and
decoded, registries are SQLite files in a temporary directory (``synchronous=FULL``).

1. ``register_per_s``: all agents register at once (REGISTER verified and committed,
   REGISTER_ACK, UPDATE to the peer, learned there).
2. ``route_per_s``: C routed calls, one at a time, from an agent at ``gw-a`` to one at
   ``gw-b`` and back: six PDUs and two relay transactions each.  Baseline,
   ``codec_route_per_s``: encoding and decoding the same six PDUs and nothing else;
   ``route_ratio`` = route_per_s / codec_route_per_s (the share of the time spent in the
   codec: the machines' own cost is the rest).
3. ``discover_per_s``: Q federated DISCOVERs through the node (one skill out of 20, ten
   results).  Baseline, ``core_discover_per_s``: the same queries on
   :meth:`GatewayCore.discover` directly; ``discover_ratio`` as above.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from dmscproto.codec import decode, encode
from dmscproto.codec.registry import Scope
from dmscproto.codec.values import DiscoveryQuery, Skill
from dmscproto.protocol.events import RequestCompleted, RouteRequestReceived
from dmscproto.testing.harness import Network

SKILLS = [f"skill{i}" for i in range(20)]


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    rng = random.Random(1)
    net = Network(directory)
    net.gateway("gw-a", "a.example")
    net.gateway("gw-b", "b.example")
    net.gateways["gw-a"].connect("gw-b", net.now)
    net.pump()
    agents = []
    for i in range(args.agents):
        home = "gw-a" if i % 2 == 0 else "gw-b"
        skill = rng.choice(SKILLS)
        agents.append(net.agent(f"agent{i}", home,
                                skills=(Skill(skill, skill.title(), ("t",)),)))

    t0 = time.perf_counter()
    for a in agents:
        a.register(net.now)
    net.pump()
    register_s = time.perf_counter() - t0
    assert all(len(net.gateways[g].core) == args.agents for g in ("gw-a", "gw-b"))

    callers, callees = agents[0::2], agents[1::2]
    net.log.clear()
    t0 = time.perf_counter()
    for n in range(args.calls):
        caller, callee = callers[n % len(callers)], callees[n % len(callees)]
        caller.route(b"x" * 64, net.now, target=callee.agent_id)
        net.pump()
        [req] = net.take(f"agent{agents.index(callee)}", RouteRequestReceived)
        callee.reply(req, b"y" * 64)
        net.pump()
    route_s = time.perf_counter() - t0
    pdus = [s.msg for s in net.log]
    assert len(pdus) == 6 * args.calls
    net.log.clear()
    for a in callers:
        net.take(f"agent{agents.index(a)}", RequestCompleted)

    t0 = time.perf_counter()
    for msg in pdus:
        decode(encode(msg))
    codec_s = time.perf_counter() - t0

    queries = [DiscoveryQuery(skills=(rng.choice(SKILLS),)) for _ in range(args.queries)]
    asker = agents[0]
    t0 = time.perf_counter()
    for q in queries:
        asker.discover(q, net.now, scope=Scope.FEDERATED, max_results=10)
        net.pump()
    discover_s = time.perf_counter() - t0
    core = net.gateways["gw-a"].core
    t0 = time.perf_counter()
    for q in queries:
        core.discover(q, Scope.FEDERATED, 10, net.now)
    core_s = time.perf_counter() - t0
    net.close()
    return {
        "agents": args.agents,
        "register_per_s": round(args.agents / register_s, 1),
        "route_per_s": round(args.calls / route_s, 1),
        "codec_route_per_s": round(args.calls / codec_s, 1),
        "route_ratio": round(codec_s / route_s, 3),
        "discover_per_s": round(args.queries / discover_s, 1),
        "core_discover_per_s": round(args.queries / core_s, 1),
        "discover_ratio": round(core_s / discover_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(args, Path(d))))


if __name__ == "__main__":
    main()
