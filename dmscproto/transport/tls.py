"""Mutual TLS 1.3 for DMSC over QUIC (draft-dmsc-protocol-00, Sections 9.1 and 10).

:class:`TlsIdentity` holds a node's certificate, private key and trust anchors, loaded
once per process and shared by every connection it makes or accepts.

aioquic (1.x) has no public switch to make a server request a client certificate (its
``Context._request_client_certificate`` is marked "for test purposes only"), and it never
verifies a client certificate's chain.  :class:`DmscQuicConnection` therefore turns its
TLS context into :class:`_MutualTlsContext`, which

* always sends a CertificateRequest when acting as server, and refuses an empty client
  Certificate with a ``certificate_required`` alert;
* after the peer's CertificateVerify has proved possession of the key, checks the peer
  certificate with the DMSC trust store (:meth:`TrustStore.verify`: issued by a trusted
  domain authority for its own domain, valid now, EKU clientAuth from clients and
  serverAuth from servers), plus the expected domain and the TLS server name on the
  client side.  A refusal is a TLS alert (``unknown_ca``, ``certificate_expired``,
  ``certificate_revoked`` or ``bad_certificate``), so the QUIC handshake fails with
  CRYPTO_ERROR (0x100 + alert) before any DMSC message is processed.

aioquic's own chain check (pyOpenSSL, certifi defaults) is switched off
(``verify_mode=CERT_NONE``): the trust store is the only authority.  Session tickets
(resumption, 0-RTT) are never issued or used, so every connection authenticates both
certificates; a connection whose handshake ends without a verified peer identity is
closed by :class:`~dmscproto.transport.quic.DmscConnection`.

This relies on aioquic internals (``tls.Context`` handshake methods, ``_peer_certificate``,
``QuicConnection._initialize``), checked against aioquic 1.7 by the transport tests.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

import service_identity
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicErrorCode
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..codec.registry import ALPN, ErrorCode, timer
from ..security.ca import (
    CertificateError,
    Credential,
    DomainAuthority,
    Identity,
    IdentityMismatch,
    Kind,
    TrustStore,
)
from .acks import DelayedAckConnection
from .fastpath import FastPathConnection

#: TLS alert sent for each certificate error code; anything else is bad_certificate.
ALERTS: dict[ErrorCode, tls.AlertDescription] = {
    ErrorCode.UNTRUSTED_CERTIFICATE: tls.AlertDescription.unknown_ca,
    ErrorCode.CERTIFICATE_EXPIRED: tls.AlertDescription.certificate_expired,
    ErrorCode.CERTIFICATE_REVOKED: tls.AlertDescription.certificate_revoked,
    ErrorCode.IDENTITY_MISMATCH: tls.AlertDescription.bad_certificate,
}



def code_for_quic_error(quic_error: int) -> ErrorCode:
    """The DMSC error code of a QUIC transport close: the certificate error behind a
    CRYPTO_ERROR carrying one of the alerts above, otherwise TARGET_UNREACHABLE."""
    alert = quic_error - QuicErrorCode.CRYPTO_ERROR
    for code, description in ALERTS.items():
        if description == alert:
            return code
    if alert == tls.AlertDescription.certificate_required:
        return ErrorCode.UNTRUSTED_CERTIFICATE
    return ErrorCode.TARGET_UNREACHABLE


#: Checks a peer certificate for the given extended key usage; returns its identity.
PeerVerifier = Callable[[x509.Certificate, x509.ObjectIdentifier], Identity]


class PeerCertificateRefused(tls.Alert):
    """The peer's certificate failed the DMSC checks; ``code`` is the DMSC error code."""

    def __init__(self, description: tls.AlertDescription, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.description = description
        self.code = code


@dataclass(frozen=True, eq=False)
class TlsIdentity:
    """A node's TLS credential and trust anchors (Section 10), built once per process."""

    credential: Credential
    trust: TrustStore

    def __post_init__(self) -> None:
        if self.credential.private_key is None:
            raise ValueError("a TLS identity needs the certificate's private key")

    @property
    def identity(self) -> Identity:
        return self.credential.identity

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path,
                   anchors: Iterable[str | Path]) -> TlsIdentity:
        return cls(Credential.load(cert, key), TrustStore.load(anchors))

    @classmethod
    def issue(cls, authority: DomainAuthority, name: str, kind: Kind,
              trust: TrustStore | None = None) -> TlsIdentity:
        """A fresh key and certificate from ``authority``; trusts only that authority
        unless ``trust`` is given."""
        return cls(authority.issue(name, kind), trust or authority.trust_store)

    def configuration(self, *, is_client: bool, server_name: str | None = None,
                      keylog: TextIO | None = None,
                      idle_timeout: float = timer("QUIC_IDLE_TIMEOUT")) -> QuicConfiguration:
        """An aioquic configuration using the already loaded certificate and key."""
        return QuicConfiguration(
            alpn_protocols=[ALPN], is_client=is_client, idle_timeout=idle_timeout,
            certificate=self.credential.certificate, certificate_chain=[],
            private_key=self.credential.private_key, verify_mode=ssl.CERT_NONE,
            server_name=server_name, secrets_log_file=keylog)

    def verifier(self, *, server_name: str | None = None,
                 expect_domain: str | None = None) -> PeerVerifier:
        """The peer check of one connection: the trust store, then (client side) the
        expected domain and the server name against the certificate's DNS names."""
        def verify(cert: x509.Certificate, usage: x509.ObjectIdentifier) -> Identity:
            identity = self.trust.verify(cert, usage=usage)
            if expect_domain is not None and identity.domain != expect_domain:
                raise IdentityMismatch(f"peer is {identity.uri}, expected domain {expect_domain}")
            if server_name is not None:
                try:
                    service_identity.cryptography.verify_certificate_hostname(cert, server_name)
                except (service_identity.VerificationError,
                        service_identity.CertificateError) as exc:
                    raise IdentityMismatch(f"server name {server_name!r}: {exc}") from None
            return identity
        return verify


