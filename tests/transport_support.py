"""The PKI shared by the transport tests (draft-dmsc-protocol-00, Section 10)."""

from __future__ import annotations

from dataclasses import dataclass

from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.transport.tls import TlsIdentity


@dataclass(frozen=True)
class Pki:
    """Domain a.example's authority, gateway and agent, and a foreign domain's authority
    and agent (who trusts a.example, but whom a.example does not trust)."""

    ca: DomainAuthority
    gateway: TlsIdentity
    agent: TlsIdentity
    other_ca: DomainAuthority
    other_agent: TlsIdentity

    @classmethod
    def create(cls) -> Pki:
        ca = DomainAuthority.create("a.example")
        other = DomainAuthority.create("b.example")
        return cls(ca, TlsIdentity.issue(ca, "gw1", Kind.GATEWAY),
                   TlsIdentity.issue(ca, "agent1", Kind.AGENT), other,
                   TlsIdentity(other.issue("mallory", Kind.AGENT), ca.trust_store))
