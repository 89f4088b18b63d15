"""Throw-away domains on one machine: authorities, certificates and gateway configuration
files in a directory, for ``dmsc demo``, the end-to-end tests and the benchmarks.

Everything is real: a :class:`~dmscproto.security.ca.DomainAuthority` per domain, its
certificates saved as PEM files, gateway configurations written as the TOML files
``dmsc gateway --config`` reads (:mod:`dmscproto.host.config`), from the keys
:mod:`dmscproto.host.schema` declares.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..agent import Agent
from ..host.schema import GATEWAY, LIMITS_TABLE, PEER_EXPORT, PEER_IMPORT, PEERS, Table, to_toml
from ..host.transports import transport_named
from ..security.ca import CA_CERT_FILE, Credential, DomainAuthority, Kind
from ..security.tokens import ScopeSet, TokenIssuer


@dataclass(frozen=True)
class Domain:
    """One domain's authority and the directory holding its files."""

    authority: DomainAuthority
    directory: Path

    @classmethod
    def create(cls, root: Path, name: str) -> Domain:
        authority = DomainAuthority.create(name)
        directory = root / name
        authority.save(directory)
        return cls(authority, directory)

    @property
    def name(self) -> str:
        return self.authority.domain

    @property
    def anchor(self) -> Path:
        return self.directory / CA_CERT_FILE

    def issue(self, name: str, kind: Kind, *, p256: bool = False) -> tuple[Path, Path]:
        """A certificate and key for ``name``, saved as ``<name>.pem`` / ``<name>.key``:
        Ed25519, or ECDSA P-256 with ``p256`` (a DTLS server needs it)."""
        if p256:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = self.authority.issue(name, kind, public_key=key.public_key()).certificate
            credential = Credential(cert, key)
        else:
            credential = self.authority.issue(name, kind)
        cert_path, key_path = credential.save(self.directory)
        assert key_path is not None
        return cert_path, key_path

    def agent(self, name: str, gateway: tuple[str, int], *, scope: str | None = None,
              **options: Any) -> Agent:
        """A new agent of this domain with a fresh certificate, homed at ``gateway``;
        with ``scope`` (e.g. ``"register discover route"``), also an access token for
        it from the authority (Section 10.3)."""
        cert, key = self.issue(name, Kind.AGENT)
        if scope is not None:
            credential = Credential.load(cert)
            options["token"] = TokenIssuer(self.authority).issue(
                credential.certificate, credential.identity.uri, ScopeSet.parse(scope),
                now=time.time())
        return Agent.from_files(cert, key, [self.anchor],
                                gateway=f"{gateway[0]}:{gateway[1]}", **options)


@dataclass(frozen=True)
class PeerSpec:
    """A ``[[peers]]`` entry: the peer's domain and, to dial it, its address (and the
    transport, when not the gateway's primary one)."""

    domain: Domain
    address: tuple[str, int] | None = None
    exclude_tags: Sequence[str] = ()
    transport: str | None = None
    #: ``transit`` (True, or the record domains re-advertised to it, Section 6.3).
    transit: bool | Sequence[str] = False
    #: Record domains it may advertise to us besides its own (``import.domains``).
    imports: Sequence[str] = ()
    #: "full" or "summary" (Section 6.9).
    replication: str = "full"


def write_gateway_config(domain: Domain, name: str, *, peers: Sequence[PeerSpec] = (),
                         listen: tuple[str, int] = ("127.0.0.1", 0),
                         min_lease: int | None = None, max_lease: int | None = None,
                         hold_time: int | None = None, keepalive: float | None = None,
                         restart_grace: float | None = None, store: Path | None = None,
                         transport: str | Sequence[str] = "quic", require_tokens: bool = False,
                         lab: bool = False) -> Path:
    """Issue a gateway certificate and write ``<name>.toml`` next to it; returns its path.
    Several ``transport`` names: a listener on ``listen`` per transport (port 0: each its
    own ephemeral one), the first one primary.  ``lab`` writes ``lab = true`` (cleartext
    UDP, Section 9.4: ``transport`` and the peers' must then be ``udp``).  A ``[limits]``
    value left None is the configuration's default (:mod:`dmscproto.host.schema`), written
    out for the leases and the hold time."""
    names = [transport] if isinstance(transport, str) else list(transport)
    cert, key = domain.issue(name, Kind.GATEWAY, p256=any(
        transport_named(t).server_needs_p256 for t in names))
    address = f"{listen[0]}:{listen[1]}"
    gateway: dict[str, object] = {
        "domain": domain.name, "name": name,
        **({"transport": names[0], "listen": address} if len(names) == 1
           else {"listen": dict.fromkeys(names, address)}),
        "require_tokens": require_tokens, **({"lab": True} if lab else {}),
        "certificate": cert.name, "key": key.name, "trust_anchors": [CA_CERT_FILE],
        "store": str(store) if store else f"{name}.sqlite"}
    limits: dict[str, object] = {  # the lease and hold time are always written
        "min_lease": min_lease or LIMITS_TABLE.default("min_lease"),
        "max_lease": max_lease or LIMITS_TABLE.default("max_lease"),
        "hold_time": LIMITS_TABLE.default("hold_time") if hold_time is None else hold_time,
        **{k: v for k, v in (("keepalive", keepalive), ("restart_grace", restart_grace))
           if v is not None}}
    tables: list[tuple[Table, Mapping[str, object]]] = [(GATEWAY, gateway),
                                                        (LIMITS_TABLE, limits)]
    for peer in peers:
        entry: dict[str, object] = {"domain": peer.domain.name}
        if peer.address is not None:
            entry |= {"address": f"{peer.address[0]}:{peer.address[1]}",
                      "server_name": "localhost"}
        if peer.transport is not None:
            entry["transport"] = peer.transport
        if peer.domain.name == domain.name:
            tables.append((PEERS, entry))
            continue
        entry["anchor"] = os.path.relpath(peer.domain.anchor, domain.directory)
        if peer.replication != "full":
            entry["replication"] = peer.replication
        if peer.transit:
            entry["transit"] = True if peer.transit is True else list(peer.transit)
        tables += [(PEERS, entry), (PEER_EXPORT, {"exclude_tags": list(peer.exclude_tags)})]
        if peer.imports:
            tables.append((PEER_IMPORT, {"domains": [peer.domain.name, *peer.imports]}))
    path = domain.directory / f"{name}.toml"
    path.write_text(to_toml(tables), encoding="utf-8")
    return path
