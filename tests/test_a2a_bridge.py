"""The A2A bridge end to end with the real, unmodified a2a-sdk (draft-dmsc-a2a-00,
Sections 6 and 7): two domains, a gateway each over real QUIC, the SDK's client calling
a DMSC agent of the other domain through the bridge and both gateways, an SDK server
agent imported and called with ``dmsc agent --call`` from the other domain, and the
refusals (bad token, policy, forged card signature) with the mapped A2A errors."""

from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import A2ACardResolver, parse_agent_card
from a2a.client.errors import A2AClientError
from a2a.types import Message, Part, Role, SendMessageRequest
from a2a.utils.errors import ContentTypeNotSupportedError

from dmscproto.a2a.bridge import Bridge, TokenGate
from dmscproto.a2a.http import HttpServer, Listen
from dmscproto.a2a.proxy import Proxy
from dmscproto.a2a.sample import SampleAgent
from dmscproto.agent import Agent, AgentError, Request
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.values import Skill
from dmscproto.host.config import GatewayConfig
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.demo import run_demo
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import Credential, Kind
from dmscproto.security.tokens import ScopeSet, TokenIssuer

pytestmark = [pytest.mark.a2a, pytest.mark.security]
SCOPE = "register discover route"
DMSC = (sys.executable, "-c", "import sys; from dmscproto.cli import main; sys.exit(main())")
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@dataclass
class World:
    a: Domain
    b: Domain
    stack: AsyncExitStack
    #: each domain's gateway, by domain name
    gateway: dict[str, GatewayRuntime]

    async def agent(self, domain: Domain, name: str, skills: list[Skill] | None = None,
                    reply: bytes | None = None) -> Agent:
        gw = self.gateway[domain.name]
        agent = domain.agent(name, gw.address, scope=SCOPE)
        if reply is not None:
            agent.serve(lambda payload, request: reply + payload)
        await agent.connect()
        self.stack.push_async_callback(agent.close)
        if skills is not None:
            await agent.register(skills=skills, lease=60)
        return agent

    def client_identity(self, name: str, scope: str = "route discover"
                        ) -> tuple[Path, Path, str]:
        """An A2A client of domain a: certificate, key and access token (Section 6.3)."""
        cert, key = self.a.issue(name, Kind.AGENT)
        cred = Credential.load(cert, key)
        token = TokenIssuer(self.a.authority).issue(
            cred.certificate, cred.identity.uri, ScopeSet.parse(scope),
            now=time.time())
        return cert, key, token


@asynccontextmanager
async def world(tmp: Path, *, import_capabilities: list[str] | None = None
                ) -> AsyncIterator[World]:
    """Two domains requiring access tokens, gw-a dialling gw-b."""
    a, b = Domain.create(tmp, "a.example"), Domain.create(tmp, "b.example")
    async with AsyncExitStack() as stack:
        gws = []
        for dom, name, peer in ((b, "gw-b", PeerSpec(a)), (a, "gw-a", None)):
            if peer is None:
                peer = PeerSpec(b, gws[0].address)
            path = write_gateway_config(dom, name, peers=[peer], require_tokens=True)
            if import_capabilities is not None and dom is a:
                with path.open("a") as f:
                    f.write(f"[peers.import]\ncapabilities = {json.dumps(import_capabilities)}\n")
            gw = GatewayRuntime(GatewayConfig.load(path))
            await gw.start()
            stack.push_async_callback(gw.stop)
            gws.append(gw)
        await gws[1].wait_peers(10)
        yield World(a, b, stack, {"b.example": gws[0], "a.example": gws[1]})


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def text_request(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=Message(message_id="m1", role=Role.ROLE_USER,
                                              parts=[Part(text=text)]))


async def send(client: Any, text: str) -> Message:
    async for response in client.send_message(text_request(text)):
        assert response.HasField("message")
        return response.message  # type: ignore[no-any-return]
    raise AssertionError("no response")


