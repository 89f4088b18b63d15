"""A running gateway's security from its configuration file (draft-dmsc-protocol-00,
Section 10): the ``[security]`` table, the :class:`~dmscproto.security.guard.GatewayGuard`
it gives the node, and the task that keeps the revocation lists fresh::

    [security]                        # optional; these are the defaults
    require_origin = true             # a ROUTE_REQUEST relayed to one of our agents
                                      # must carry an origin assertion (Section 10.6)
    crl = []                          # CRL sources of our and the peer domains: files
                                      # (relative to the file) or the authorities'
                                      # https://.../crl; refreshed before nextUpdate

The peer domains' trust anchors and export and import policies are the ``[[peers]]``
entries (:mod:`.config`, :func:`.gateway.build_federation`); whether agents must send
access tokens is ``gateway.require_tokens``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..gateway.core import GatewayCore
from ..security.ca import Credential
from ..security.federation import Federation
from ..security.guard import Authenticated, GatewayGuard
from ..security.proof import RequestVerifier
from ..security.revocation import CrlFeed
from ..security.tokens import TokenVerifier
from .config import ConfigError
from .logs import facts

log = logging.getLogger("dmsc.gateway")

_KEYS = {"require_origin", "crl"}


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The ``[security]`` table (module docstring)."""

    require_origin: bool = True
    #: CRL sources: absolute file paths or https:// URLs.
    crl: tuple[str, ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, base: Path = Path("."),
                   source: Path | None = None) -> SecurityConfig:
        """Check and read a parsed ``[security]`` table; :class:`ConfigError` naming the
        key on any problem."""
        for key in table:
            if key not in _KEYS:
                raise ConfigError(source, f"security.{key}",
                                  f"unknown key (expected one of {', '.join(sorted(_KEYS))})")
        require_origin = table.get("require_origin", True)
        if not isinstance(require_origin, bool):
            raise ConfigError(source, "security.require_origin", "must be true or false")
        crl = table.get("crl", [])
        if isinstance(crl, str):
            crl = [crl]
        if not isinstance(crl, list):
            raise ConfigError(source, "security.crl", "must be a list of files or URLs")
        sources = []
        for i, item in enumerate(crl):
            if not isinstance(item, str) or not item:
                raise ConfigError(source, f"security.crl[{i}]", "must be a file or an URL")
            if item.startswith("https://"):
                sources.append(item)
            elif "://" in item:
                raise ConfigError(source, f"security.crl[{i}]", "only https:// URLs")
            else:
                path = Path(item) if Path(item).is_absolute() else base / item
                sources.append(str(path))
        return cls(require_origin, tuple(sources))


def build_guard(core: GatewayCore, federation: Federation, credential: Credential,
                security: SecurityConfig, peer_of: Callable[[Any], Authenticated | None],
                *, require_tokens: bool = False) -> GatewayGuard:
    """The guard of a gateway: registration proof against the federation's anchors
    (with revocation), access tokens of our authority when ``require_tokens``, the
    federation's policies and origin assertions."""
    tokens = TokenVerifier(federation.anchor, gateway_uri=credential.identity.uri) \
        if require_tokens else None
    verifier = RequestVerifier(federation.trust_store(), tokens=tokens)
    return GatewayGuard(core, verifier, peer_of, federation=federation,
                        credential=credential, require_origin=security.require_origin)


class CrlRefresher:
    """Loads the configured CRLs into the federation's revocation checker now and again
    at :meth:`CrlFeed.next_refresh`; fetches run in a worker thread, failures are logged
    (the CRL held stays in force until its nextUpdate, then its issuer's certificates
    are refused: fail closed)."""

    def __init__(self, federation: Federation, sources: tuple[str, ...]) -> None:
        # https:// sources (the authorities' /crl) are fetched trusting the federation's
        # anchors, which issued the authorities' server certificates
        https = ssl.create_default_context(cadata=federation.trust_store().pem().decode()) \
            if any(s.startswith("https://") for s in sources) else None
        self.feed = CrlFeed(federation.revocation, sources, ssl_context=https)
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> dict[str, str]:
        """Fetch every source once; returns the failures by source (also logged)."""
        errors = await asyncio.to_thread(self.feed.refresh)
        for source, error in errors.items():
            log.warning("revocation list not refreshed", extra=facts(source=source,
                                                                    error=error))
        return errors

    def start(self) -> None:
        """Refresh in the background until :meth:`stop`."""
        if self.feed.sources and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            now = dt.datetime.now(dt.UTC)
            await asyncio.sleep((self.feed.next_refresh(now) - now).total_seconds())
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
