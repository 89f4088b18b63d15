"""Surviving loss, duplication and reordering (draft-dmsc-protocol-00, Sections 9.1-9.3;
draft-dmsc-state-machines-00, gateway sync).

Two gateway runtimes in two domains and four agents, every path (agent to gateway and
gateway to gateway) through an impairment relay losing 10% of the datagrams and
duplicating and reordering 10%.  Agents on DTLS 1.2 (their gateways listening on DTLS
and QUIC, peering over QUIC) or on QUIC: every registration, discovery and routed call
completes, and no request has a second side effect.  ``dmsc demo --loss 0.1`` succeeds
over both transports.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from dmscproto.agent import Agent, DiscoveryQuery, Request
from dmscproto.codec.registry import Scope
from dmscproto.host.config import GatewayConfig
from dmscproto.protocol.events import AgentRegistered
from dmscproto.runtime.gateway import GatewayRuntime, Observer
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.sandbox.relay import Impairment, Relay

SERVERS = 3
ROUNDS = 4


def impairment(seed: int) -> Impairment:
    return Impairment(loss=0.1, duplicate=0.1, reorder=0.1, delay_ms=1, jitter_ms=1,
                      reorder_gap_ms=10, seed=seed)


async def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def scenario(tmp: Path, transport: str) -> None:
    a, b = Domain.create(tmp, "a.example"), Domain.create(tmp, "b.example")
    listeners = ("quic",) if transport == "quic" else ("quic", transport)
    relays: dict[tuple[str, str], Relay] = {}
    registered: list[bytes] = []

    def on_event(event: object) -> None:
        if isinstance(event, AgentRegistered):
            registered.append(event.agent_id)

    async with AsyncExitStack() as stack:
        async def start(path: Path) -> GatewayRuntime:
            gw = GatewayRuntime(GatewayConfig.load(path), observer=Observer(event=on_event))
            await gw.start()
            stack.push_async_callback(gw.stop)
            for name, address in gw.addresses.items():
                relay = await Relay.start(("127.0.0.1", 0), address, impairment(len(relays)))
                stack.callback(relay.close)
                relays[gw.name, name] = relay
            return gw

        await start(write_gateway_config(b, "gw-b", peers=[PeerSpec(a)], transport=listeners))
        gw_a = await start(write_gateway_config(
            a, "gw-a", peers=[PeerSpec(b, relays["gw-b", "quic"].address, transport="quic")],
            transport=listeners))
        await gw_a.wait_peers(30)

        async def agent(dom: Domain, gw: str, name: str) -> Agent:
            ag = dom.agent(name, relays[gw, transport].address, transport=transport)
            stack.push_async_callback(ag.close)
            await ag.connect(attempts=5)
            await ag.register(skills=["work"] if gw == "gw-b" else ["chat"], lease=60)
            return ag

        invoked: Counter[str] = Counter()

        def handler(name: str) -> Callable[[bytes, Request], bytes]:
            def handle(payload: bytes, request: Request) -> bytes:
                invoked[name] += 1
                return name.encode() + b":" + payload
            return handle

        servers = {}
        for i in range(SERVERS):
            ag = await agent(b, "gw-b", f"s{i}")
            ag.serve(handler(f"s{i}"))
            servers[ag.agent_id] = f"s{i}"
        client = await agent(a, "gw-a", "client")
        core_a = gw_a.core
        assert core_a is not None
        await until(lambda: all(i in core_a for i in servers), 30)

        found = await client.discover(skills=["work"], scope=Scope.FEDERATED)
        assert {f.agent_id for f in found} == set(servers)
        calls: Counter[str] = Counter()
        for n in range(ROUNDS):
            for f in found:
                name = servers[f.agent_id]
                assert await client.call(f, b"%d" % n) == f"{name}:{n}".encode()
                calls[name] += 1
            answer = await client.call(DiscoveryQuery(skills=("work",)), b"q")
            name, _, payload = answer.decode().partition(":")
            assert payload == "q" and name in invoked
            calls[name] += 1
        await until(lambda: all(r.idle for r in relays.values()), 5)  # stray copies land
        assert invoked == calls  # no duplicated side effect
        assert sorted(registered) == sorted([*servers, client.agent_id])  # one each
        counters = [c for r in relays.values() for c in (r.counters.up, r.counters.down)]
        assert sum(c.dropped for c in counters) > 0
        assert sum(c.duplicated for c in counters) > 0
        assert sum(c.reordered for c in counters) > 0


@pytest.mark.parametrize("transport", ["dtls", "quic"])
def test_every_request_completes_once_at_ten_percent_loss(tmp_path: Path,
                                                          transport: str) -> None:
    asyncio.run(scenario(tmp_path, transport))


@pytest.mark.parametrize("transport", ["dtls", "quic"])
def test_demo_succeeds_at_ten_percent_loss(transport: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from dmscproto.cli import main; sys.exit(main())",
         "demo", "--transport", transport, "--loss", "0.1", "--seed", "1", "--quiet"],
        capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"All \d+ steps succeeded", out)
    assert "10% loss, 5% duplicated, 5% reordered (seed 1)" in out
    assert len(re.findall(r"listener is reached through a relay", out)) == \
        (4 if transport == "dtls" else 2)
