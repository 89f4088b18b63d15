"""Shared PKI and message builders for the tests/test_security_*.py files."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.messages import Register, RegisterAck
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.signing import PrivateKey, entity_id, sign_record, spki
from dmscproto.codec.values import CapabilityRecord, Endpoint, Skill
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.store import RegistryStore
from dmscproto.security.ca import Credential, DomainAuthority, Kind
from dmscproto.security.errors import SecurityError
from dmscproto.security.proof import RequestVerifier

NOW = 1_790_000_000.0  # a fixed "now" (2026-09-21) for the sans-I/O tests


def at(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


@dataclass
class Domain:
    """An authority and the credentials it issued, created at ``NOW``."""

    authority: DomainAuthority
    creds: dict[str, Credential] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, now: float = NOW) -> Domain:
        return cls(DomainAuthority.create(name, now=at(now - 3600)))

    @property
    def name(self) -> str:
        return self.authority.domain

    def issue(self, name: str, kind: Kind = Kind.AGENT, *, now: float = NOW,
              validity: dt.timedelta = dt.timedelta(days=30)) -> Credential:
        cred = self.authority.issue(name, kind, now=at(now - 60), validity=validity)
        self.creds[name] = cred
        return cred


def record_of(cred: Credential, *, skills: tuple[str, ...] = ("forecast",),
              tags: tuple[str, ...] = ("weather",), version: int = 1,
              uri: str | None = None, key: PrivateKey | None = None) -> CapabilityRecord:
    identity = cred.identity
    pub = (key or cred.private_key).public_key()  # type: ignore[union-attr]
    uri = uri or identity.uri
    return CapabilityRecord(
        agent_uri=uri, agent_id=entity_id(pub), name=identity.name, version="1.0",
        skills=tuple(Skill(s, s.title(), tags) for s in skills),
        default_input_modes=("text/plain",), default_output_modes=("text/plain",),
        endpoints=(Endpoint("quic", uri),), domain=uri.split("/")[2], issued_at=int(NOW),
        lease=600, record_version=version, public_key=spki(pub))


def signed_of(cred: Credential, **kw: object) -> SignedRecord:
    key = kw.get("key") or cred.private_key
    return sign_record(record_of(cred, **kw), key)  # type: ignore[arg-type]


def register(signed: SignedRecord, *, now: float = NOW, nonce: bytes | None = None,
             timestamp: int | None = None, token: bytes | None = None) -> Register:
    return Register(transaction_id=1, record=signed, lease=600,
                    nonce=nonce if nonce is not None else os.urandom(16),
                    timestamp=int(now * 1000) if timestamp is None else timestamp, token=token)


def core_for(path: Path, domain: str, gateway: Credential) -> GatewayCore:
    return GatewayCore(gateway.identity.entity_id, domain, RegistryStore(path / "reg.db"))


def handle_register(verifier: RequestVerifier, core: GatewayCore, msg: Register,
                    cert: Credential | x509.Certificate, now: float = NOW) -> RegisterAck:
    """What a gateway does with a REGISTER (Section 5.1): the security checks, then the
    core's (domain, versions, NAME_CONFLICT), answering with the first failure."""
    peer = cert.certificate if isinstance(cert, Credential) else cert
    try:
        verifier.register(msg, peer, now)
    except SecurityError as exc:
        return RegisterAck(transaction_id=msg.transaction_id, status=exc.code,
                           diagnostic=exc.reason)
    outcome = core.register(msg.record, msg.lease, now)
    if outcome.status is not ErrorCode.SUCCESS:
        return RegisterAck(transaction_id=msg.transaction_id, status=outcome.status,
                           diagnostic=outcome.diagnostic)
    return RegisterAck(transaction_id=msg.transaction_id, status=ErrorCode.SUCCESS,
                       agent_id=msg.record.record.agent_id, lease=outcome.lease)
