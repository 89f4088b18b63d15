"""The serving side of the A2A bridge (draft-dmsc-a2a-00, Section 6): for every agent the
bridge's identity can see and call, an Agent Card and a JSON-RPC endpoint; SendMessage
becomes a ROUTE_REQUEST; a discovery endpoint answers cards ranked as DISCOVER ranks.

The bridge is a DMSC :class:`~dmscproto.agent.Agent` of its domain: the gateways apply
their policies to its identity.  With a :class:`TokenGate` it checks each A2A client's
bearer token as a gateway checks an agent's (Section 6.3).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from a2a.types import SendMessageRequest, SendMessageResponse
from cryptography import x509
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..agent import Agent, AgentError, Found
from ..codec.registry import ErrorCode, Scope
from ..codec.values import DiscoveryQuery, TraceContext
from ..errors import DeadlineExceeded, DmscError
from ..security.errors import SecurityError
from ..security.tokens import AccessToken, Operation, TokenVerifier
from . import mapping as m
from .http import client_certificate

log = logging.getLogger(__name__)

#: Records asked for when listing the agents to serve (the MAX_RESULTS of the DISCOVER).
LISTING_MAX = 200
#: Seconds between listings; a card asked for that is not listed triggers one at most
#: this often.
LISTING_REFRESH = 5.0
#: Default deadline of a bridged call (seconds), sent as the TIMEOUT TLV.
CALL_TIMEOUT = 10.0
WELL_KNOWN_CARD = "/.well-known/agent-card.json"
#: ErrorInfo domain of the DMSC errors the bridge reports (Section 5.1).
ERROR_DOMAIN = "dmsc.arpa"


class Refused(Exception):
    """A request the bridge answers with the A2A form of a DMSC error (Section 5.1)."""

    def __init__(self, code: ErrorCode, message: str, rpc_code: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        #: The JSON-RPC error code when it is not the mapping's (InvalidAgentResponse).
        self.rpc_code = rpc_code


class TokenGate:
    """Section 6.3: bearer tokens checked as a gateway checks ACCESS_TOKEN, bound to the
    TLS client certificate (``cnf``)."""

    def __init__(self, authority: x509.Certificate, *, bridge_uri: str | None = None,
                 token_url: str) -> None:
        self.verifier = TokenVerifier(authority, gateway_uri=bridge_uri)
        self.access = m.Access(token_url)

    def check(self, request: Request, op: Operation,
              capabilities: Sequence[str] = ()) -> AccessToken:
        """The request's verified token, granting ``op`` on ``capabilities``."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(ErrorCode.INVALID_TOKEN, "a Bearer access token is required")
        try:
            return self.verifier.verify(token.strip(), peer_certificate=client_certificate(
                request.scope), now=time.time(), operation=op, capabilities=capabilities)
        except SecurityError as exc:
            raise Refused(exc.code, exc.reason) from None


def error_info(code: ErrorCode, message: str, rpc_code: int | None = None) -> dict[str, Any]:
    """The JSON-RPC ``error`` member for DMSC error ``code`` (Section 5.1)."""
    return {"code": rpc_code or m.dmsc_to_a2a(code).rpc_code or m.INTERNAL,
            "message": message,
            "data": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                      "reason": code.name, "domain": ERROR_DOMAIN,
                      "metadata": {"code": f"{int(code):#06x}"}}]}


def _rpc_error(rpc_id: Any, code: int, message: str, status: int = 200,
               headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": rpc_id,
                         "error": {"code": code, "message": message}}, status, headers)


def refusal(rpc_id: Any, exc: Refused) -> JSONResponse:
    """The HTTP answer to a refused request: an HTTP status (401, 403, 429) or HTTP 200
    with a JSON-RPC error, either way with the ErrorInfo body (Section 5.1)."""
    failure = m.dmsc_to_a2a(exc.code)
    headers = {}
    if failure.http_status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{failure.bearer_error}"'
    elif failure.bearer_error is not None:
        headers["WWW-Authenticate"] = f'Bearer error="{failure.bearer_error}", scope="route"'
    return JSONResponse({"jsonrpc": "2.0", "id": rpc_id,
                         "error": error_info(exc.code, exc.message, exc.rpc_code)},
                        200 if exc.rpc_code else failure.http_status, headers)


