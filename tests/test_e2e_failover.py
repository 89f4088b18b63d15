"""Failure detection, healing and fail-fast over real QUIC on loopback (draft-dmsc-protocol-00,
Sections 6.4 and 6.7): two gateways started from TOML files with a 3 s hold time and a
1 s keepalive, gw-a dialling gw-b through the impairment relay, which cuts the link
(every datagram lost) and restores it."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from dmscproto.agent import AgentError, Request
from dmscproto.codec.registry import ErrorCode
from dmscproto.host.config import GatewayConfig
from dmscproto.protocol.events import SessionClosed, SessionEstablished
from dmscproto.protocol.peering import PeerState
from dmscproto.runtime.gateway import GatewayRuntime, Observer
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.sandbox.relay import Impairment, Relay

HOLD, KEEPALIVE = 3, 1.0
CUT = Impairment(loss=1.0)


async def until(check: object, timeout: float) -> float:
    """Wait until ``check()`` holds; the seconds it took."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "condition not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def echo(payload: bytes, request: Request) -> bytes:
    return payload


def test_partition_is_detected_calls_fail_fast_and_the_session_heals(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
        events: dict[str, list[object]] = {"gw-a": [], "gw-b": []}
        async with AsyncExitStack() as stack:
            gw_b = GatewayRuntime(GatewayConfig.load(write_gateway_config(
                b, "gw-b", peers=[PeerSpec(a)], hold_time=HOLD, keepalive=KEEPALIVE)),
                observer=Observer(event=events["gw-b"].append))
            await gw_b.start()
            stack.push_async_callback(gw_b.stop)
            relay = await Relay.start(("127.0.0.1", 0), gw_b.address)
            stack.callback(relay.close)
            gw_a = GatewayRuntime(GatewayConfig.load(write_gateway_config(
                a, "gw-a", peers=[PeerSpec(b, relay.address)], hold_time=HOLD,
                keepalive=KEEPALIVE)), observer=Observer(event=events["gw-a"].append))
            await gw_a.start()
            stack.push_async_callback(gw_a.stop)
            await gw_a.wait_peers(5)
            [est] = [e for e in events["gw-a"] if isinstance(e, SessionEstablished)]
            assert (est.hold_time, est.keepalive) == (HOLD, KEEPALIVE)

            server = b.agent("server", gw_b.address)
            server.serve(echo)
            client = a.agent("client", gw_a.address)
            for agent in (server, client):
                stack.push_async_callback(agent.close)
                await agent.register(skills=["echo"], lease=60)
            assert gw_a.core is not None
            await until(lambda: server.agent_id in gw_a.core, 5)  # type: ignore[operator]
            assert await client.call(server.agent_id, b"hi") == b"hi"

            # Cut: nothing crosses the relay.  A call already on its way fails well
            # before the hold time (Section 6.1.1): gw-a probes gw-b while the call waits
            # on it, and closes the session when the probe goes unanswered (3/4 of the
            # keepalive interval), which answers the pending transaction.
            relay.impairment = CUT
            cut_at = time.monotonic()
            with pytest.raises(AgentError) as err:
                await client.call(server.agent_id, b"lost")
            waited = time.monotonic() - cut_at
            assert err.value.status is ErrorCode.TARGET_UNREACHABLE
            assert waited < HOLD - 1, waited
            for name in ("gw-a", "gw-b"):
                await until(lambda n=name: any(  # type: ignore[misc]
                    isinstance(e, SessionClosed) and e.status is ErrorCode.HOLD_TIMER_EXPIRED
                    for e in events[n]), HOLD + 2)
            # The route through gw-b is gone: the next call fails at once.
            assert server.agent_id not in gw_a.core
            started = time.monotonic()
            with pytest.raises(AgentError) as err:
                await client.call(server.agent_id, b"gone")
            assert err.value.status is ErrorCode.NO_ROUTE
            assert time.monotonic() - started < 1.0

            # Heal: gw-a closed its connection and dials again with backoff; the
            # session comes back and gw-a learns gw-b's records again.
            await asyncio.sleep(1.0)
            relay.impairment = Impairment()
            healed = await until(lambda: server.agent_id in gw_a.core,  # type: ignore[operator]
                                 12)
            assert len([e for e in events["gw-a"] if isinstance(e, SessionEstablished)]) == 2
            assert await client.call(server.agent_id, b"back") == b"back"
            print(f"detected and failed fast after {waited:.2f} s, healed in {healed:.2f} s")
    asyncio.run(asyncio.wait_for(scenario(), 40))


def test_agent_notices_a_silent_gateway_and_reconnects(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = Domain.create(tmp_path, "a.example")
        async with AsyncExitStack() as stack:
            gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(a, "gw-a")))
            await gw.start()
            stack.push_async_callback(gw.stop)
            relay = await Relay.start(("127.0.0.1", 0), gw.address)
            stack.callback(relay.close)
            agent = a.agent("alice", relay.address, keepalive=0.5)
            stack.push_async_callback(agent.close)
            await agent.register(skills=["echo"], lease=60)
            first = agent._conn
            assert first is not None
            relay.impairment = CUT
            lost = await until(lambda: first.closed, 5.0)
            assert 1.0 < lost < 4.0, lost  # three intervals of 0.5 s, not the idle timeout
            relay.impairment = Impairment()
            await until(lambda: agent._conn is not first and agent.registered, 10)
            assert await agent.echo() >= 0
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_gateways_that_dial_each_other_keep_one_session(tmp_path: Path) -> None:
    """Section 6.1.1: gw-a and gw-b each have the other's address.  gw-b's dial wins; gw-a's
    OPEN over its own connection is refused (a session exists on another association),
    and gw-a then counts the peer as established and dials no more while that session
    runs (it used to dial again and again with backoff, each refused); once the session
    ends, they dial again and one session comes back."""
    async def scenario() -> None:
        a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
        events: list[object] = []
        async with AsyncExitStack() as stack:
            relay = await Relay.start(("127.0.0.1", 0), ("127.0.0.1", 9))  # to gw-b, soon
            stack.callback(relay.close)
            gws: list[GatewayRuntime] = []
            for dom, name, other in ((a, "gw-a", b), (b, "gw-b", a)):
                address = gws[0].address if gws else relay.address
                gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(
                    dom, name, peers=[PeerSpec(other, address)], hold_time=HOLD,
                    keepalive=KEEPALIVE)), observer=Observer(event=events.append))
                await gw.start()
                stack.push_async_callback(gw.stop)
                gws.append(gw)
            gw_a, gw_b = gws
            relay.upstream = gw_b.address

            def sessions(gw: GatewayRuntime) -> int:
                assert gw.node is not None
                return sum(s.state is PeerState.ESTABLISHED for s in gw.node.sessions.values())

            def refused() -> int:
                return sum(isinstance(e, SessionClosed) and e.status is ErrorCode.POLICY_DENIED
                           for e in events)

            for gw in gws:
                await gw.wait_peers(10)
            before = refused()
            await asyncio.sleep(3)  # redials every 0.5, 1, 2 s would be refused
            assert refused() == before and (sessions(gw_a), sessions(gw_b)) == (1, 1)
            assert gw_b.node is not None and gw_b.pump is not None
            [handle] = gw_b.node.sessions
            gw_b.pump.call(gw_b.node.disconnect, handle, gw_b.pump.now())
            await until(lambda: (sessions(gw_a), sessions(gw_b)) == (0, 0), 5)
            await until(lambda: (sessions(gw_a), sessions(gw_b)) == (1, 1), 10)
            for gw in gws:
                await gw.wait_peers(5)
    asyncio.run(asyncio.wait_for(scenario(), 40))
