"""The importing side of the A2A bridge (draft-dmsc-a2a-00, Section 7): an A2A agent
registered in DMSC as a bridged record under an identity of the domain authority, its
ROUTE_REQUESTs forwarded with the a2a-sdk client, its card followed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.types import (
    AgentCard,
    Message,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP, A2AError
from a2a.utils.signing import SignatureVerificationError, create_signature_verifier
from google.protobuf import json_format
from jwt.api_jwk import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

from ..agent import Agent, AgentError, Request
from ..codec.registry import ErrorCode
from ..errors import DmscError
from ..security.errors import SecurityError
from . import mapping as m

log = logging.getLogger(__name__)

#: Algorithms accepted for card signatures (no ``none``, no HMAC).
SIGNATURE_ALGORITHMS = ["EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512",
                        "PS256", "PS384", "PS512"]
#: Fetches without an answer after which the card is taken as gone (Section 7.4).
GONE_AFTER = 3
#: Deadline of a forwarded call when the ROUTE_REQUEST gave none (seconds).
CALL_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Fetched:
    card: AgentCard
    body: bytes


class CardGone(Exception):
    """The card's URL answered 404 or 410: the agent is gone."""


async def fetch_card(http: httpx.AsyncClient, url: str) -> Fetched:
    """GET the card (Section 7.1).  CardGone on 404/410; httpx errors otherwise."""
    response = await http.get(url, headers={"Accept": "application/json"})
    if response.status_code in (404, 410):
        raise CardGone(f"{url}: HTTP {response.status_code}")
    response.raise_for_status()
    try:
        return Fetched(m.parse_card(json.loads(response.content)), response.content)
    except (ValueError, TypeError, json_format.ParseError) as exc:
        raise SecurityError(ErrorCode.INVALID_TLV_VALUE, f"{url}: not an Agent Card: {exc}") \
            from None


def _protected(signature: Any) -> dict[str, Any]:
    try:
        header = json.loads(base64.urlsafe_b64decode(signature.protected + "=="))
    except ValueError:
        return {}
    return header if isinstance(header, dict) else {}


async def _key_set(http: httpx.AsyncClient, source: str) -> dict[str, PyJWK]:
    if "://" in source:
        response = await http.get(source)
        response.raise_for_status()
        text = response.text
    else:
        text = Path(source).read_text(encoding="utf-8")
    keys = PyJWKSet.from_json(text).keys
    return {str(k.key_id): k for k in keys if k.key_id}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


async def verify_card(http: httpx.AsyncClient, card: AgentCard, url: str, *,
                      jwks: str | None, require: bool) -> bool:
    """Section 7.1: whether ``card`` (fetched from ``url``) is signed (it then verified);
    BAD_SIGNATURE when no signature verifies, or when there is none and one is required.
    Keys come from ``jwks`` (a file or URL) or, without it, from each signature's
    ``jku``, which must then be of the card's own origin."""
    if not card.signatures:
        if require:
            raise SecurityError(ErrorCode.BAD_SIGNATURE, "the card has no signature")
        return False
    keys: dict[str, PyJWK] = {}
    try:
        sources = [jwks] if jwks else [str(h["jku"]) for h in map(_protected, card.signatures)
                                       if "jku" in h]
        for source in sources if not jwks else ():
            if _origin(source) != _origin(url):
                raise ValueError(f"jku {source} is not of the card's origin (pin the signers' "
                                 "key set with jwks)")
        for source in dict.fromkeys(sources):
            keys.update(await _key_set(http, source))
    except (httpx.HTTPError, OSError, PyJWKError, PyJWKSetError, ValueError) as exc:
        raise SecurityError(ErrorCode.BAD_SIGNATURE,
                            f"the card's signing keys cannot be had: {exc}") from None

    def key_for(kid: str | None, _jku: str | None) -> PyJWK:
        if kid is None or kid not in keys:
            raise PyJWKError(f"no key {kid!r}")
        return keys[kid]

    try:
        create_signature_verifier(key_for, SIGNATURE_ALGORITHMS)(card)
    except SignatureVerificationError as exc:
        raise SecurityError(ErrorCode.BAD_SIGNATURE, f"card signature: {exc}") from None
    return True


def _failure(exc: Exception) -> AgentError:
    """Section 5.2: an A2A client failure as the DMSC error the proxy answers with."""
    if isinstance(exc, A2AClientTimeoutError):
        return AgentError(ErrorCode.TRANSACTION_TIMEOUT, str(exc))
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPStatusError):
        return AgentError(m.http_to_dmsc(cause.response.status_code), str(exc))
    if isinstance(cause, httpx.TimeoutException):
        return AgentError(ErrorCode.TRANSACTION_TIMEOUT, str(exc))
    if isinstance(cause, httpx.RequestError):
        return AgentError(ErrorCode.TARGET_UNREACHABLE, str(exc))
    code = JSON_RPC_ERROR_CODE_MAP.get(type(exc)) if isinstance(exc, A2AError) else None
    if code is not None:
        return AgentError(m.rpc_to_dmsc(code), str(exc))
    return AgentError(ErrorCode.INTERNAL_ERROR, str(exc))


