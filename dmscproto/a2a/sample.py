"""A plain A2A agent built only with the a2a-sdk server (``DefaultRequestHandler``, an
``AgentExecutor``, the SDK's card and JSON-RPC routes), for ``dmsc demo --a2a``, the
tests and ``tools/bench/a2a.py``: what an A2A agent of someone else looks like to the
bridge.  It answers each message with one text part, ``prefix`` + the message's text,
and can sign its card (ES256, the SDK's signer) and publish the JWK Set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.utils.signing import ProtectedHeader, create_agent_card_signer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .http import HttpServer, Listen

JWKS_PATH = "/.well-known/jwks.json"


class PrefixExecutor(AgentExecutor):
    """Answers with a Message: ``prefix`` followed by the text of the request's parts."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        await event_queue.enqueue_event(new_text_message(self.prefix + text,
                                                         context_id=context.context_id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        return None


def sample_card(url: str, *, name: str = "Echo Agent", version: str = "1.0.0",
                skill: str = "echo") -> AgentCard:
    return AgentCard(
        name=name, description="Repeats what it is told, with a prefix", version=version,
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False, push_notifications=False),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id=skill, name="Echo", description="echoes text",
                           tags=["echo", "a2a"], examples=["hello"])])


@dataclass
class SampleAgent:
    """The agent on ``listen``: :meth:`start`, then :attr:`url` is its base URL (the card
    at ``url + /.well-known/agent-card.json``).  With ``sign``, its card is signed with a
    fresh P-256 key whose JWK Set is at :data:`JWKS_PATH` (and in :attr:`jwks`);
    ``forge`` signs with another key than the published one."""

    prefix: str = "A2A says: "
    sign: bool = False
    forge: bool = False
    name: str = "Echo Agent"
    skill: str = "echo"
    listen: Listen = field(default_factory=lambda: Listen("http", "127.0.0.1", 0))
    gone: bool = False  # the card answers 404 (the agent was taken down)
    version: str = "1.0.0"
    url: str = ""
    jwks: dict[str, object] = field(default_factory=dict)

    def _card(self) -> AgentCard:
        card = sample_card(self.url + "/", name=self.name, version=self.version,
                           skill=self.skill)
        if self.sign:
            key = ec.generate_private_key(ec.SECP256R1())
            published = ec.generate_private_key(ec.SECP256R1()) if self.forge else key
            jwk = json.loads(ECAlgorithm.to_jwk(published.public_key()))
            self.jwks = {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}
            header: ProtectedHeader = {"kid": "k1", "alg": "ES256",
                                       "jku": self.url + JWKS_PATH, "typ": "JOSE"}
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            card = create_agent_card_signer(pem, header)(card)
        return card

    async def start(self) -> None:
        card = sample_card("http://127.0.0.1/")  # the real URL once bound
        handler = DefaultRequestHandler(PrefixExecutor(self.prefix), InMemoryTaskStore(),
                                        card)

        async def card_route(request: Request) -> Response:
            if self.gone:
                return Response(status_code=404)
            served: Response = await card_get(request)
            return served

        async def jwks_route(request: Request) -> Response:
            return JSONResponse(self.jwks)

        routes = create_agent_card_routes(card)
        card_get = routes[0].endpoint
        app = Starlette(routes=[
            Route(routes[0].path, card_route, methods=["GET"]),
            Route(JWKS_PATH, jwks_route, methods=["GET"]),
            *create_jsonrpc_routes(handler, "/")])
        self.server = HttpServer(app, self.listen)
        await self.server.start()
        self.url = self.server.url
        self.card = card
        self.update()

    def update(self, **changes: object) -> None:
        """Change the card (e.g. ``version=...``), signing it again."""
        for k, v in changes.items():
            setattr(self, k, v)
        self.card.CopyFrom(self._card())

    async def close(self) -> None:
        await self.server.close()