def test_sdk_client_calls_dmsc_agent_across_two_gateways(tmp_path: Path) -> None:
    """Section 6: card, SendMessage -> ROUTE_REQUEST -> reply, discovery ranked as
    DISCOVER, bearer tokens bound to the client certificate, policy refusal."""
    async def scenario() -> None:
        async with world(tmp_path, import_capabilities=["forecast"]) as w:
            weather = await w.agent(w.b, "weather")
            traces: list[str | None] = []

            def forecast(payload: bytes, request: Request) -> bytes:
                traces.append(request.trace.traceparent if request.trace else None)
                return b"sunny in " + payload
            weather.serve(forecast)
            await weather.register([Skill("forecast", "Weather forecast",
                                          ("weather", "public"))])
            await w.agent(w.b, "translator", [Skill("translate", "English to French",
                                                    ("language", "public"))], b"?")
            bridge_agent = await w.agent(w.a, "a2a-bridge")
            https = w.a.authority.issue("bridge-https", Kind.GATEWAY,
                                        dns_names=("localhost",), ip_addresses=("127.0.0.1",))
            https_cert, https_key = https.save(tmp_path / "https")
            assert https_key is not None
            gate = TokenGate(w.a.authority.certificate, bridge_uri=bridge_agent.uri,
                             token_url="https://127.0.0.1:1/token")
            bridge = Bridge(bridge_agent, "", gate=gate)
            server = HttpServer(bridge.app, Listen("https", "127.0.0.1", 0, https_cert,
                                                   https_key, w.a.anchor))
            await server.start()
            w.stack.push_async_callback(server.close)
            bridge.base_url = server.url
            await until(lambda: _listed(bridge_agent, 2))

            cert, key, token = w.client_identity("a2a-client")
            tls = ssl.create_default_context(cafile=str(w.a.anchor))
            tls.load_cert_chain(cert, key)
            async with httpx.AsyncClient(verify=tls, headers={
                    "Authorization": f"Bearer {token}"}) as http:
                # the unmodified SDK resolves the served card and calls through it
                base = f"{server.url}/agents/b.example/weather"
                card = await A2ACardResolver(http, base).get_agent_card()
                client = await create_client(base, ClientConfig(httpx_client=http,
                                                                streaming=False))
                assert card.name == "weather" and card.skills[0].id == "forecast"
                flow = card.security_schemes["dmsc-authority"].oauth2_security_scheme.flows
                assert flow.client_credentials.token_url == "https://127.0.0.1:1/token"
                answer = await send(client, "Paris")
                assert [p.text for p in answer.parts] == ["sunny in Paris"]
                assert traces[-1] is not None  # a new trace when the client sent none
                # the client's W3C trace id reaches the agent (Section 6.2; each gateway
                # puts its own span id as the parent)
                parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                raw = await http.post(base, headers={"traceparent": parent}, json={
                    "jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": {
                        "message": {"messageId": "m3", "role": "ROLE_USER",
                                    "parts": [{"text": "Oslo"}]}}})
                assert raw.json()["result"]["message"]["parts"] == [{"text": "sunny in Oslo"}]
                received = traces[-1]
                assert received is not None and received.split("-")[1] == parent.split("-")[1]

                # discovery: listing and search, DISCOVER's order, cards the SDK parses
                listed = (await http.get(f"{server.url}/.well-known/agents",
                                         params={"tag": "weather"})).json()["agents"]
                assert listed[0]["agentUri"] == "dmsc://b.example/weather"
                assert parse_agent_card(listed[0]["card"]).name == "weather"
                found = (await http.post(f"{server.url}/agents/search",
                                         json={"skills": ["translate"]})).json()["agents"]
                assert [f["agentUri"] for f in found] == ["dmsc://b.example/translator"]
                assert [f["score"] for f in found] == [
                    f.score for f in await bridge_agent.discover(skills=["translate"])]

                # policy: gw-a's import policy lets a.example call only 'forecast' in b
                translator = await create_client(
                    f"{server.url}/agents/b.example/translator",
                    ClientConfig(httpx_client=http, streaming=False))
                with pytest.raises(A2AClientError, match="HTTP Error 403"):
                    await send(translator, "hello")
                # two parts: the weather agent takes one text part only
                with pytest.raises(ContentTypeNotSupportedError):
                    async for _ in client.send_message(SendMessageRequest(message=Message(
                            message_id="m2", role=Role.ROLE_USER,
                            parts=[Part(text="a"), Part(text="b")]))):
                        pass
                unknown = await http.get(f"{server.url}/agents/b.example/nobody"
                                         "/.well-known/agent-card.json")
                assert unknown.status_code == 404

            # a narrower discover scope sees less, as at a gateway (Section 6.3)
            cert, key, narrow = w.client_identity("narrow", "route discover:translate")
            tls = ssl.create_default_context(cafile=str(w.a.anchor))
            tls.load_cert_chain(cert, key)
            async with httpx.AsyncClient(verify=tls, headers={
                    "Authorization": f"Bearer {narrow}"}) as http:
                seen = (await http.get(f"{server.url}/.well-known/agents")).json()["agents"]
                assert [f["agentUri"] for f in seen] == ["dmsc://b.example/translator"]

            # bad tokens: none, forged, bound to another certificate: 401 invalid_token
            _, _, stolen = w.client_identity("other-client")
            for headers in ({}, {"Authorization": "Bearer not.a.token"},
                            {"Authorization": f"Bearer {stolen}"}):
                async with httpx.AsyncClient(verify=tls, headers=headers) as http:
                    bad = await create_client(card, ClientConfig(httpx_client=http,
                                                                  streaming=False))
                    with pytest.raises(A2AClientError, match="HTTP Error 401"):
                        await send(bad, "Paris")
                    r = await http.post(f"{server.url}/agents/b.example/weather",
                                        json={"jsonrpc": "2.0", "id": 1,
                                              "method": "SendMessage", "params": {}})
                    assert r.status_code == 401
                    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
                    assert r.json()["error"]["data"][0]["domain"] == "dmsc.arpa"
    run(scenario())