def answer_parts(response: StreamResponse) -> list[Any]:
    """Section 4.4: the parts of an A2A answer (a Message, or a completed Task's
    artifacts or status message); AgentError for a task that did not complete."""
    if response.HasField("message"):
        return list(response.message.parts)
    if response.HasField("task"):
        task = response.task
        state = TaskState.Name(task.status.state)
        if task.status.state != TaskState.TASK_STATE_COMPLETED:
            said = " ".join(p.text for p in task.status.message.parts if p.text)
            raise AgentError(m.TASK_STATE_TO_DMSC.get(state, ErrorCode.INTERNAL_ERROR),
                             f"A2A task {state}" + (f": {said}" if said else ""))
        parts = [p for a in task.artifacts for p in a.parts]
        return parts or list(task.status.message.parts)
    raise AgentError(ErrorCode.INTERNAL_ERROR, "A2A answer with neither message nor task")


class Proxy:
    """One imported A2A agent: ``agent`` (its DMSC identity) registers the bridged record
    of the card at ``url`` and forwards what it is sent (Sections 7.2-7.4)."""

    def __init__(self, agent: Agent, url: str, http: httpx.AsyncClient, *,
                 jwks: str | None = None, require_signature: bool = False) -> None:
        self.agent, self.url, self.http = agent, url, http
        self.jwks, self.require_signature = jwks, require_signature
        self.hash: str | None = None
        self.fields: m.RecordFields | None = None
        self.signed = False
        self.misses = 0
        self._factory = ClientFactory(ClientConfig(streaming=False, httpx_client=http))
        self._client: Any = None
        agent.serve(self.forward)

    # --- the record (Sections 7.1, 7.2, 7.4) -------------------------------------------
    async def sync(self) -> str:
        """Fetch the card and bring the record in line; returns what happened
        ("registered", "unchanged", "deregistered", "unreachable").  SecurityError
        (BAD_SIGNATURE) when the card does not verify: the record is then left as it
        was."""
        try:
            fetched = await fetch_card(self.http, self.url)
        except CardGone:
            return await self._gone()
        except httpx.HTTPError as exc:
            self.misses += 1
            log.info("card %s: %s (%d in a row)", self.url, exc, self.misses)
            return await self._gone() if self.misses >= GONE_AFTER else "unreachable"
        self.misses = 0
        digest = m.card_hash(fetched.body)
        if digest == self.hash and self.agent.registered:
            return "unchanged"
        self.signed = await verify_card(self.http, fetched.card, self.url, jwks=self.jwks,
                                        require=self.require_signature)
        fields = m.card_to_record(fetched.card, card_url=self.url, body=fetched.body)
        await self.agent.register(
            [*fields.skills], name=fields.name, description=fields.description,
            version=fields.version or "1.0", input_modes=fields.input_modes,
            output_modes=fields.output_modes, provider=fields.provider,
            attributes=fields.attributes)
        self.hash, self.fields = digest, fields
        self._client = self._factory.create(fetched.card)
        return "registered"

    async def _gone(self) -> str:
        if self.hash is None:
            return "unreachable"
        log.info("card %s is gone: deregistering %s", self.url, self.agent.uri)
        await self.agent.deregister()
        self.hash, self._client = None, None
        return "deregistered"

    async def follow(self, every: float, on_error: Callable[[Exception], None]) -> None:
        """Sync every ``every`` seconds until cancelled (Section 7.4)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.sync()
            except DmscError as exc:  # BAD_SIGNATURE, a refused REGISTER, ...
                on_error(exc)

    # --- forwarding (Section 7.3) --------------------------------------------------------
    async def forward(self, payload: bytes, request: Request) -> bytes:
        """The handler of the proxy's ROUTE_REQUESTs: one SendMessage."""
        client, fields = self._client, self.fields
        if client is None or fields is None:
            raise AgentError(ErrorCode.TARGET_UNREACHABLE, f"{self.url} is not imported")
        envelope = m.decode_envelope(payload) is not None
        try:
            parts = m.payload_to_parts(payload, fields.input_modes)
        except m.ContentError as exc:
            raise AgentError(ErrorCode.INVALID_TLV_VALUE, str(exc)) from None
        message = Message(message_id=secrets.token_hex(16), role=Role.ROLE_USER, parts=parts)
        headers = {"traceparent": request.trace.traceparent} if request.trace else {}
        if request.trace is not None and request.trace.tracestate:
            headers["tracestate"] = request.trace.tracestate
        from a2a.client.client import ClientCallContext
        from a2a.client.service_parameters import ServiceParameters

        context = ClientCallContext(timeout=request.timeout or CALL_TIMEOUT,
                                    service_parameters=ServiceParameters(headers))
        try:
            async for response in client.send_message(SendMessageRequest(
                    message=message, configuration=SendMessageConfiguration(
                        accepted_output_modes=list(fields.output_modes))), context=context):
                return m.parts_to_reply(answer_parts(response), fields.output_modes,
                                        envelope)
        except (A2AError, A2AClientError) as exc:
            raise _failure(exc) from None
        raise AgentError(ErrorCode.INTERNAL_ERROR, "no answer from the A2A agent")
