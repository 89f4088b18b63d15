"""Certificate revocation (draft-dmsc-protocol-00, Section 10.2): X.509 CRLs.

The domain authority signs a CRL (RFC 5280, Section 5) with its CA key, listing the
serial numbers it revoked, with a CRL number that only grows and a ``nextUpdate``
after which the list is stale (:func:`issue_crl`).  Gateways and agents load it into a
:class:`RevocationChecker`, from a file or from the authority's HTTPS endpoint
(:class:`CrlFeed`), and refresh it before it goes stale.

A checker accepts a CRL only if a trust anchor with the CRL's issuer name signed it, and
never goes back to a lower CRL number (a replayed old CRL cannot un-revoke).  A
certificate whose serial is listed is CERTIFICATE_REVOKED.  Once its issuer's CRL is past
``nextUpdate`` the checker cannot know, and refuses that issuer's certificates with
UNTRUSTED_CERTIFICATE (fail closed) until a fresh CRL arrives; an issuer for which no
CRL was ever loaded is accepted unless listed in ``required``.

:class:`RevocationTrustStore` is a :class:`~dmscproto.security.ca.TrustStore` whose
``verify`` also checks revocation, so passing it to
:class:`~dmscproto.transport.tls.TlsIdentity` makes every QUIC and DTLS handshake refuse
revoked peers with the ``certificate_revoked`` alert.
"""

from __future__ import annotations

import datetime as dt
import ssl
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..codec.registry import ErrorCode
from .ca import (
    CLOCK_SKEW,
    CertificateError,
    DomainAuthority,
    Identity,
    TrustStore,
    UntrustedCertificate,
)

#: Default time from a CRL's thisUpdate to its nextUpdate.
CRL_VALIDITY = dt.timedelta(days=1)
#: Bounds of the wait between two CRL refreshes (:meth:`CrlFeed.next_refresh`).
MIN_REFRESH = dt.timedelta(minutes=1)
MAX_REFRESH = dt.timedelta(hours=1)
#: Media type of a DER CRL (RFC 5280, Section 4.2.1.13 / RFC 2585).
CRL_MEDIA_TYPE = "application/pkix-crl"


class CertificateRevoked(CertificateError):
    """The certificate's serial number is on its issuer's revocation list."""

    code = ErrorCode.CERTIFICATE_REVOKED


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked certificate."""

    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags | None = None


def issue_crl(authority: DomainAuthority, revoked: Iterable[Revocation], *, number: int,
              now: dt.datetime | None = None,
              validity: dt.timedelta = CRL_VALIDITY) -> x509.CertificateRevocationList:
    """A CRL signed by ``authority`` with CRL number ``number`` (RFC 5280, 5.2.3)."""
    now = now or dt.datetime.now(dt.UTC)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(authority.certificate.subject)
               .last_update(now - CLOCK_SKEW).next_update(now + validity)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   authority.certificate.public_key()),  # type: ignore[arg-type]
                   critical=False))
    for r in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(r.serial)
                 .revocation_date(r.revoked_at))
        if r.reason is not None:
            entry = entry.add_extension(x509.CRLReason(r.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    key = authority.private_key
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER octets; ValueError if it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


@dataclass(frozen=True, slots=True)
class _Loaded:
    number: int
    next_update: dt.datetime
    serials: frozenset[int]


class RevocationChecker:
    """The current CRL of each trusted authority (module docstring)."""

    def __init__(self, anchors: Iterable[x509.Certificate], *,
                 required: Iterable[x509.Name] = ()) -> None:
        self._anchors = tuple(anchors)
        self._crls: dict[x509.Name, _Loaded] = {}
        self.required = frozenset(required)
        #: Grows with every CRL installed: a cached verdict older than it is stale.
        self.generation = 0

    def update(self, crl: x509.CertificateRevocationList,
               now: dt.datetime | None = None) -> bool:
        """Install ``crl`` if a trust anchor signed it and its number is not lower than
        the one held; return whether it replaced the held one.  Raises
        :class:`UntrustedCertificate` for a CRL no anchor signed, or that is stale."""
        now = now or dt.datetime.now(dt.UTC)
        if not any(a.subject == crl.issuer and _signed_by(crl, a) for a in self._anchors):
            raise UntrustedCertificate(
                f"revocation list not signed by a trust anchor: {crl.issuer.rfc4514_string()}")
        next_update = crl.next_update_utc
        if next_update is None or next_update < now:
            raise UntrustedCertificate("revocation list is past its nextUpdate")
        number = crl_number(crl)
        held = self._crls.get(crl.issuer)
        if held is not None and number <= held.number:
            return False
        self._crls[crl.issuer] = _Loaded(number, next_update,
                                         frozenset(r.serial_number for r in crl))
        self.generation += 1
        return True

    def number(self, issuer: x509.Name) -> int | None:
        held = self._crls.get(issuer)
        return None if held is None else held.number

    def next_update(self) -> dt.datetime | None:
        """The earliest nextUpdate held: refresh before it."""
        return min((c.next_update for c in self._crls.values()), default=None)

    def check(self, cert: x509.Certificate, now: dt.datetime | None = None) -> None:
        """Raise :class:`CertificateRevoked` if ``cert`` is listed, or
        :class:`UntrustedCertificate` if its issuer's revocation status is unknown."""
        now = now or dt.datetime.now(dt.UTC)
        held = self._crls.get(cert.issuer)
        if held is None:
            if cert.issuer in self.required:
                raise UntrustedCertificate("no revocation list loaded for the issuer")
            return
        if cert.serial_number in held.serials:
            raise CertificateRevoked(f"certificate serial {cert.serial_number:x} is revoked")
        if held.next_update < now:
            raise UntrustedCertificate(
                f"revocation list expired at {held.next_update}; status unknown")