def trace_of(request: Request) -> TraceContext:
    """Section 6.2: the W3C trace context of the HTTP request, or a new trace."""
    parent = request.headers.get("traceparent")
    if parent:
        return TraceContext(parent, request.headers.get("tracestate"))
    return TraceContext(f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")


@dataclass(slots=True)
class _Listing:
    by_uri: dict[str, Found]
    at: float


class Bridge:
    """The ASGI app serving ``agent``'s view of the federation at ``base_url`` (the
    origin A2A clients reach the bridge at)."""

    def __init__(self, agent: Agent, base_url: str, *, gate: TokenGate | None = None,
                 timeout: float = CALL_TIMEOUT, refresh: float = LISTING_REFRESH) -> None:
        self.agent, self.base_url, self.gate = agent, base_url.rstrip("/"), gate
        self.timeout, self.refresh = timeout, refresh
        self._listing = _Listing({}, float("-inf"))
        self._relisting = asyncio.Lock()
        self.app = Starlette(routes=[
            Route("/agents/{domain}/{name}" + WELL_KNOWN_CARD, self._card, methods=["GET"]),
            Route("/agents/{domain}/{name}", self._rpc, methods=["POST"]),
            Route("/.well-known/agents", self._list, methods=["GET"]),
            Route("/agents/search", self._search, methods=["POST"]),
        ])

    # --- the served agents (Section 6.1) --------------------------------------------------
    def agent_url(self, agent_uri: str) -> str:
        """The JSON-RPC endpoint (and card base URL) of ``agent_uri``."""
        return f"{self.base_url}/agents/{agent_uri.removeprefix('dmsc://')}"

    def card(self, found: Found) -> dict[str, Any]:
        access = self.gate.access if self.gate is not None else m.Access()
        return m.card_json(m.record_to_card(found.record, self.agent_url(found.agent_uri),
                                            access))

    async def _list_all(self) -> dict[str, Found]:
        found = await self.agent.discover(DiscoveryQuery(), scope=Scope.FEDERATED,
                                          max_results=LISTING_MAX, timeout=self.timeout)
        self._listing = _Listing({f.agent_uri: f for f in found if f.agent_id
                                  != self.agent.agent_id}, time.monotonic())
        return self._listing.by_uri

    async def lookup(self, domain: str, name: str) -> Found:
        """The record of dmsc://domain/name from the listing, listed again first when
        the listing is older than ``refresh`` seconds, or older than a second and without
        it; LookupError (HTTP 404) when it is not listed."""
        uri = f"dmsc://{domain}/{name}"
        found, seen = self._listing.by_uri.get(uri), self._listing.at
        age = time.monotonic() - seen
        if age > self.refresh or (found is None and age > 1.0):
            async with self._relisting:
                if self._listing.at == seen:  # nobody listed meanwhile
                    try:
                        await self._list_all()
                    except (DmscError, TimeoutError) as exc:
                        log.warning("listing the agents failed: %s", exc)
                found = self._listing.by_uri.get(uri)
        if found is None:
            raise LookupError(uri)
        return found

    async def _card(self, request: Request) -> Response:
        try:
            found = await self.lookup(request.path_params["domain"], request.path_params["name"])
        except LookupError:
            return Response(status_code=404)
        card = self.card(found)
        etag = 'W/"' + hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest() \
            + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(card, headers={"ETag": etag})

    # --- JSON-RPC (Section 6.2) ---------------------------------------------------------
    async def _rpc(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _rpc_error(None, m.PARSE_ERROR, "Invalid JSON payload")
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" \
                or not isinstance(body.get("method"), str):
            return _rpc_error(body.get("id") if isinstance(body, dict) else None,
                              m.INVALID_REQUEST, "Invalid Request")
        rpc_id, method = body.get("id"), body["method"]
        version = request.headers.get("a2a-version")
        if version and version.split(".")[0] != m.PROTOCOL_VERSION.split(".")[0]:
            return _rpc_error(rpc_id, m.VERSION_NOT_SUPPORTED,
                              f"A2A version {version} is not supported")
        try:
            found = await self.lookup(request.path_params["domain"], request.path_params["name"])
        except LookupError:
            return Response(status_code=404)
        try:
            if self.gate is not None:
                self.gate.check(request, Operation.ROUTE, [s.id for s in found.record.skills])
            if method in ("GetTask", "CancelTask"):
                return _rpc_error(rpc_id, m.TASK_NOT_FOUND, "the bridge keeps no tasks")
            if method != "SendMessage":
                return _rpc_error(rpc_id, m.UNSUPPORTED_OPERATION,
                                  f"{method} is not supported by the DMSC bridge")
            params = SendMessageRequest()
            try:
                json_format.ParseDict(body.get("params") or {}, params,
                                      ignore_unknown_fields=True)
            except json_format.ParseError as exc:
                return _rpc_error(rpc_id, m.INVALID_PARAMS, f"Invalid params: {exc}")
            result = await self.send_message(found, params, trace_of(request))
        except Refused as exc:
            return refusal(rpc_id, exc)
        return JSONResponse({"jsonrpc": "2.0", "id": rpc_id,
                             "result": json_format.MessageToDict(result)})

    async def send_message(self, found: Found, params: SendMessageRequest,
                           trace: TraceContext) -> SendMessageResponse:
        """SendMessage as one ROUTE_REQUEST (Section 6.2)."""
        msg = params.message
        try:
            payload = m.message_to_payload(list(msg.parts), found.record)
        except m.ContentError as exc:
            raise Refused(ErrorCode.INVALID_TLV_VALUE, str(exc)) from None
        try:
            answer = await self.agent.call(found.agent_id, payload, timeout=self.timeout,
                                           trace=trace)
        except AgentError as exc:
            raise Refused(exc.code, exc.diagnostic or exc.code.name) from None
        except DeadlineExceeded as exc:
            raise Refused(ErrorCode.TRANSACTION_TIMEOUT, str(exc)) from None
        try:
            parts = m.payload_to_parts(answer, found.record.default_output_modes)
        except m.ContentError as exc:
            raise Refused(ErrorCode.INTERNAL_ERROR, f"invalid agent response: {exc}",
                          m.INVALID_AGENT_RESPONSE) from None
        reply = m.reply_message(parts, secrets.token_hex(16), msg.context_id, msg.task_id)
        return SendMessageResponse(message=reply)

    # --- discovery (Section 6.3) --------------------------------------------------------
    async def _list(self, request: Request) -> Response:
        q = request.query_params
        return await self._discover(request, DiscoveryQuery(
            skills=tuple(q.getlist("skill")), tags=tuple(q.getlist("tag")),
            intent=q.get("q") or None, input_modes=tuple(q.getlist("inputMode")),
            output_modes=tuple(q.getlist("outputMode")), domain=q.get("domain") or None),
            q.get("limit"))

    async def _search(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("not an object")

            def texts(key: str) -> tuple[str, ...]:
                v = body.get(key, [])
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError(f"{key} is not an array of strings")
                return tuple(v)

            query = DiscoveryQuery(skills=texts("skills"), tags=texts("tags"),
                                   intent=body.get("query") or None,
                                   input_modes=texts("inputModes"),
                                   output_modes=texts("outputModes"),
                                   domain=body.get("domain") or None)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": f"invalid search: {exc}"}, 400)
        return await self._discover(request, query, body.get("limit"))

    async def _discover(self, request: Request, query: DiscoveryQuery,
                        limit: Any) -> Response:
        try:
            n = 10 if limit in (None, "") else int(limit)
            if not 1 <= n <= LISTING_MAX:
                raise ValueError
        except (TypeError, ValueError):
            return JSONResponse({"error": f"limit must be 1-{LISTING_MAX}"}, 400)
        try:
            token = None if self.gate is None else self.gate.check(request, Operation.DISCOVER)
            try:
                found = await self.agent.discover(query, scope=Scope.FEDERATED,
                                                  max_results=n, timeout=self.timeout)
            except AgentError as exc:
                raise Refused(exc.code, exc.diagnostic or exc.code.name) from None
            if token is not None:  # what the client's scope shows, as a gateway filters
                found = [f for f in found
                         if token.scope.visible(s.id for s in f.record.skills)]
        except Refused as exc:
            return refusal(None, exc)
        return JSONResponse({"agents": [
            {"score": f.score, "agentUri": f.agent_uri,
             "cardUrl": self.agent_url(f.agent_uri) + WELL_KNOWN_CARD, "card": self.card(f)}
            for f in found]})

