"""The agent SDK's contract (issue 14): one error hierarchy, register() that replaces the
record under a lock, abandoned requests abandoned at both ends, local deadlines that
raise TimeoutError, and what an unconnected agent says; against a real gateway over
QUIC on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from transport_support import loop_turns

import dmscproto.agent as sdk
from dmscproto.agent import (
    AgentError,
    DeadlineExceeded,
    DmscError,
    ErrorCode,
    MissingExtra,
    NotConnected,
    Request,
    Scope,
    Trace,
    TransportError,
)
from dmscproto.codec import DecodeError, EncodeError, decode
from dmscproto.codec.messages import Deregister, DeregisterAck
from dmscproto.codec.signing import SignatureError
from dmscproto.gateway.store import StoreError
from dmscproto.host.config import ConfigError, GatewayConfig
from dmscproto.host.logs import FIELDS
from dmscproto.protocol.machine import ProtocolError
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import CertificateError
from dmscproto.security.errors import SecurityError
from dmscproto.security.token_server import TokenRequestError
from dmscproto.transport import connect


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


@asynccontextmanager
async def gateway(tmp: Path) -> AsyncIterator[tuple[Domain, GatewayRuntime]]:
    domain = Domain.create(tmp, "a.example")
    gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(domain, "gw")))
    await gw.start()
    try:
        yield domain, gw
    finally:
        await gw.stop()


async def slow(payload: bytes, request: Request) -> bytes:
    await asyncio.sleep(float(payload))
    return b"late"


def test_every_error_is_a_dmsc_error_with_a_code() -> None:
    for cls in (AgentError, TransportError, DecodeError, EncodeError, ProtocolError,
                SecurityError, CertificateError, SignatureError, TokenRequestError,
                ConfigError, StoreError, NotConnected, DeadlineExceeded, MissingExtra):
        assert issubclass(cls, DmscError), cls
    with pytest.raises(DmscError) as err:
        decode(b"\x02" + bytes(15))
    assert err.value.code is ErrorCode.UNSUPPORTED_VERSION and isinstance(err.value, ValueError)
    refused = AgentError(ErrorCode.NO_ROUTE, "no agent matches")
    assert refused.code is refused.status is ErrorCode.NO_ROUTE
    assert str(refused) == "NO_ROUTE: no agent matches"
    assert issubclass(DeadlineExceeded, TimeoutError)
    # what the README's "Writing an agent" names is importable from dmscproto.agent
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Writing an agent\n")[1].split("\n## ")[0]
    named = set(re.findall(r"`([A-Z][A-Za-z]+)[`(.]|\b([A-Z][a-z]+)\.[A-Z]", section))
    named = {name for pair in named for name in pair if name}
    others = {"AgentClient", "GatewayNode", "TimeoutError"}  # internals, a builtin
    assert Scope.FEDERATED and named - others <= set(sdk.__all__), named - set(sdk.__all__)


def test_an_unconnected_agent_says_so(tmp_path: Path) -> None:
    domain = Domain.create(tmp_path, "a.example")

    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        agent = domain.agent("lonely", ("127.0.0.1", port))
        assert agent.server_name is None  # an IP address: no name to check
        with pytest.raises(NotConnected, match="connect"):
            await agent.wait_closed()
        with pytest.raises(NotConnected, match="connect"):
            await agent.discover(skills=["x"])
        # nothing listens there: refused at once, with the address, not a bare timeout
        with pytest.raises(TransportError, match=f"127.0.0.1:{port}.*refused") as err:
            await asyncio.wait_for(agent.connect(), 3)
        assert err.value.code is ErrorCode.TARGET_UNREACHABLE
        with pytest.raises(NotConnected):  # a failed connect leaves nothing to wait for
            await agent.wait_closed()
    run(scenario())


def test_a_gateway_says_why_it_cannot_reach_a_peer(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        config = write_gateway_config(a, "gw", peers=[PeerSpec(b, ("127.0.0.1", port))])
        gw = GatewayRuntime(GatewayConfig.load(config))
        await gw.start()
        try:
            for _ in range(300):
                if any(r.getMessage() == "cannot reach peer" for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        finally:
            await gw.stop()
    with caplog.at_level(logging.WARNING, logger="dmsc.gateway"):
        run(scenario())
    [said, *_] = [getattr(r, FIELDS) for r in caplog.records
                  if r.getMessage() == "cannot reach peer"]
    assert said["peer"] == f"127.0.0.1:{port}" and "refused" in said["error"]


def test_register_again_replaces_the_record_and_concurrent_calls_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path) as (domain, gw), \
                domain.agent("shifty", gw.address) as agent, \
                domain.agent("seeker", gw.address) as seeker:
            await agent.register(skills=["one"])
            assert await agent.register(skills=["two"], description="changed") > 0
            [found] = await seeker.discover(skills=["two"])
            assert found.record.description == "changed"
            assert await seeker.discover(skills=["one"]) == []
            # two at once: both answered, and signed is the record registered last
            await asyncio.gather(agent.register(skills=["three"]),
                                 agent.register(skills=["four"]))
            assert agent.signed is not None
            assert [s.id for s in agent.signed.record.skills] == ["four"]
            [found] = await seeker.discover(skills=["four"])
            assert found.signed == agent.signed
    run(scenario())


def test_deadlines_raise_timeout_error_and_abandon_the_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path) as (domain, gw), \
                domain.agent("sloth", gw.address) as sloth, \
                domain.agent("caller", gw.address) as caller:
            sloth.serve(slow)
            await sloth.register(skills=["slow"])
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await caller.call(sloth.agent_id, b"10", timeout=0.3)
            assert loop.time() - started < 8  # the handler takes 10 s
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await caller.call(sloth.agent_id, b"10")
            # abandoned at both ends: no waiter, no machine transaction, no stream
            client, pump = caller._client, caller._pump
            assert client is not None and pump is not None
            assert not caller._waiters and len(client.requests) == 0
            assert not pump._outgoing
            assert await caller.call(sloth.agent_id, b"0", timeout=5) == b"late"
            trace = await caller.trace(sloth.agent_id, timeout=5)
            assert isinstance(trace, Trace) and trace.reached
            assert [h.name for h in trace.hops] == ["gw"]
    run(scenario())


def test_the_next_call_leaves_in_the_turn_the_answer_wakes_its_caller_in(
        tmp_path: Path) -> None:
    """Issue 18: a caller woken by its answer sends its next request in the event-loop
    turn it runs in (the session has the end of turn follow the task it wakes), not in
    one more pass of the loop."""
    async def scenario() -> None:
        async with gateway(tmp_path) as (domain, gw), \
                domain.agent("echo", gw.address) as responder, \
                domain.agent("caller", gw.address) as caller:
            responder.serve(lambda payload, request: payload)
            await responder.register(skills=["echo"])
            assert await caller.call(responder.agent_id, b"warm") == b"warm"
            now = loop_turns(asyncio.get_running_loop())
            conn = caller._conn
            assert conn is not None
            sent: list[int] = []
            transmit = conn.transmit

            def counted() -> None:
                sent.append(now())
                transmit()
            conn.transmit = counted  # type: ignore[method-assign]
            for i in range(5):
                woke, sent[:] = now(), []  # the turn the last answer woke this task in
                assert await caller.call(responder.agent_id, b"%d" % i) == b"%d" % i
                assert not i or sent[0] == woke, (i, woke, sent)
    run(scenario())


def test_a_coroutine_handlers_answer_leaves_in_the_turn_it_is_given_in(
        tmp_path: Path) -> None:
    """Issue 18: a handler that runs in a task (a coroutine function) and answers at its
    first step has its answer sent in that event-loop turn, not in one more pass of the
    loop."""
    async def scenario() -> None:
        async with gateway(tmp_path) as (domain, gw), \
                domain.agent("echo", gw.address) as responder, \
                domain.agent("caller", gw.address) as caller:
            now = loop_turns(asyncio.get_running_loop())
            answered: list[int] = []

            async def echo(payload: bytes, request: Request) -> bytes:
                answered.append(now())
                return payload
            responder.serve(echo)
            await responder.register(skills=["echo"])
            conn = responder._conn
            assert conn is not None
            sent: list[int] = []
            transmit = conn.transmit

            def counted() -> None:
                sent.append(now())
                transmit()
            conn.transmit = counted  # type: ignore[method-assign]
            for i in range(3):
                answered[:], sent[:] = [], []
                assert await caller.call(responder.agent_id, b"%d" % i) == b"%d" % i
                assert answered and answered[0] in sent, (i, answered, sent)
    run(scenario())


def test_handlers_of_every_shape_answer(tmp_path: Path) -> None:
    """A plain function's answer is made in the callback that delivered the request (no
    task); a coroutine, or an awaitable a plain function returns, in a task; a refusal
    is the answer's STATUS, anything else INTERNAL_ERROR."""
    def plain(payload: bytes, request: Request) -> Any:
        if payload == b"refuse":
            raise AgentError(ErrorCode.POLICY_DENIED, "not today")
        if payload == b"text":
            return "not bytes"
        return slow(b"0", request) if payload == b"later" else payload[::-1]

    async def scenario() -> None:
        async with gateway(tmp_path) as (domain, gw), \
                domain.agent("plain", gw.address) as served, \
                domain.agent("coro", gw.address) as coro, \
                domain.agent("caller", gw.address) as caller:
            spawned: list[str] = []

            def counted(agent: sdk.Agent) -> None:
                spawn = agent._spawn

                def spawn_counted(task: Coroutine[Any, Any, None]) -> None:
                    spawned.append(agent.uri)
                    spawn(task)
                agent._spawn = spawn_counted  # type: ignore[method-assign,assignment]
            counted(served)
            counted(coro)
            served.serve(plain)
            coro.serve(slow)
            await served.register(skills=["plain"])
            await coro.register(skills=["coro"])
            assert await caller.call(served.agent_id, b"abc") == b"cba"
            for payload, status in ((b"refuse", ErrorCode.POLICY_DENIED),
                                    (b"text", ErrorCode.INTERNAL_ERROR)):
                with pytest.raises(AgentError) as err:
                    await caller.call(served.agent_id, payload)
                assert err.value.status is status
            assert spawned == []  # all answered at once
            assert await caller.call(served.agent_id, b"later") == b"late"
            assert await caller.call(coro.agent_id, b"0") == b"late"
            assert spawned == [served.uri, coro.uri]
    run(scenario())