def _signed_by(crl: x509.CertificateRevocationList, anchor: x509.Certificate) -> bool:
    key = anchor.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        return False
    return crl.is_signature_valid(key)


class RevocationTrustStore(TrustStore):
    """A trust store whose :meth:`verify` also applies a :class:`RevocationChecker`."""

    def __init__(self, anchors: Iterable[x509.Certificate],
                 checker: RevocationChecker | None = None) -> None:
        super().__init__(anchors)
        self.revocation = checker or RevocationChecker(self.anchors)

    def verify(self, cert: x509.Certificate, *, now: dt.datetime | None = None,
               usage: x509.ObjectIdentifier | None = None) -> Identity:
        identity = super().verify(cert, now=now, usage=usage)
        self.revocation.check(cert, now)
        return identity


class CrlFeed:
    """Where a node gets its CRLs: files and ``https://`` URLs (the authority's
    ``/crl`` endpoint, :mod:`.token_server`), fetched by :meth:`refresh`."""

    def __init__(self, checker: RevocationChecker, sources: Iterable[str | Path], *,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0) -> None:
        self.checker = checker
        self.sources = [str(s) for s in sources]
        self._ssl = ssl_context
        self._timeout = timeout

    def _fetch(self, source: str) -> bytes:
        if source.startswith("https://"):
            with urllib.request.urlopen(source, timeout=self._timeout,
                                        context=self._ssl) as response:
                data: bytes = response.read()
                return data
        return Path(source).read_bytes()

    def next_refresh(self, now: dt.datetime | None = None) -> dt.datetime:
        """When to call :meth:`refresh` next: half the time left until the earliest
        nextUpdate held, at least MIN_REFRESH and at most MAX_REFRESH from now (so a
        revocation reaches the node within MAX_REFRESH)."""
        now = now or dt.datetime.now(dt.UTC)
        next_update = self.checker.next_update()
        wait = MIN_REFRESH if next_update is None else (next_update - now) / 2
        return now + min(max(wait, MIN_REFRESH), MAX_REFRESH)

    def refresh(self, now: dt.datetime | None = None) -> dict[str, str]:
        """Fetch every source and install what is newer.  Returns, per source that
        failed, why (the old CRL stays until it goes stale)."""
        errors: dict[str, str] = {}
        for source in self.sources:
            try:
                self.checker.update(load_crl(self._fetch(source)), now)
            except (OSError, ValueError) as exc:
                errors[source] = str(exc)
        return errors


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
