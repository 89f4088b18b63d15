"""Domain authority: the per-domain X.509 CA and its certificates (draft-dmsc-protocol-00,
Sections 3.2 and 10).

Profile (Section 10):

* Every key is Ed25519: the CA key, gateway keys and agent keys.  aioquic's TLS 1.3
  accepts Ed25519 certificates for both server and client authentication (tested in
  ``tests/test_transport_quic.py``), and an agent's certificate key is the same key
  that signs its capability record, so its Agent ID is
  :func:`~dmscproto.codec.signing.entity_id` of the certificate's public key.
  P-256 keys are accepted too (``issue(public_key=...)``), never required.
* The CA certificate is self-signed, ``basicConstraints`` CA with path length 0,
  ``keyUsage`` keyCertSign and cRLSign, and a critical ``nameConstraints`` extension
  whose only permitted URI subtree is the domain name: the authority of ``a.example``
  can only vouch for ``dmsc://a.example/...`` identities (RFC 5280, 4.2.1.10).
* End-entity certificates are issued directly by the CA (no intermediates).  They carry
  the identity as the SAN URI ``dmsc://<domain>/<name>``, the entity kind (``agent``,
  ``gateway`` or ``operator``) as the subject's organizational unit, ``keyUsage``
  digitalSignature, and ``extKeyUsage`` serverAuth and clientAuth (a gateway is a client
  of its peers; an agent is a QUIC client that also serves requests sent over its
  connection).  An *operator* certificate (draft-dmsc-yang-00, Section 5) opens a
  gateway's management interface and nothing else: clientAuth only, and gateways refuse
  it on DMSC associations.  Gateway
  certificates also carry DNS names (default: ``localhost`` and the gateway's name) for
  TLS server-name checks.

:func:`verify_chain` checks a peer certificate against trust anchors and returns its
:class:`Identity`; failures raise :class:`CertificateError` subclasses that carry the
registered error code (UNTRUSTED_CERTIFICATE, CERTIFICATE_EXPIRED, IDENTITY_MISMATCH).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..codec.registry import ErrorCode
from ..codec.signing import PrivateKey, PublicKey, entity_id
from ..errors import DmscError

#: URI scheme of DMSC identities (Section 3.2).
URI_SCHEME = "dmsc"
#: Default lifetime of a CA certificate and of an end-entity certificate.
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
#: Backdating of notBefore, so that peers with slightly slow clocks accept a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,62}")

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"


class Kind(StrEnum):
    """What an end-entity certificate identifies (subject OU)."""

    AGENT = "agent"
    GATEWAY = "gateway"
    #: A person or tool managing the domain's gateways (management interface only).
    OPERATOR = "operator"


class CertificateError(DmscError, ValueError):
    """A peer certificate is not acceptable; ``code`` is the registered error code."""

    named = False

    code: ErrorCode = ErrorCode.UNTRUSTED_CERTIFICATE


class UntrustedCertificate(CertificateError):
    """Not issued by a trusted domain authority, or not a DMSC end-entity certificate."""

    code = ErrorCode.UNTRUSTED_CERTIFICATE


class CertificateExpired(CertificateError):
    """Outside its validity period (expired or not yet valid)."""

    code = ErrorCode.CERTIFICATE_EXPIRED


class IdentityMismatch(CertificateError):
    """A valid certificate, but not of the identity (domain, name) expected."""

    code = ErrorCode.IDENTITY_MISMATCH


def _check_domain(domain: str) -> str:
    if len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"not a lower-case DNS-style domain name: {domain!r}")
    return domain


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"not a valid entity name (1-63 of A-Z a-z 0-9 . _ ~ -): {name!r}")
    return name


@functools.lru_cache(maxsize=4096)
def identity_uri(domain: str, name: str) -> str:
    """``dmsc://<domain>/<name>`` (Section 3.2); cached: a gateway's guard asks for the
    caller's on every ROUTE_REQUEST."""
    return f"{URI_SCHEME}://{_check_domain(domain)}/{_check_name(name)}"