def test_a_registration_removed_from_another_connection_is_made_again(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path) as (domain, gw), \
                domain.agent("phoenix", gw.address) as phoenix:
            await phoenix.register(skills=["rise"])
            assert gw.core is not None and phoenix.agent_id in gw.core
            # another process holding the same identity sends DEREGISTER on its own
            other = await connect(*gw.address, phoenix.tls, expect_domain="a.example")
            try:
                ack = await other.request(Deregister(
                    transaction_id=7, agent_id=phoenix.agent_id, nonce=os.urandom(16),
                    timestamp=int(time.time() * 1000)))
                assert isinstance(ack, DeregisterAck) and ack.status is ErrorCode.SUCCESS
                # the gateway tells phoenix, which still serves: it registers again
                for _ in range(500):
                    if phoenix.agent_id in gw.core and phoenix.registered:
                        break
                    await asyncio.sleep(0.01)
                assert phoenix.agent_id in gw.core
            finally:
                other.close()
    run(scenario())


#: Run in a fresh interpreter where scapy is not installed (and pyOpenSSL, once what
#: aioquic imports of it is forgotten: aioquic itself needs it).
WITHOUT_EXTRAS = """
import asyncio, importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("OpenSSL", "scapy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
import dmscproto.agent, dmscproto.cli, dmscproto.runtime.gateway
from dmscproto.errors import MissingExtra
from dmscproto.host.transports import transport_named
sys.meta_path.insert(0, NotInstalled())
assert "scapy" not in sys.modules, "a plain agent imported scapy"
assert "dmscproto.transport.dtls" not in sys.modules, "a QUIC agent imported DTLS"
try:
    import dmscproto.analysis.scapy_dmsc
except MissingExtra as exc:
    print(exc)
for name in [m for m in sys.modules if m.partition(".")[0] == "OpenSSL"]:
    del sys.modules[name]
try:
    asyncio.run(transport_named("dtls").connect("127.0.0.1", 9, None))
except MissingExtra as exc:
    print(exc)
"""


def test_optional_extras_are_named_when_missing() -> None:
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "the scapy layer (dmscproto.analysis.scapy_dmsc) needs the scapy package: "
        "pip install 'dmscproto[analysis]'",
        "the dtls transport needs the pyOpenSSL package: pip install 'dmscproto[dtls]'"]
