"""End to end over real QUIC on loopback: gateways started from TOML files, agents on the
SDK, real certificates and SQLite files (draft Sections 5, 6, 9.1, 10)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dmscproto.agent import Agent, AgentError, DiscoveryQuery, Request
from dmscproto.codec.messages import Error, Open, Register, RegisterAck
from dmscproto.codec.registry import ErrorCode, Scope
from dmscproto.gateway.core import GatewayCore
from dmscproto.host.config import GatewayConfig
from dmscproto.protocol.events import AgentRemoved, TransactionEnded
from dmscproto.runtime.gateway import GatewayRuntime, Observer
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import Credential, DomainAuthority, Kind, TrustStore
from dmscproto.transport import ConnectionClosed, connect
from dmscproto.transport.tls import TlsIdentity


def core(gw: GatewayRuntime) -> GatewayCore:
    assert gw.core is not None
    return gw.core


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@dataclass
class World:
    a: Domain
    b: Domain
    gw_a: GatewayRuntime
    gw_b: GatewayRuntime
    stack: AsyncExitStack
    events: list[object]
    transport: str = "quic"

    async def agent(self, domain: Domain, name: str, skills: list[str],
                    handler: Callable[[bytes, Request], bytes] | None = None,
                    lease: int = 60) -> Agent:
        gw = self.gw_a if domain is self.a else self.gw_b
        agent = domain.agent(name, gw.address, transport=self.transport)
        if handler is not None:
            agent.serve(handler)
        self.stack.push_async_callback(agent.close)
        await agent.register(skills=skills, lease=lease)
        return agent


async def start(path: Path, events: list[object] | None = None) -> GatewayRuntime:
    gw = GatewayRuntime(GatewayConfig.load(path),
                        observer=Observer(event=None if events is None else events.append))
    await gw.start()
    # relayed calls' ends are made only for an observer of events
    assert gw.node.ctx.report_ends is (events is not None)
    return gw


@asynccontextmanager
async def world(tmp: Path, *, min_lease: int = 30, transport: str = "quic"
                ) -> AsyncIterator[World]:
    """Two domains, gw-a dialling gw-b, session established."""
    a, b = Domain.create(tmp, "a.example"), Domain.create(tmp, "b.example")
    events: list[object] = []
    async with AsyncExitStack() as stack:
        gw_b = await start(write_gateway_config(b, "gw-b", peers=[PeerSpec(a)],
                                                min_lease=min_lease, transport=transport),
                           events)
        stack.push_async_callback(gw_b.stop)
        gw_a = await start(write_gateway_config(a, "gw-a", peers=[PeerSpec(b, gw_b.address)],
                                                min_lease=min_lease, transport=transport),
                           events)
        stack.push_async_callback(gw_a.stop)
        await gw_a.wait_peers(5)
        yield World(a, b, gw_a, gw_b, stack, events, transport)


def upper(payload: bytes, request: Request) -> bytes:
    return payload.upper()


@pytest.mark.parametrize("transport", ["quic", "dtls"])
def test_register_discover_and_route_local_and_across_domains(tmp_path: Path,
                                                              transport: str) -> None:
    async def scenario() -> None:
        async with world(tmp_path, transport=transport) as w:
            weather = await w.agent(w.b, "weather", ["forecast"], lambda p, r: b"sun in " + p)
            shout = await w.agent(w.a, "shout", ["upper"], upper)
            client = await w.agent(w.a, "client", ["chat"])
            assert weather.agent_id in core(w.gw_b)
            await until(lambda: weather.agent_id in core(w.gw_a))

            found = await client.discover(skills=["forecast"])
            assert [f.agent_uri for f in found] == ["dmsc://b.example/weather"]
            assert found[0].record.public_key  # the signed record itself came back
            assert await client.discover(skills=["forecast"], scope=Scope.LOCAL) == []
            assert await client.discover(skills=["nothing-like-this"]) == []

            assert await client.call(shout.agent_id, b"hi") == b"HI"           # local
            assert await client.call(found[0], b"Oslo") == b"sun in Oslo"     # cross-domain
            by_query = await client.call(DiscoveryQuery(skills=("forecast",)), b"Rome")
            assert by_query == b"sun in Rome"
            # the other direction: b's agent calls a's through gw-b -> gw-a
            assert await weather.call(shout.agent_id, b"back") == b"BACK"
            with pytest.raises(AgentError) as err:
                await client.call(bytes(16), b"?")
            assert err.value.status is ErrorCode.NO_ROUTE
            ended = [e.status for e in w.events if isinstance(e, TransactionEnded)]
            assert ended.count(ErrorCode.SUCCESS) >= 5 and ErrorCode.NO_ROUTE in ended
    run(scenario())


def test_handler_failure_is_reported_to_the_caller(tmp_path: Path) -> None:
    def broken(payload: bytes, request: Request) -> bytes:
        raise RuntimeError("boom")

    async def scenario() -> None:
        async with world(tmp_path) as w:
            bad = await w.agent(w.b, "bad", ["fail"], broken)
            client = await w.agent(w.a, "client", ["chat"])
            await until(lambda: bad.agent_id in core(w.gw_a))
            with pytest.raises(AgentError) as err:
                await client.call(bad.agent_id, b"x")
            assert err.value.status is ErrorCode.INTERNAL_ERROR
    run(scenario())


def test_client_of_untrusted_authority_is_refused_at_the_handshake(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with world(tmp_path) as w:
            rogue = DomainAuthority.create("a.example")  # same name, another key
            cred = rogue.issue("mallory", Kind.AGENT)
            # trusts the real gateway, presents a certificate the gateway cannot trust
            agent = Agent(cred, TrustStore.load([w.a.anchor]),
                          gateway=f"{w.gw_a.address[0]}:{w.gw_a.address[1]}")
            with pytest.raises(ConnectionClosed) as err:
                await agent.connect()
            assert err.value.code is ErrorCode.UNTRUSTED_CERTIFICATE
            assert len(core(w.gw_a)) == 0
    run(scenario())


def test_agent_of_another_domain_cannot_register(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with world(tmp_path) as w:
            # b's agent at a's gateway: TLS passes (gw-a trusts b's anchor for peering),
            # the gateway refuses agents of other domains before looking at the record
            cert, key = w.b.issue("stray", Kind.AGENT)
            stray = Agent.from_files(cert, key, [w.b.anchor, w.a.anchor], gateway="x:1")
            conn = await connect(*w.gw_a.address, stray.tls, server_name="localhost")
            try:
                ack = await conn.request(Register(
                    transaction_id=7, record=stray.record(["x"]), lease=60,
                    nonce=os.urandom(16), timestamp=int(time.time() * 1000)))
            finally:
                conn.close()
            # a refused OPEN is answered with ERROR at once (Section 6.4): its dialler's
            # transaction ends there, not at the transport's timeout
            cred = Credential.load(*w.b.issue("gw-x", Kind.GATEWAY))
            tls = TlsIdentity(cred, TrustStore.load([w.b.anchor, w.a.anchor]))
            conn = await connect(*w.gw_a.address, tls, server_name="localhost")
            try:
                refused = await asyncio.wait_for(conn.request(Open(
                    transaction_id=8, gateway_id=cred.identity.entity_id, domain="c.example",
                    hold_time=90, capabilities=0)), 3)
            finally:
                conn.close()
            assert isinstance(refused, Error) and refused.transaction_id == 8
            assert refused.status is ErrorCode.IDENTITY_MISMATCH
            assert isinstance(ack, RegisterAck)
            assert ack.transaction_id == 7 and ack.status is ErrorCode.POLICY_DENIED
            assert stray.agent_id not in core(w.gw_a)
    run(scenario())


def test_gateway_requiring_tokens_checks_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = Domain.create(tmp_path, "a.example")
        gw = await start(write_gateway_config(a, "gw", require_tokens=True))
        try:
            for name, scope, refusal in (("bare", None, ErrorCode.INVALID_TOKEN),
                                         ("nosy", "discover", ErrorCode.INSUFFICIENT_SCOPE)):
                agent = a.agent(name, gw.address, scope=scope)
                with pytest.raises(AgentError) as err:
                    await agent.register(skills=["x"])
                assert err.value.status is refusal
                await agent.close()
            good = a.agent("good", gw.address, scope="register discover route")
            await good.register(skills=["x"])
            assert [f.agent_id for f in await good.discover(skills=["x"])] == [good.agent_id]
            good.token = None  # the gateway wants one on DISCOVER too
            with pytest.raises(AgentError) as err:
                await good.discover(skills=["x"])
            assert err.value.status is ErrorCode.INVALID_TOKEN
            await good.close(deregister=False)
        finally:
            await gw.stop()
    run(scenario())


def test_restarted_gateway_keeps_its_registrations(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = Domain.create(tmp_path, "a.example")
        config = write_gateway_config(a, "gw")
        gw = await start(config)
        agent = a.agent("keeper", gw.address)
        await agent.register(skills=["archive"], lease=600)
        await agent.close(deregister=False)
        await gw.stop()

        again = await start(config)  # same TOML, same SQLite file
        try:
            assert agent.agent_id in core(again)
            stored = core(again).get(agent.agent_id)
            assert stored is not None and stored.origin is None
            assert stored.signed.record.agent_uri == agent.uri
            client = a.agent("client", again.address)
            await client.register(skills=["chat"])
            found = await client.discover(skills=["archive"])
            assert [f.agent_id for f in found] == [agent.agent_id]
            await client.close()
        finally:
            await again.stop()
    run(scenario())


def test_agent_reconnects_and_registers_again_after_a_gateway_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        a = Domain.create(tmp_path, "a.example")
        config = write_gateway_config(a, "gw", listen=("127.0.0.1", port))
        gw = await start(config)
        phoenix = a.agent("phoenix", gw.address)
        phoenix.serve(upper)
        await phoenix.register(skills=["rise"], lease=600)
        await gw.stop()
        again = await start(config)  # same address; phoenix's connection is gone
        client = a.agent("client", again.address, reconnect=False)
        try:
            await client.register(skills=["chat"])

            async def delivered() -> bool:
                try:
                    return await client.call(phoenix.agent_id, b"again") == b"AGAIN"
                except AgentError as exc:  # not reconnected yet: no association to it
                    assert exc.status is ErrorCode.TARGET_UNREACHABLE
                    return False
            deadline = time.monotonic() + 5
            while not await delivered():
                assert time.monotonic() < deadline, "phoenix did not come back"
                await asyncio.sleep(0.05)
            assert phoenix.registered
            said = [r.getMessage() for r in caplog.records
                    if r.name == "dmscproto.agent.sdk" and r.levelno >= logging.WARNING]
            assert said[:3] == [f"connection to {again.address[0]}:{port} lost; reconnecting",
                                f"reconnected to {again.address[0]}:{port}",
                                "registered dmsc://a.example/phoenix again"]
        finally:
            await client.close()
            await phoenix.close()
            await again.stop()
    run(scenario())


def test_peer_restart_redials_and_resyncs(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
        config_b = write_gateway_config(b, "gw-b", peers=[PeerSpec(a)],
                                        listen=("127.0.0.1", port), restart_grace=1.5)
        gw_b = await start(config_b)
        gw_a = await start(write_gateway_config(a, "gw-a", peers=[PeerSpec(b, gw_b.address)]))
        try:
            await gw_a.wait_peers(5)
            weather = b.agent("weather", gw_b.address)
            await weather.register(skills=["forecast"], lease=600)
            await weather.close(deregister=False)
            await until(lambda: weather.agent_id in core(gw_a))
            await gw_b.stop()  # gw-a loses the session and the routes through gw-b
            await until(lambda: weather.agent_id not in core(gw_a))
            gw_b = await start(config_b)  # same port, same store
            await gw_a.wait_peers(10)  # re-dialled
            # weather has not come back: its record is stored but withheld until the
            # restart grace ends (Section 6.1.2), then re-synced
            assert weather.agent_id in core(gw_b) and weather.agent_id not in core(gw_a)
            await until(lambda: weather.agent_id in core(gw_a), 10)
        finally:
            await gw_a.stop()
            await gw_b.stop()
    run(scenario())


def test_vanished_agent_expires_and_is_withdrawn(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with world(tmp_path, min_lease=1) as w:
            ghost = await w.agent(w.b, "ghost", ["haunt"], lease=1)
            client = await w.agent(w.a, "client", ["chat"], lease=60)
            await until(lambda: ghost.agent_id in core(w.gw_a))
            assert [f.agent_id for f in await client.discover(skills=["haunt"])] \
                == [ghost.agent_id]
            await ghost.close(deregister=False)  # gone without a word: no more REFRESH
            await until(lambda: ghost.agent_id not in core(w.gw_b), 4)
            removed = [e for e in w.events if isinstance(e, AgentRemoved)]
            assert [(e.withdrawn.agent_id, e.status) for e in removed] \
                == [(ghost.agent_id, ErrorCode.LEASE_EXPIRED)]
            await until(lambda: ghost.agent_id not in core(w.gw_a))
            assert await client.discover(skills=["haunt"]) == []
            assert client.agent_id in core(w.gw_a)
    run(scenario())


def test_lease_is_refreshed_by_the_sdk(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with world(tmp_path, min_lease=1) as w:
            agent = await w.agent(w.a, "steady", ["tick"], lease=1)
            stored = core(w.gw_a).get(agent.agent_id)
            assert stored is not None
            first = stored.expires_at
            await until(lambda: time.time() > first + 0.3, 3)  # past the first lease
            again = core(w.gw_a).get(agent.agent_id)
            assert again is not None and again.expires_at > first  # REFRESHed in time
    run(scenario())
