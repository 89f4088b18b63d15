"""Every message in which an agent names itself is checked against the association's
identity, on every transport (draft-dmsc-protocol-00, Sections 5.2.1, 5.3.1, 9.4, 10.2;
issue 15, R2): SOURCE_AGENT of DISCOVER and ROUTE_REQUEST, AGENT_ID of REFRESH and
DEREGISTER, the record of REGISTER.  A real gateway process per transport (QUIC, DTLS,
lab UDP), agents on real associations."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from dmscproto.agent import Agent
from dmscproto.codec.messages import (
    Deregister,
    Discover,
    DiscoverReply,
    Message,
    Register,
    RegisterAck,
    RouteReply,
    RouteRequest,
)
from dmscproto.codec.registry import ErrorCode, Scope
from dmscproto.codec.values import DiscoveryQuery
from dmscproto.host.config import GatewayConfig
from dmscproto.host.transports import Connection
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.domains import Domain, write_gateway_config


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _raw(agent: Agent) -> Connection:
    """A second association with ``agent``'s certificate (unauthenticated in lab mode)."""
    return await agent.transport.connect(*agent.gateway, agent.tls, server_name="localhost",
                                         expect_domain=agent.identity.domain, lab=agent.lab)


def _status(answer: Message) -> ErrorCode:
    status = getattr(answer, "status", None)
    assert isinstance(status, ErrorCode), answer
    return status


@pytest.mark.parametrize("transport", ["quic", "dtls", "udp"])
def test_a_message_naming_another_agent_is_refused(tmp_path: Path, transport: str) -> None:
    lab = transport == "udp"

    async def scenario() -> None:
        dom = Domain.create(tmp_path, "a.example")
        gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(
            dom, "gw", transport=transport, lab=lab)))
        await gw.start()
        address = gw.addresses[transport]
        alice = dom.agent("alice", address, transport=transport, lab=lab, reconnect=False)
        bob = dom.agent("bob", address, transport=transport, lab=lab, reconnect=False)
        raw: Connection | None = None
        try:
            bob.serve(lambda payload, _request: b"bob: " + payload)
            await alice.register(["greet"])
            await bob.register(["echo"])
            raw = await _raw(alice)
            ack = await raw.request(Register(
                transaction_id=1, record=alice.record(["greet"]), lease=60,
                nonce=os.urandom(16), timestamp=int(time.time() * 1000)))
            assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.SUCCESS
            query = DiscoveryQuery(skills=("echo",))
            spoofed = await raw.request(Discover(
                transaction_id=2, query=query, scope=Scope.LOCAL, max_results=5,
                source_agent=bob.agent_id))
            assert isinstance(spoofed, DiscoverReply)
            assert spoofed.status is ErrorCode.IDENTITY_MISMATCH and not spoofed.results
            own = await raw.request(Discover(
                transaction_id=3, query=query, scope=Scope.LOCAL, max_results=5,
                source_agent=alice.agent_id))
            assert isinstance(own, DiscoverReply) and own.status is ErrorCode.SUCCESS
            assert [r.record.record.agent_id for r in own.results] == [bob.agent_id]
            call = RouteRequest(transaction_id=4, source_agent=bob.agent_id,
                                target_agent=alice.agent_id, hop_limit=8, path=(),
                                payload=b"hi")
            assert _status(await raw.request(call)) is ErrorCode.IDENTITY_MISMATCH
            answer = await raw.request(RouteRequest(
                transaction_id=5, source_agent=alice.agent_id, target_agent=bob.agent_id,
                hop_limit=8, path=(), payload=b"hi"))
            assert isinstance(answer, RouteReply) and answer.payload == b"bob: hi"
            gone = await raw.request(Deregister(
                transaction_id=6, agent_id=bob.agent_id, nonce=os.urandom(16),
                timestamp=int(time.time() * 1000)))
            assert _status(gone) is ErrorCode.IDENTITY_MISMATCH
            assert bob.agent_id in gw.core  # type: ignore[operator]
        finally:
            if raw is not None:
                raw.close()
            await asyncio.gather(alice.close(), bob.close())
            await gw.stop()

    run(scenario())
