"""Security end to end over real QUIC on loopback (draft Section 10): `dmsc gateway`
runtimes started from TOML files with a [security] table (CRL sources, origin
assertions) and federation policy, agents on the SDK or raw connections with real
certificates.  Each attack ends in its registered code, stores nothing, and the gateway
then serves the next good request."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dmscproto.agent import Agent, AgentError, DiscoveryQuery, Request
from dmscproto.codec.messages import Message, Register, RegisterAck, RouteRequest
from dmscproto.codec.registry import ErrorCode
from dmscproto.gateway.core import ALREADY_REGISTERED, GatewayCore
from dmscproto.host.config import GatewayConfig
from dmscproto.protocol.events import ProtocolViolation
from dmscproto.runtime.gateway import GatewayRuntime, Observer
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import Credential, DomainAuthority, Kind, TrustStore
from dmscproto.security.revocation import Revocation, issue_crl, pem
from dmscproto.transport import ConnectionClosed, connect

pytestmark = pytest.mark.security


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def revoke(domain: Domain, *names: str, number: int) -> None:
    """Write ``crl.pem`` of ``domain`` listing the certificates ``<name>.pem``."""
    revoked = [Revocation(Credential.load(domain.directory / f"{n}.pem").certificate
                          .serial_number, Credential.load(domain.directory / f"{n}.pem")
                          .certificate.not_valid_before_utc) for n in names]
    (domain.directory / "crl.pem").write_bytes(pem(issue_crl(domain.authority, revoked,
                                                             number=number)))


@dataclass
class Site:
    a: Domain
    b: Domain
    gw_a: GatewayRuntime
    gw_b: GatewayRuntime
    stack: AsyncExitStack
    events: list[object]
    #: What gw-b received.
    at_b: list[Message]

    @property
    def core(self) -> GatewayCore:
        assert self.gw_a.core is not None
        return self.gw_a.core

    async def agent(self, domain: Domain, name: str, skills: list[str] | None = None,
                    reply: bytes | None = None) -> Agent:
        """An agent homed at its domain's gateway; registered with ``skills``."""
        gw = self.gw_a if domain is self.a else self.gw_b
        agent = domain.agent(name, gw.address, reconnect=False)
        if reply is not None:
            agent.serve(lambda _p, _r: reply)
        self.stack.push_async_callback(agent.close)
        if skills is not None:
            await agent.register(skills=skills)
        return agent

    def refused(self, code: ErrorCode) -> list[ProtocolViolation]:
        return [e for e in self.events if isinstance(e, ProtocolViolation)
                and e.status is code]


@asynccontextmanager
async def site(tmp: Path) -> AsyncIterator[Site]:
    """gw-b (b.example) and gw-a (a.example) peered; gw-a loads a.example's CRL (which
    revokes ``fired``) from a file and lets its agents call only b's ``translate``."""
    a, b = Domain.create(tmp, "a.example"), Domain.create(tmp, "b.example")
    a.issue("fired", Kind.AGENT)
    revoke(a, "fired", number=1)
    events: list[object] = []
    at_b: list[Message] = []
    async with AsyncExitStack() as stack:
        gw_b = GatewayRuntime(GatewayConfig.load(write_gateway_config(
            b, "gw-b", peers=[PeerSpec(a)])), observer=Observer(
                received=lambda _h, m: at_b.append(m)))
        await gw_b.start()
        stack.push_async_callback(gw_b.stop)
        path = write_gateway_config(a, "gw-a", peers=[PeerSpec(b, gw_b.address)])
        with path.open("a", encoding="utf-8") as f:  # to the [[peers]] entry of b, then
            f.write('[peers.import]\ncapabilities = ["translate"]\n\n'
                    '[security]\ncrl = ["crl.pem"]\n')
        gw_a = GatewayRuntime(GatewayConfig.load(path), observer=Observer(event=events.append))
        await gw_a.start()
        stack.push_async_callback(gw_a.stop)
        await gw_a.wait_peers(5)
        yield Site(a, b, gw_a, gw_b, stack, events, at_b)