def parse_identity_uri(uri: str) -> tuple[str, str]:
    """``(domain, name)`` of a ``dmsc://<domain>/<name>`` URI; ValueError otherwise."""
    prefix = f"{URI_SCHEME}://"
    if not uri.startswith(prefix) or uri.count("/") != 3:
        raise ValueError(f"not a DMSC identity URI: {uri!r}")
    domain, _, name = uri[len(prefix):].partition("/")
    return _check_domain(domain), _check_name(name)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate names (Section 3.2): domain, name, kind and the 16-octet
    Agent ID or Gateway ID derived from the certificate's public key."""

    domain: str
    name: str
    kind: Kind
    entity_id: bytes

    @property
    def uri(self) -> str:
        return identity_uri(self.domain, self.name)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def identity_of(cert: x509.Certificate) -> Identity:
    """Parse the identity of a DMSC end-entity certificate: exactly one SAN URI
    ``dmsc://<domain>/<name>`` and the kind in the subject OU.  Does not check trust;
    raises :class:`UntrustedCertificate` for a certificate that is not a DMSC one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                if u.startswith(f"{URI_SCHEME}:")]
        if len(uris) != 1:
            raise UntrustedCertificate(f"{len(uris)} DMSC SAN URIs, need exactly one")
        domain, name = parse_identity_uri(uris[0])
        units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        kind = Kind(str(units[0].value)) if len(units) == 1 else None
        key = cert.public_key()
    except x509.ExtensionNotFound:
        raise UntrustedCertificate("no subjectAltName") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if isinstance(exc, CertificateError):
            raise
        raise UntrustedCertificate(f"malformed DMSC certificate: {exc}") from None
    if kind is None:
        raise UntrustedCertificate("subject lacks a single OU naming the entity kind")
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise UntrustedCertificate(f"unsupported key type {type(key).__name__}")
    return Identity(domain, name, kind, entity_id(key))


def anchor_domains(anchor: x509.Certificate) -> frozenset[str]:
    """Domains a trust anchor may vouch for: its permitted URI name-constraint subtrees."""
    try:
        nc = anchor.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(s.value for s in nc.permitted_subtrees or ()
                     if isinstance(s, x509.UniformResourceIdentifier))


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateExpired(f"{what} not valid before {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc:
        raise CertificateExpired(f"{what} expired at {cert.not_valid_after_utc}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def verify_chain(cert: x509.Certificate, trust_anchors: Iterable[x509.Certificate], *,
                 now: dt.datetime | None = None,
                 usage: x509.ObjectIdentifier | None = None) -> Identity:
    """Check that ``cert`` is a DMSC end-entity certificate issued directly by one of
    ``trust_anchors``, valid at ``now``, for the anchor's domain, and (if given) allowed
    for the extended key ``usage`` (serverAuth or clientAuth).  Returns its identity.

    Raises :class:`UntrustedCertificate` or :class:`CertificateExpired` (Section 10)."""
    now = now or _utcnow()
    issuer = None
    for anchor in trust_anchors:
        if anchor.subject != cert.issuer or not _is_ca(anchor):
            continue
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        issuer = anchor
        break
    if issuer is None:
        raise UntrustedCertificate(
            f"not issued by a trusted authority: {cert.issuer.rfc4514_string()}")
    _check_validity(issuer, now, "issuing authority")
    _check_validity(cert, now, "certificate")
    if _is_ca(cert):
        raise UntrustedCertificate("a CA certificate cannot be a peer certificate")
    identity = identity_of(cert)
    if identity.domain not in anchor_domains(issuer):
        raise UntrustedCertificate(
            f"authority {issuer.subject.rfc4514_string()} may not vouch for {identity.uri}")
    if usage is not None:
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise UntrustedCertificate("no extendedKeyUsage") from None
        if usage not in eku:
            raise UntrustedCertificate(f"extendedKeyUsage lacks {usage.dotted_string}")
    return identity


class TrustStore:
    """The trust anchors a node accepts: its own domain's CA and, for federation, the
    peer domains' CAs (Section 10).  ``verify`` is the single check every transport
    applies to peer certificates."""

    def __init__(self, anchors: Iterable[x509.Certificate]) -> None:
        self.anchors: tuple[x509.Certificate, ...] = tuple(anchors)
        for anchor in self.anchors:
            if not _is_ca(anchor) or not anchor_domains(anchor):
                raise ValueError(f"{anchor.subject.rfc4514_string()} is not a DMSC domain "
                                 "authority (CA with a URI name constraint)")

    @property
    def domains(self) -> frozenset[str]:
        return frozenset().union(*(anchor_domains(a) for a in self.anchors))

    def verify(self, cert: x509.Certificate, *, now: dt.datetime | None = None,
               usage: x509.ObjectIdentifier | None = None) -> Identity:
        return verify_chain(cert, self.anchors, now=now, usage=usage)

    def pem(self) -> bytes:
        return b"".join(a.public_bytes(serialization.Encoding.PEM) for a in self.anchors)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> TrustStore:
        """Anchors from PEM files (each may hold several certificates)."""
        certs: list[x509.Certificate] = []
        for path in paths:
            certs.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        return cls(certs)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path: str | Path) -> PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: unsupported key type {type(key).__name__}")
    return key


@dataclass(frozen=True, slots=True)
class Credential:
    """An end-entity certificate and, when the holder has it, its private key."""

    certificate: x509.Certificate
    private_key: PrivateKey | None = None

    @property
    def identity(self) -> Identity:
        return identity_of(self.certificate)

    def save(self, directory: str | Path, stem: str | None = None) -> tuple[Path, Path | None]:
        """Write ``<stem>.pem`` (and ``<stem>.key``, mode 0600); stem defaults to the name."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or self.identity.name
        cert_path = directory / f"{stem}.pem"
        cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        if self.private_key is None:
            return cert_path, None
        key_path = directory / f"{stem}.key"
        _write_private(key_path, _key_pem(self.private_key))
        return cert_path, key_path

    @classmethod
    def load(cls, cert_path: str | Path, key_path: str | Path | None = None) -> Credential:
        """The certificate in ``cert_path`` and the private key in ``key_path``;
        ValueError if the key is not the certificate's (a TLS handshake would fail)."""
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        if key_path is None:
            return cls(cert)
        key = load_private_key(key_path)
        der = serialization.Encoding.DER
        spki_format = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(der, spki_format) != \
                cert.public_key().public_bytes(der, spki_format):
            raise ValueError(f"{key_path} is not the private key of the certificate "
                             f"{cert_path} ({cert.subject.rfc4514_string()})")
        return cls(cert, key)


