"""Throw-away domains on one machine: authorities, certificates and gateway configuration
files in a directory, for ``dmsc demo``, the end-to-end tests and the benchmarks.

Everything is real: a :class:`~dmscproto.security.ca.DomainAuthority` per domain, its
certificates saved as PEM files, gateway configurations written as the TOML files
``dmsc gateway --config`` reads (:mod:`.config`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..agent import Agent
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


def _toml(value: object) -> str:
    """A TOML value (strings, numbers, booleans and lists of them): JSON's syntax for
    these is TOML's."""
    return json.dumps(value)


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
                         listen: tuple[str, int] = ("127.0.0.1", 0), min_lease: int = 30,
                         max_lease: int = 86400, hold_time: int = 90,
                         keepalive: float | None = None, restart_grace: float | None = None,
                         store: Path | None = None, transport: str | Sequence[str] = "quic",
                         require_tokens: bool = False, lab: bool = False) -> Path:
    """Issue a gateway certificate and write ``<name>.toml`` next to it; returns its path.
    Several ``transport`` names: a listener on ``listen`` per transport (port 0: each its
    own ephemeral one), the first one primary.  ``lab`` writes ``lab = true`` (cleartext
    UDP, Section 9.4: ``transport`` and the peers' must then be ``udp``)."""
    names = [transport] if isinstance(transport, str) else list(transport)
    cert, key = domain.issue(name, Kind.GATEWAY, p256=any(
        transport_named(t).server_needs_p256 for t in names))
    address = _toml(f"{listen[0]}:{listen[1]}")
    lines = [
        "[gateway]",
        f"domain = {_toml(domain.name)}",
        f"name = {_toml(name)}",
        *([f"transport = {_toml(names[0])}", f"listen = {address}"] if len(names) == 1 else
          [f"listen = {{ {', '.join(f'{t} = {address}' for t in names)} }}"]),
        f"require_tokens = {_toml(require_tokens)}",
        *(["lab = true"] if lab else []),
        f"certificate = {_toml(cert.name)}",
        f"key = {_toml(key.name)}",
        f"trust_anchors = {_toml([CA_CERT_FILE])}",
        f"store = {_toml(str(store) if store else f'{name}.sqlite')}",
        "",
        "[limits]",
        f"min_lease = {min_lease}",
        f"max_lease = {max_lease}",
        f"hold_time = {hold_time}",
        *([f"keepalive = {keepalive}"] if keepalive is not None else []),
        *([f"restart_grace = {restart_grace}"] if restart_grace is not None else []),
    ]
    for peer in peers:
        lines += ["", "[[peers]]", f"domain = {_toml(peer.domain.name)}"]
        if peer.address is not None:
            lines.append(f"address = {_toml(f'{peer.address[0]}:{peer.address[1]}')}")
            lines.append('server_name = "localhost"')
        if peer.transport is not None:
            lines.append(f"transport = {_toml(peer.transport)}")
        if peer.domain.name != domain.name:
            anchor = os.path.relpath(peer.domain.anchor, domain.directory)
            lines.append(f"anchor = {_toml(anchor)}")
            if peer.replication != "full":
                lines.append(f"replication = {_toml(peer.replication)}")
            if peer.transit:
                transit = True if peer.transit is True else list(peer.transit)
                lines.append(f"transit = {_toml(transit)}")
            lines += ["[peers.export]", f"exclude_tags = {_toml(list(peer.exclude_tags))}"]
            if peer.imports:
                lines += ["[peers.import]",
                          f"domains = {_toml([peer.domain.name, *peer.imports])}"]
    path = domain.directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