def test_forged_record_signature_and_replayed_register(tmp_path: Path) -> None:
    """A REGISTER whose record signature is forged: BAD_SIGNATURE.  A REGISTER sent
    again: SUCCESS, "already registered"; its nonce with another record: REPLAY, the
    record unchanged.  Then fresh ones succeed."""
    async def scenario() -> None:
        async with site(tmp_path) as s:
            weather = await s.agent(s.a, "weather")
            conn = await connect(*s.gw_a.address, weather.tls, server_name="localhost")
            try:
                signed = weather.record(["forecast"])
                msg = Register(transaction_id=1, record=dataclasses.replace(
                    signed, signature=bytes(len(signed.signature))), lease=60,
                    nonce=os.urandom(16), timestamp=int(time.time() * 1000))
                ack = await conn.request(msg)
                assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.BAD_SIGNATURE
                assert ack.diagnostic and weather.agent_id not in s.core

                good = dataclasses.replace(msg, transaction_id=2, record=signed)
                ack = await conn.request(good)
                assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.SUCCESS
                held = s.core.get(weather.agent_id)
                assert held is not None
                # the same REGISTER again (its answer lost): answered as the first was
                ack = await conn.request(dataclasses.replace(good, transaction_id=3))
                assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.SUCCESS
                assert ack.diagnostic == ALREADY_REGISTERED
                # its nonce with another record: REPLAY, the record unchanged
                ack = await conn.request(dataclasses.replace(
                    good, transaction_id=5, record=weather.record(["forecast", "snow"])))
                assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.REPLAY
                again = s.core.get(weather.agent_id)
                assert again is not None and again.version == held.version
                ack = await conn.request(dataclasses.replace(
                    good, transaction_id=4, record=weather.record(["forecast", "rain"]),
                    nonce=os.urandom(16)))
                assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.SUCCESS
            finally:
                conn.close()
            assert s.refused(ErrorCode.BAD_SIGNATURE) and s.refused(ErrorCode.REPLAY)
    run(scenario())


def test_untrusted_ca_and_revoked_certificate(tmp_path: Path) -> None:
    """A certificate of another CA with our domain's name, and one our CRL (loaded from
    the [security] crl file) revokes, are refused at the handshake; revoking a live
    agent (CRL refreshed) refuses its next request; good agents are served throughout."""
    async def scenario() -> None:
        async with site(tmp_path) as s:
            rogue = DomainAuthority.create("a.example").issue("mallory", Kind.AGENT)
            for cred, code in (
                    (rogue, ErrorCode.UNTRUSTED_CERTIFICATE),
                    (Credential.load(s.a.directory / "fired.pem",
                                     s.a.directory / "fired.key"),
                     ErrorCode.CERTIFICATE_REVOKED)):
                agent = Agent(cred, TrustStore.load([s.a.anchor]), reconnect=False,
                              gateway=f"{s.gw_a.address[0]}:{s.gw_a.address[1]}")
                with pytest.raises(ConnectionClosed) as err:
                    await agent.connect()
                assert err.value.code is code
                assert len(s.core) == 0
            alice = await s.agent(s.a, "alice", ["chat"])
            assert alice.agent_id in s.core

            revoke(s.a, "fired", "alice", number=2)
            assert s.gw_a.crl is not None and await s.gw_a.crl.refresh() == {}
            with pytest.raises(AgentError) as refused:
                await alice.discover(skills=["chat"])
            assert refused.value.status is ErrorCode.CERTIFICATE_REVOKED
            assert s.refused(ErrorCode.CERTIFICATE_REVOKED)
            bob = await s.agent(s.a, "bob", ["chat"])
            assert bob.agent_id in {f.agent_id for f in await bob.discover(skills=["chat"])}
    run(scenario())


def test_cross_domain_call_not_allowed_by_policy(tmp_path: Path) -> None:
    """gw-a imports only b's ``translate``: a call to b's forecaster, by Agent ID or by
    query, is POLICY_DENIED and never reaches it; a call to the translator goes through
    with an origin assertion (no x5c: gw-a is the previous hop) that gw-b
    (require_origin, the default) verifies."""
    async def scenario() -> None:
        async with site(tmp_path) as s:
            reached: list[Request] = []
            weather = await s.agent(s.b, "weather", ["forecast"])

            def forecast(payload: bytes, request: Request) -> bytes:
                reached.append(request)
                return b"sun"

            weather.serve(forecast)
            await s.agent(s.b, "babel", ["translate"], reply=b"hallo")
            alice = await s.agent(s.a, "alice", ["chat"])
            for _ in range(500):
                if len(s.core) == 3:
                    break
                await asyncio.sleep(0.01)
            for target in (weather.agent_id, DiscoveryQuery(skills=("forecast",))):
                with pytest.raises(AgentError) as err:
                    await alice.call(target, b"Oslo")
                assert err.value.status is ErrorCode.POLICY_DENIED
            assert reached == []
            assert await alice.call(DiscoveryQuery(skills=("translate",)), b"hello") == \
                b"hallo"
            [relayed] = [m for m in s.at_b if isinstance(m, RouteRequest)]
            assert relayed.token is not None and relayed.token != alice.token
            head = relayed.token.split(b".")[0]
            header = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
            assert header["typ"] == "dmsc-origin+jwt" and "x5c" not in header
    run(scenario())