def _sign_algorithm(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass(frozen=True, slots=True)
class DomainAuthority:
    """The CA of one administrative domain (Section 10): issues agent and gateway
    certificates; its certificate is the domain's trust anchor."""

    domain: str
    private_key: PrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, domain: str, *, key: PrivateKey | None = None,
               validity: dt.timedelta = CA_VALIDITY,
               now: dt.datetime | None = None) -> DomainAuthority:
        """A new authority for ``domain`` with a fresh Ed25519 key (or ``key``)."""
        _check_domain(domain)
        key = key or ed25519.Ed25519PrivateKey.generate()
        now = now or _utcnow()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, domain),
                          x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"DMSC domain authority {domain}")])
        pub = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(domain)],
                excluded_subtrees=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .sign(key, _sign_algorithm(key))
        )
        return cls(domain, key, cert)

    @property
    def trust_store(self) -> TrustStore:
        return TrustStore([self.certificate])

    def issue(self, name: str, kind: Kind, *, public_key: PublicKey | None = None,
              validity: dt.timedelta = LEAF_VALIDITY, now: dt.datetime | None = None,
              dns_names: Sequence[str] | None = None,
              ip_addresses: Sequence[str] = ()) -> Credential:
        """Issue a certificate for ``dmsc://<domain>/<name>``.

        Without ``public_key`` a fresh key is generated and returned in the credential:
        Ed25519 for agents, ECDSA P-256 for gateways (OpenSSL cannot serve DTLS 1.2 with
        an Ed25519 certificate, and a gateway's ID is derived from its one key).
        ``dns_names`` defaults to ``("localhost", name)`` for gateways and to none for
        agents."""
        uri = identity_uri(self.domain, name)
        private: PrivateKey | None = None
        if public_key is None:
            private = (ec.generate_private_key(ec.SECP256R1()) if kind is Kind.GATEWAY
                       else ed25519.Ed25519PrivateKey.generate())
            public_key = private.public_key()
        if dns_names is None:
            dns_names = ("localhost", name.lower()) if kind is Kind.GATEWAY else ()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        names += [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        now = now or _utcnow()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.domain),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind.value),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca_pub = _public(self.certificate)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if kind is Kind.OPERATOR \
            else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_pub),
                           critical=False)
            .sign(self.private_key, _sign_algorithm(self.private_key))
        )
        return Credential(cert, private)

    def save(self, directory: str | Path) -> Path:
        """Write ``ca.pem`` and ``ca.key`` (mode 0600) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CA_CERT_FILE).write_bytes(
            self.certificate.public_bytes(serialization.Encoding.PEM))
        _write_private(directory / CA_KEY_FILE, _key_pem(self.private_key))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> DomainAuthority:
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        key = load_private_key(directory / CA_KEY_FILE)
        domains = anchor_domains(cert)
        if len(domains) != 1 or not _is_ca(cert):
            raise ValueError(f"{directory / CA_CERT_FILE} is not a DMSC domain authority")
        if entity_id(key.public_key()) != entity_id(_public(cert)):
            raise ValueError(f"{directory / CA_KEY_FILE} does not match the CA certificate")
        return cls(next(iter(domains)), key, cert)


def _public(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key