class _MutualTlsContext(tls.Context):
    """aioquic's TLS 1.3 context with client certificates required and every peer
    certificate checked by a :data:`PeerVerifier` (see module docstring)."""

    peer_verifier: PeerVerifier
    peer_identity: Identity | None
    refusal: ErrorCode | None

    def _refuse(self, description: tls.AlertDescription, code: ErrorCode, reason: str) -> None:
        self.refusal = code
        raise PeerCertificateRefused(description, code, reason)

    def _verify_peer(self, usage: x509.ObjectIdentifier) -> None:
        cert = self._peer_certificate
        assert cert is not None  # set by _set_peer_certificate before CertificateVerify
        try:
            self.peer_identity = self.peer_verifier(cert, usage)
        except CertificateError as exc:
            desc = ALERTS.get(exc.code, tls.AlertDescription.bad_certificate)
            self._refuse(desc, exc.code, str(exc))

    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate(input_buf)
        if self._peer_certificate is None:
            self._refuse(tls.AlertDescription.certificate_required,
                         ErrorCode.UNTRUSTED_CERTIFICATE, "a client certificate is required")

    def _server_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate_verify(input_buf)
        self._verify_peer(ExtendedKeyUsageOID.CLIENT_AUTH)

    def _client_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._client_handle_certificate_verify(input_buf)
        self._verify_peer(ExtendedKeyUsageOID.SERVER_AUTH)


class DmscQuicConnection(DelayedAckConnection, FastPathConnection):
    """aioquic's sans-I/O QUIC connection with DMSC mutual TLS (Section 9.1), delayed
    and piggybacked acknowledgements (:mod:`.acks`), less memory (:mod:`.lean`) and a fast
    path for the common 1-RTT packet (:mod:`.fastpath`)."""

    __slots__ = ("_peer_verifier",)

    def __init__(self, *, configuration: QuicConfiguration, verifier: PeerVerifier,
                 original_destination_connection_id: bytes | None = None,
                 retry_source_connection_id: bytes | None = None) -> None:
        super().__init__(configuration=configuration,
                         original_destination_connection_id=original_destination_connection_id,
                         retry_source_connection_id=retry_source_connection_id)
        self._peer_verifier = verifier

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        # Keep every setting aioquic made, change only the behaviour (see module doc).
        self.tls.__class__ = _MutualTlsContext
        ctx = cast(_MutualTlsContext, self.tls)
        ctx.peer_verifier = self._peer_verifier
        ctx.peer_identity = None
        ctx.refusal = None
        ctx._request_client_certificate = not self._is_client

    @property
    def peer_identity(self) -> Identity | None:
        """The verified identity of the peer, once its CertificateVerify has arrived."""
        return getattr(getattr(self, "tls", None), "peer_identity", None)

    @property
    def refusal(self) -> ErrorCode | None:
        """The error code for which this end refused the peer's certificate, if it did."""
        return getattr(getattr(self, "tls", None), "refusal", None)

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        return getattr(self.tls, "_peer_certificate", None) if self.peer_identity else None
