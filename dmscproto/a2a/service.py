"""The bridge process (``dmsc a2a serve`` and ``dmsc a2a import``): the serving side
(:mod:`.bridge`) on its HTTP listener and the imported agents (:mod:`.proxy`), each a
DMSC agent of the domain, started from a :class:`~.config.BridgeConfig`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import httpx
from cryptography import x509

from ..agent import Agent
from ..codec.registry import ErrorCode
from ..errors import DmscError
from .bridge import Bridge, TokenGate
from .config import BridgeConfig, ImportSpec
from .http import HttpServer
from .proxy import Proxy

log = logging.getLogger(__name__)

#: Connection attempts of each of the bridge's agents to its gateway.
CONNECT_ATTEMPTS = 5


@dataclass
class Service:
    """Everything one bridge configuration runs; :meth:`start`, then :meth:`close`."""

    config: BridgeConfig
    say: Callable[[str], None] = print
    bridge: Bridge | None = None
    server: HttpServer | None = None
    proxies: list[Proxy] = field(default_factory=list)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Serve and import; DmscError (BAD_SIGNATURE, ...) if an import fails at once."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _agent(self, path: str) -> Agent:
        agent = Agent.from_config(path)
        await agent.connect(attempts=CONNECT_ATTEMPTS)
        self._stack.push_async_callback(agent.close)
        return agent

    async def _start(self) -> None:
        cfg = self.config
        http = httpx.AsyncClient(timeout=cfg.timeout)
        self._stack.push_async_callback(http.aclose)
        if cfg.listen is not None:
            assert cfg.agent is not None
            agent = await self._agent(str(cfg.agent))
            gate = None
            if cfg.token_authority is not None and cfg.token_url is not None:
                authority = x509.load_pem_x509_certificate(cfg.token_authority.read_bytes())
                gate = TokenGate(authority, bridge_uri=agent.uri, token_url=cfg.token_url)
            self.bridge = Bridge(agent, "", gate=gate, timeout=cfg.timeout,
                                 refresh=cfg.refresh)
            self.server = HttpServer(self.bridge.app, cfg.listen)
            await self.server.start()
            self._stack.push_async_callback(self.server.close)
            self.bridge.base_url = self.server.url
            self.say(f"serving A2A at {self.server.url} as {agent.uri}: cards at "
                     f"{self.server.url}/agents/DOMAIN/NAME/.well-known/agent-card.json, "
                     f"discovery at {self.server.url}/.well-known/agents")
        for spec in cfg.imports:
            await self.add_import(spec, http)

    async def add_import(self, spec: ImportSpec, http: httpx.AsyncClient) -> Proxy:
        if spec.token is not None:  # the A2A agent's own access control (Section 7.3)
            token = spec.token.read_text(encoding="utf-8").strip()
            http = httpx.AsyncClient(timeout=http.timeout,
                                     headers={"Authorization": f"Bearer {token}"})
            self._stack.push_async_callback(http.aclose)
        proxy = Proxy(await self._agent(str(spec.agent)), spec.card, http, jwks=spec.jwks,
                      require_signature=spec.require_signature)
        outcome = await proxy.sync()
        if outcome != "registered":
            raise DmscError(f"{spec.card}: the card could not be fetched ({outcome})",
                            ErrorCode.TARGET_UNREACHABLE)
        self.proxies.append(proxy)
        self.say(f"imported {spec.card} as {proxy.agent.uri} "
                 f"({'signature verified' if proxy.signed else 'unsigned card'})")
        self._tasks.append(asyncio.get_running_loop().create_task(
            proxy.follow(spec.refresh, lambda exc: log.warning("%s: %s", spec.card, exc))))
        return proxy

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._stack.aclose()