async def _listed(agent: Agent, n: int) -> bool:
    return len(await agent.discover(skills=[])) >= n


def test_sdk_agent_imported_and_called_from_another_domain(tmp_path: Path) -> None:
    """Section 7: a signed card verified and imported as a bridged record in b.example,
    called by ``dmsc agent --call`` in a.example; the card followed; a forged signature
    refused by ``dmsc a2a import`` with BAD_SIGNATURE."""
    async def scenario() -> None:
        async with world(tmp_path) as w:
            echo = SampleAgent(sign=True)
            await echo.start()
            w.stack.push_async_callback(echo.close)
            forged = SampleAgent(sign=True, forge=True)
            await forged.start()
            w.stack.push_async_callback(forged.close)
            http = httpx.AsyncClient()
            w.stack.push_async_callback(http.aclose)

            proxy = Proxy(await w.agent(w.b, "a2a-echo"), echo.url + "/.well-known/agent-card.json",
                          http, require_signature=True)
            assert await proxy.sync() == "registered" and proxy.signed
            record = proxy.agent.signed
            assert record is not None
            attrs = record.record.attributes
            assert attrs["a2a.bridged"] is True
            assert attrs["a2a.card-url"] == proxy.url and len(str(attrs["a2a.card-sha256"])) == 64

            caller = await w.agent(w.a, "caller")
            await until(lambda: _found(caller, "echo", 1))
            # a DMSC agent of the other domain calls it with the command line
            cert = w.a.directory / "caller.pem"
            token = w.a.directory / "caller.token"
            token.write_text(TokenIssuer(w.a.authority).issue(
                Credential.load(cert).certificate, caller.uri, ScopeSet.parse(SCOPE),
                now=time.time()))
            host, port = w.gateway["a.example"].address
            cli = await asyncio.create_subprocess_exec(
                *DMSC, "agent", "--cert", str(cert),
                "--key", str(w.a.directory / "caller.key"), "--ca", str(w.a.anchor),
                "--gateway", f"{host}:{port}", "--token", f"@{token}", "--call", "echo",
                "--payload", "hi from DMSC", "--timeout", "20",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
            out, err = await cli.communicate()
            assert cli.returncode == 0, err.decode()
            assert out.decode().strip().endswith("A2A says: hi from DMSC")
            # and through the SDK: the trace context and the record's modes carried
            assert await caller.call(record.record.agent_id, b"again") == b"A2A says: again"

            # the card changes: registered again; the card is gone: deregistered
            echo.update(version="1.1.0")
            assert await proxy.sync() == "registered"
            assert proxy.agent.signed is not None
            assert proxy.agent.signed.record.version == "1.1.0"
            assert await proxy.sync() == "unchanged"
            echo.gone = True
            assert await proxy.sync() == "deregistered"
            await until(lambda: _found(caller, "echo", 0))
            with pytest.raises(AgentError) as refused:
                await caller.call(record.record.agent_id, b"anyone?")
            assert refused.value.status in (ErrorCode.NO_ROUTE, ErrorCode.TARGET_UNREACHABLE)

            # a forged card signature is refused by `dmsc a2a import`: nothing registered
            cert, key = w.b.issue("a2a-forged", Kind.AGENT)
            token = w.b.directory / "a2a-forged.token"
            token.write_text(TokenIssuer(w.b.authority).issue(
                Credential.load(cert).certificate, "dmsc://b.example/a2a-forged",
                ScopeSet.parse(SCOPE), now=time.time()))
            host, port = w.gateway["b.example"].address
            identity = w.b.directory / "a2a-forged.toml"
            identity.write_text(
                f'[agent]\ncertificate = "{cert.name}"\nkey = "{key.name}"\n'
                f'trust_anchors = ["ca.pem"]\ngateway = "{host}:{port}"\n'
                f'token = "{token.name}"\n')
            importer = await asyncio.create_subprocess_exec(
                *DMSC, "a2a", "import", forged.url + "/.well-known/agent-card.json",
                "--agent", str(identity), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=ENV)
            out, err = await importer.communicate()
            assert importer.returncode == 1, (out, err)
            assert b"BAD_SIGNATURE" in err
            assert await caller.discover(skills=["echo"]) == []
    run(scenario())


async def _found(agent: Agent, skill: str, n: int) -> bool:
    return len(await agent.discover(skills=[skill])) == n



def test_demo_a2a_prints_the_calls_both_ways() -> None:
    """``dmsc demo --a2a`` (in process): every step succeeds, the A2A answers shown."""
    from dmscproto.a2a.demo import a2a_steps

    out = io.StringIO()
    assert asyncio.run(run_demo(out, quiet=True, extension=a2a_steps)) == 0, out.getvalue()
    text = out.getvalue()
    assert "A2A answer 'sunny, 21 C'" in text
    assert "answer 'A2A says: hello'" in text
    assert "JWS signature verified" in text
