"""``dmsc demo --a2a``: the A2A bridge added to the two-domain demo (draft-dmsc-a2a-00).

Before weather leaves, the demo also runs, all real: a bridge in a.example serving over
HTTPS the agents it may call, tokens required; domain a's OAuth 2.0 token endpoint
(``dmscproto.security.token_server``); an A2A client on the a2a-sdk that gets a token
there, finds 'forecast' at the bridge's discovery endpoint, resolves weather's card and
calls it across both gateways; an A2A agent on the a2a-sdk server with a signed card,
imported into b.example as a bridged record and called by the DMSC client of a.example.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest

from ..agent import DiscoveryQuery
from ..sandbox.demo import DemoWorld, StepFailed
from ..security.authority_store import AuthorityStore, State
from ..security.ca import Kind
from ..security.token_server import request_token, serve
from ..security.tokens import ScopeSet
from .bridge import Bridge, TokenGate
from .http import HttpServer, Listen
from .proxy import Proxy
from .sample import SampleAgent

#: What the demo's A2A client may get tokens for.
CLIENT_SCOPE = "discover route"


def _authority(w: DemoWorld) -> AuthorityStore:
    """a.example's authority as a store (its token endpoint keeps state there)."""
    a = w.domains[0]
    store = AuthorityStore(a.directory, a.authority, State(crl_validity_s=3600))
    store.write_crl()
    return store


async def a2a_steps(w: DemoWorld) -> None:
    d, (a, b), (gw_a, gw_b) = w.display, w.domains, w.gateways
    tmp = w.tmp / "a2a"

    d.step("A2A bridge: a.example serves the agents it may call as A2A agents over HTTPS "
           "(draft-dmsc-a2a-00, Section 6)")
    store = _authority(w)
    tokens = serve(store)
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    w.stack.callback(tokens.server_close)
    w.stack.callback(tokens.shutdown)
    token_url = tokens.endpoint.url
    d.note(f"{d.ms()}  a.example's OAuth 2.0 token endpoint: {token_url}")
    bridge_agent = await w.new_agent(a, gw_a, "a2a-bridge")
    https = a.authority.issue("a2a-https", Kind.GATEWAY, dns_names=("localhost",),
                              ip_addresses=("127.0.0.1",))
    cert, key = https.save(tmp)
    assert key is not None
    bridge = Bridge(bridge_agent, "", gate=TokenGate(
        a.authority.certificate, bridge_uri=bridge_agent.uri, token_url=token_url))
    server = HttpServer(bridge.app, Listen("https", "127.0.0.1", 0, cert, key, a.anchor))
    await server.start()
    w.stack.push_async_callback(server.close)
    bridge.base_url = server.url
    d.note(f"{d.ms()}  {bridge_agent.uri} serves {server.url}/agents/DOMAIN/NAME "
           "(card at .../.well-known/agent-card.json, JSON-RPC at the base URL), discovery "
           f"at {server.url}/.well-known/agents; bearer tokens of a.example required")

    d.step("An A2A client (a2a-sdk) gets a token, finds 'forecast' at the bridge and "
           "resolves the card")
    client_cred = store.issue("a2a-client", Kind.AGENT, scope=ScopeSet.parse(CLIENT_SCOPE))
    got = await asyncio.to_thread(request_token, token_url, client_cred,
                                  a.authority.trust_store.pem())
    d.note(f"{d.ms()}  token for {client_cred.identity.uri}, scope {got.scope!r}, bound "
           "to its certificate (mutual TLS to the token endpoint)")
    tls = ssl.create_default_context(cafile=str(a.anchor))
    client_cert, client_key = client_cred.save(tmp)
    assert client_key is not None
    tls.load_cert_chain(client_cert, client_key)
    http = httpx.AsyncClient(verify=tls, headers={"Authorization": f"Bearer {got.access_token}"})
    w.stack.push_async_callback(http.aclose)
    listed = (await http.get(f"{server.url}/.well-known/agents",
                             params={"skill": "forecast"})).json()["agents"]
    if not listed:
        raise StepFailed("the bridge's discovery found no 'forecast'")
    for entry in listed:
        d.note(f"{d.ms()}  score {entry['score']}: {entry['agentUri']} card {entry['cardUrl']}")
    base = listed[0]["cardUrl"].removesuffix("/.well-known/agent-card.json")
    card = await A2ACardResolver(http, base).get_agent_card()
    scheme = card.security_schemes["dmsc-authority"].oauth2_security_scheme
    d.note(f"{d.ms()}  card {card.name!r} v{card.version}, skills "
           f"{[s.id for s in card.skills]}, interface {card.supported_interfaces[0].url}, "
           f"tokens from {scheme.flows.client_credentials.token_url}")

    d.step("The A2A client calls weather with SendMessage: a2a-client -> bridge -> gw-a -> "
           "gw-b -> weather")
    client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
    t = time.perf_counter()
    request = SendMessageRequest(message=Message(message_id="demo-1", role=Role.ROLE_USER,
                                                 parts=[Part(text="Paris")]))
    async for response in client.send_message(request):
        answer = [p.text for p in response.message.parts]
    if answer != ["sunny, 21 C"]:
        raise StepFailed(f"unexpected A2A answer {answer}")
    d.note(f"{d.ms()}  A2A answer {answer[0]!r} (a Message of role agent) after "
           f"{(time.perf_counter() - t) * 1e3:.1f} ms")

    d.step("An A2A agent (a2a-sdk server, signed card) is imported into b.example "
           "(Section 7)")
    echo = SampleAgent(sign=True)
    await echo.start()
    w.stack.push_async_callback(echo.close)
    fetcher = httpx.AsyncClient()
    w.stack.push_async_callback(fetcher.aclose)
    proxy = Proxy(await w.new_agent(b, gw_b, "a2a-echo"),
                  echo.url + "/.well-known/agent-card.json", fetcher, require_signature=True)
    await proxy.sync()
    signed = proxy.agent.signed
    assert signed is not None
    attrs = signed.record.attributes
    d.note(f"{d.ms()}  card {proxy.url}: JWS signature verified with the key of its jku; "
           f"registered as {proxy.agent.uri}, a2a.bridged={attrs['a2a.bridged']}, "
           f"a2a.card-sha256={str(attrs['a2a.card-sha256'])[:16]}...")
    core = gw_a.core
    assert core is not None
    deadline = time.monotonic() + 5
    while signed.record.agent_id not in core:
        if time.monotonic() > deadline:
            raise StepFailed("gw-a did not learn the bridged record")
        await asyncio.sleep(0.01)
    d.note(f"{d.ms()}  gw-a learned it from gw-b like any record")

    d.step("client (a.example, DMSC) calls the A2A agent: client -> gw-a -> gw-b -> "
           "a2a-echo -> A2A agent (JSON-RPC over HTTP)")
    t = time.perf_counter()
    reply = await w.agents["client"].call(DiscoveryQuery(skills=("echo",)), b"hello")
    if reply != b"A2A says: hello":
        raise StepFailed(f"unexpected answer {reply!r}")
    d.note(f"{d.ms()}  answer {reply.decode()!r} after {(time.perf_counter() - t) * 1e3:.1f}"
           " ms")
