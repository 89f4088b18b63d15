"""What a gateway trusts, from its configuration (draft-dmsc-protocol-00, Sections 6.9
and 10): the federation (its own authority, its peer domains and their policies, the
transit trust bundle) and the revocation lists kept current."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from contextlib import suppress

from cryptography import x509

from ..codec.values import ExportPolicy
from ..host.config import ConfigError, GatewayConfig
from ..host.logs import facts
from ..security.ca import anchor_domains
from ..security.federation import Federation, ImportPolicy, PeerDomain, TransitPolicy
from ..security.revocation import CrlFeed

log = logging.getLogger("dmsc.gateway")


def build_federation(config: GatewayConfig) -> Federation:
    """The federation of a configuration: the own domain's anchor from
    ``trust_anchors`` and one :class:`PeerDomain` per peer of another domain."""
    own: x509.Certificate | None = None
    for path in config.trust_anchors:
        for cert in x509.load_pem_x509_certificates(path.read_bytes()):
            if anchor_domains(cert) == {config.domain}:
                own = cert
    if own is None:
        raise ConfigError(config.source, "gateway.trust_anchors",
                          f"none is the authority of {config.domain}")
    peers: dict[str, PeerDomain] = {}
    for i, p in enumerate(config.peers):
        if p.domain == config.domain or p.domain in peers or p.anchor is None:
            continue
        try:
            anchor = x509.load_pem_x509_certificate(p.anchor.read_bytes())
            peers[p.domain] = PeerDomain(
                p.domain, anchor, p.export or ExportPolicy(peer_domains=()),
                ImportPolicy(p.import_domains, p.import_capabilities, p.import_callers),
                p.transit)
        except ValueError as exc:
            raise ConfigError(config.source, f"peers[{i}].anchor", str(exc)) from None
    sources = [*config.crl, *(s for p in config.peers for s in p.crl)]
    return Federation(config.domain, own, peers.values(), crl_sources=sources,
                      transit=transit_policy(config))


def transit_policy(config: GatewayConfig) -> TransitPolicy:
    """The ``[federation]`` table as a :class:`TransitPolicy`: every certificate of the
    trust bundle's files must be one domain's authority."""
    t = config.transit
    bundle = []
    for i, path in enumerate(t.trust_bundle):
        key = f"federation.trust_bundle[{i}]"
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError:
            raise ConfigError(config.source, key, f"{path} holds no PEM certificate") from None
        for cert in certs:
            if len(anchor_domains(cert)) != 1:
                raise ConfigError(config.source, key, f"{path}: {cert.subject.rfc4514_string()}"
                                  " is not the authority of one domain")
        bundle += certs
    return TransitPolicy(tuple(bundle), t.via, t.max_path, t.export,
                         ImportPolicy((), t.capabilities, t.callers))


class CrlRefresher:
    """Keeps the federation's revocation lists current (Section 10): fetches every
    source (files, the authorities' ``/crl`` URLs) off the event loop, at start and then
    before each list's nextUpdate (:meth:`CrlFeed.next_refresh`)."""

    def __init__(self, feed: CrlFeed) -> None:
        self.feed = feed
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> dict[str, str]:
        """Fetch and install now; returns the sources that failed, with why."""
        errors = await asyncio.to_thread(self.feed.refresh)
        for source, why in errors.items():
            log.warning("CRL not refreshed", extra=facts(source=source, error=why))
        return errors

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            wait = self.feed.next_refresh() - dt.datetime.now(dt.UTC)
            await asyncio.sleep(max(wait.total_seconds(), 1.0))
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
