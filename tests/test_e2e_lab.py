"""Lab mode end to end (draft Section 9.4, issue 7 item 3): ``dmsc demo --transport udp``
and its cleartext capture, the explicit ``gateway.lab`` setting, and what a lab gateway
still checks (REGISTER's record signature, bound identities)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from dmscproto.agent import Agent, AgentError
from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.messages import (
    Discover,
    Error,
    Open,
    Refresh,
    Register,
    RegisterAck,
)
from dmscproto.codec.registry import ErrorCode, Scope
from dmscproto.codec.values import DiscoveryQuery
from dmscproto.host.config import ConfigError, GatewayConfig
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.runtime.lab import LabAssociations, LabGuard
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.transport import udp
from dmscproto.transport.datagram import DatagramNode

DMSC = [sys.executable, "-c", "import sys; from dmscproto.cli import main; sys.exit(main())"]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


@dataclass(frozen=True)
class Demo:
    stdout: str
    pcap: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``dmsc demo --transport udp --capture DIR``, run once for the module."""
    cap = tmp_path_factory.mktemp("cap")
    proc = subprocess.run([*DMSC, "demo", "--transport", "udp", "--quiet", "--capture",
                           str(cap)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LAB MODE" in proc.stdout and "LAB MODE" in proc.stderr  # said, and logged
    assert not (cap / "keys.log").exists()  # nothing to decrypt
    return Demo(proc.stdout, cap / "dmsc-demo.pcap")


def test_demo_over_udp_writes_a_cleartext_capture(demo: Demo) -> None:
    assert f"dmsc decode --pcap {demo.pcap} --any-port" in demo.stdout
    decoded = subprocess.run([*DMSC, "decode", "--pcap", str(demo.pcap), "--any-port"],
                             capture_output=True, text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    kinds = set(re.findall(r"\s([A-Z_]+)\s+txid=", decoded.stdout))
    assert {"OPEN", "DIGEST", "REGISTER", "REGISTER_ACK", "UPDATE", "DISCOVER",
            "DISCOVER_REPLY", "ROUTE_REQUEST", "ROUTE_REPLY", "DEREGISTER"} <= kinds
    assert b"sunny, 21 C" in demo.pcap.read_bytes()  # payloads in clear


def test_demo_prints_a_tshark_command_that_shows_it(demo: Demo) -> None:
    """The dissector's UDP heuristic finds DMSC on the demo's ephemeral ports: the
    printed command needs no decode-as option."""
    require_tool("tshark")
    line = next(x for x in demo.stdout.splitlines() if x.strip().startswith("tshark"))
    assert "-d" not in line.split()
    shown = subprocess.run(line.split(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "ROUTE_REQUEST" in shown.stdout and "REGISTER_ACK" in shown.stdout


def _config(tmp_path: Path, *, lab: bool) -> Path:
    return write_gateway_config(Domain.create(tmp_path, "a.example"), "gw", transport="udp",
                                lab=lab)


def test_udp_without_lab_is_a_configuration_error(tmp_path: Path) -> None:
    path = _config(tmp_path, lab=False)
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(path)
    assert err.value.key == "gateway.listen" and "gateway.lab = true" in err.value.reason
    check = subprocess.run([*DMSC, "gateway", "--config", str(path), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2
    assert "gateway.listen" in check.stderr and "lab mode" in check.stderr


@pytest.mark.parametrize(("old", "new", "key"), [
    ('require_tokens = false', 'require_tokens = true', "gateway.require_tokens"),
    ('[limits]', '[security]\nrequire_origin = true\n[limits]', "security.require_origin"),
    ('transport = "udp"', 'transport = "quic"', "gateway.lab"),
    ('lab = true', 'lab = "yes"', "gateway.lab"),
])
def test_lab_settings_that_cannot_hold(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = _config(tmp_path, lab=True)
    assert GatewayConfig.load(path).lab
    text = path.read_text()
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(path)
    assert err.value.key == key


def test_lab_gateway_checks_what_the_protocol_proves(tmp_path: Path) -> None:
    async def scenario() -> None:
        dom = Domain.create(tmp_path, "a.example")
        gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(
            dom, "gw", transport="udp", lab=True)))
        await gw.start()
        agents: list[Agent] = []
        try:
            assert isinstance(gw.guard, LabGuard)
            address = gw.addresses["udp"]

            def agent(name: str) -> Agent:
                ag = dom.agent(name, address, transport="udp", lab=True, reconnect=False)
                agents.append(ag)
                return ag

            with pytest.raises(ValueError, match="lab"):  # the agent must ask for it too
                await dom.agent("x", address, transport="udp").connect()
            mallory = agent("mallory")
            await mallory.connect()
            # bound to nobody yet: an unregistered lab sender may discover (and call,
            # echo, trace: test_lab_cli) but not refresh an agent it has not proved to be
            assert await mallory.discover(skills=["x"]) == []
            # a forged record signature is refused although nothing is authenticated
            signed = mallory.record(["x"])
            forged = replace(signed, signature=bytes(b ^ 1 for b in signed.signature))
            with pytest.raises(AgentError) as err:
                await mallory.register(signed=forged)
            assert err.value.status is ErrorCode.BAD_SIGNATURE
            assert mallory.agent_id not in gw.core  # type: ignore[operator]
            # a good one binds the association to that agent ...
            alice = agent("alice")
            await alice.register(["greet"])
            assert alice.agent_id in gw.core  # type: ignore[operator]
            assert [f.agent_id for f in await alice.discover(skills=["greet"])] \
                == [alice.agent_id]
            # ... and an association bound to one agent cannot REGISTER another's
            # (captured) record, nor REFRESH it
            bob = agent("bob")
            assert alice.signed is not None and bob.signed is None
            raw = await udp.connect(*address, lab=True)
            try:
                async def register(signed: SignedRecord, txid: int) -> RegisterAck:
                    ack = await raw.request(Register(
                        transaction_id=txid, record=signed, lease=60,
                        nonce=os.urandom(16), timestamp=int(time.time() * 1000)))
                    assert isinstance(ack, RegisterAck)
                    return ack

                assert (await register(bob.record(["y"]), 1)).status is ErrorCode.SUCCESS
                assert (await register(alice.signed, 2)).status is ErrorCode.IDENTITY_MISMATCH
                refresh = await raw.request(Refresh(
                    transaction_id=3, agent_id=alice.agent_id, lease=60, nonce=os.urandom(16),
                    timestamp=int(time.time() * 1000)))
                assert getattr(refresh, "status", None) is ErrorCode.IDENTITY_MISMATCH
            finally:
                raw.close()
            # an unregistered sender: no REFRESH, no record of another domain, no OPEN
            # naming a domain that is neither ours nor a configured peer's
            raw = await udp.connect(*address, lab=True)
            try:
                refresh = await raw.request(Refresh(
                    transaction_id=4, agent_id=alice.agent_id, lease=60, nonce=os.urandom(16),
                    timestamp=int(time.time() * 1000)))
                assert getattr(refresh, "status", None) is ErrorCode.IDENTITY_MISMATCH
                other = Domain.create(tmp_path, "b.example").agent(
                    "eve", address, transport="udp", lab=True)
                assert (await register(other.record(["x"]), 5)).status \
                    is ErrorCode.POLICY_DENIED
                refused = await asyncio.wait_for(raw.request(Open(
                    transaction_id=6, gateway_id=bytes(range(16)), domain="c.example",
                    hold_time=90, capabilities=0)), 5)  # answered at once (Section 6.4)
                assert isinstance(refused, Error) and refused.status is ErrorCode.POLICY_DENIED
            finally:
                raw.close()
        finally:
            await asyncio.gather(*(a.close() for a in agents))
            await gw.stop()

    run(scenario())


def test_dmsc_agent_takes_lab_mode_from_its_configuration(tmp_path: Path) -> None:
    """``dmsc agent --config`` builds a lab-mode agent only when the file says lab = true."""
    from dmscproto.cli import UsageError
    from dmscproto.cli import agent as agent_cli
    from dmscproto.sandbox.domains import Domain
    from dmscproto.security.ca import Kind

    domain = Domain.create(tmp_path, "a.example")
    cred = domain.issue("lab-agent", Kind.AGENT)
    text = (f'[agent]\ncertificate = "{cred[0]}"\nkey = "{cred[1]}"\n'
            f'trust_anchors = ["{domain.anchor}"]\ngateway = "127.0.0.1:4760"\n'
            'transport = "udp"\n')
    args = argparse.Namespace(config=tmp_path / "agent.toml", token=None, transport=None,
                              server_name=None, timeout=None)
    args.config.write_text(text + "lab = true\n", encoding="utf-8")
    agent, config = agent_cli.agent_of(args)
    assert config is not None and config.lab and agent.lab and agent.transport.name == "udp"
    args.config.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match="lab"):
        agent_cli.agent_of(args)


def test_lab_associations_bound_to_nobody_are_closed(tmp_path: Path) -> None:
    """Associations bound to nobody (unregistered lab senders) are closed at the gateway
    when too many or silent too long (Section 10.7): their state is gone from the
    runtime and from the transport; a registered agent's association stays."""
    async def scenario() -> None:
        dom = Domain.create(tmp_path, "a.example")
        gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(
            dom, "gw", transport="udp", lab=True)))
        await gw.start()
        gw.lab_associations = LabAssociations(max_unbound=2, unbound_timeout=0.4)
        alice = dom.agent("alice", gw.addresses["udp"], transport="udp", lab=True,
                          reconnect=False)
        raws = [await udp.connect(*gw.addresses["udp"], lab=True) for _ in range(3)]
        try:
            await alice.register(["greet"])
            for i, raw in enumerate(raws):
                answer = await raw.request(Discover(
                    transaction_id=i + 1, query=DiscoveryQuery(skills=("greet",)),
                    scope=Scope.LOCAL, max_results=1))
                assert getattr(answer, "status", None) is ErrorCode.SUCCESS  # unregistered
            await asyncio.sleep(0.05)
            assert len(gw.lab_associations) == 2  # the first was closed at once
            await asyncio.sleep(0.6)
            assert len(gw.lab_associations) == 0
            server = gw.servers["udp"]
            assert isinstance(server, DatagramNode)
            assert len(server.connections) == 1  # alice's
            assert [f.agent_id for f in await alice.discover(skills=["greet"])] == \
                [alice.agent_id]
        finally:
            for raw in raws:
                raw.close()
            await alice.close()
            await gw.stop()

    run(scenario())
