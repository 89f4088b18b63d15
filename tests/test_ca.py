"""Domain authority certificates (draft-dmsc-protocol-00, Sections 3.2 and 10)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.signing import entity_id
from dmscproto.security.ca import (
    CertificateExpired,
    Credential,
    DomainAuthority,
    Identity,
    Kind,
    TrustStore,
    UntrustedCertificate,
    identity_of,
    identity_uri,
    parse_identity_uri,
    verify_chain,
)
from dmscproto.testing import examples

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca_a() -> DomainAuthority:
    return DomainAuthority.create("a.example", now=NOW)


@pytest.fixture(scope="module")
def ca_b() -> DomainAuthority:
    return DomainAuthority.create("b.example", now=NOW)


def test_ca_certificate_profile(ca_a: DomainAuthority) -> None:
    cert = ca_a.certificate
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    nc = ext.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.UniformResourceIdentifier("a.example")]
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    cert.verify_directly_issued_by(cert)  # self-signed


def test_agent_certificate_identity(ca_a: DomainAuthority) -> None:
    cred = ca_a.issue("weather", Kind.AGENT, now=NOW)
    assert cred.private_key is not None
    san = cred.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["dmsc://a.example/weather"]
    assert san.get_values_for_type(x509.DNSName) == []
    eku = cred.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ident = identity_of(cred.certificate)
    assert ident == Identity("a.example", "weather", Kind.AGENT,
                             entity_id(cred.private_key.public_key()))
    assert ident.uri == "dmsc://a.example/weather"


def test_certificate_key_is_the_record_signing_key(ca_a: DomainAuthority) -> None:
    """The agent's certificate key is the key that signs its capability record, so the
    certificate's entity id is the record's Agent ID."""
    cred = ca_a.issue("weather", Kind.AGENT, public_key=examples.AGENT_KEY.public_key(),
                      now=NOW)
    assert cred.private_key is None
    assert identity_of(cred.certificate).entity_id == examples.AGENT_ID
    assert examples.weather_signed().record.agent_id == examples.AGENT_ID


def test_gateway_certificate_dns_names(ca_a: DomainAuthority) -> None:
    cred = ca_a.issue("GW1", Kind.GATEWAY, ip_addresses=["127.0.0.1"], now=NOW)
    san = cred.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw1"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert identity_of(cred.certificate).kind is Kind.GATEWAY


def test_p256_key_accepted(ca_a: DomainAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cred = ca_a.issue("p256", Kind.AGENT, public_key=key.public_key(), now=NOW)
    ident = verify_chain(cred.certificate, [ca_a.certificate], now=NOW)
    assert ident.entity_id == entity_id(key.public_key())


def test_verify_chain_accepts_own_domain(ca_a: DomainAuthority, ca_b: DomainAuthority) -> None:
    cred = ca_a.issue("weather", Kind.AGENT, now=NOW)
    store = TrustStore([ca_b.certificate, ca_a.certificate])
    ident = store.verify(cred.certificate, now=NOW, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    assert (ident.domain, ident.name) == ("a.example", "weather")
    assert store.domains == {"a.example", "b.example"}


def test_untrusted_ca_rejected(ca_a: DomainAuthority, ca_b: DomainAuthority) -> None:
    cred = ca_b.issue("intruder", Kind.AGENT, now=NOW)
    with pytest.raises(UntrustedCertificate) as info:
        verify_chain(cred.certificate, [ca_a.certificate], now=NOW)
    assert info.value.code is ErrorCode.UNTRUSTED_CERTIFICATE


def test_same_subject_other_key_rejected(ca_a: DomainAuthority) -> None:
    """A CA that copies a trusted CA's name but has its own key is not trusted."""
    impostor = DomainAuthority.create("a.example", now=NOW)
    assert impostor.certificate.subject == ca_a.certificate.subject
    cred = impostor.issue("weather", Kind.AGENT, now=NOW)
    with pytest.raises(UntrustedCertificate):
        verify_chain(cred.certificate, [ca_a.certificate], now=NOW)


def test_authority_cannot_vouch_for_other_domain(ca_a: DomainAuthority,
                                                 ca_b: DomainAuthority) -> None:
    """b.example's CA signs a certificate naming dmsc://a.example/...: refused, since
    b's name constraints only permit b.example."""
    rogue = DomainAuthority("a.example", ca_b.private_key, ca_b.certificate)
    cred = rogue.issue("weather", Kind.AGENT, now=NOW)
    with pytest.raises(UntrustedCertificate, match="may not vouch"):
        verify_chain(cred.certificate, [ca_a.certificate, ca_b.certificate], now=NOW)


@pytest.mark.parametrize("offset", [dt.timedelta(days=2), dt.timedelta(days=-1)])
def test_outside_validity_rejected(ca_a: DomainAuthority, offset: dt.timedelta) -> None:
    cred = ca_a.issue("short", Kind.AGENT, validity=dt.timedelta(days=1), now=NOW)
    with pytest.raises(CertificateExpired) as info:
        verify_chain(cred.certificate, [ca_a.certificate], now=NOW + offset)
    assert info.value.code is ErrorCode.CERTIFICATE_EXPIRED
    verify_chain(cred.certificate, [ca_a.certificate], now=NOW + dt.timedelta(hours=1))


def test_expired_authority_rejected() -> None:
    ca = DomainAuthority.create("old.example", validity=dt.timedelta(days=10), now=NOW)
    cred = ca.issue("agent", Kind.AGENT, validity=dt.timedelta(days=100), now=NOW)
    with pytest.raises(CertificateExpired, match="issuing authority"):
        verify_chain(cred.certificate, [ca.certificate], now=NOW + dt.timedelta(days=20))


def test_ca_certificate_is_not_a_peer(ca_a: DomainAuthority) -> None:
    with pytest.raises(UntrustedCertificate):
        verify_chain(ca_a.certificate, [ca_a.certificate], now=NOW)


def test_usage_checked(ca_a: DomainAuthority) -> None:
    cred = ca_a.issue("weather", Kind.AGENT, now=NOW)
    with pytest.raises(UntrustedCertificate, match="extendedKeyUsage"):
        verify_chain(cred.certificate, [ca_a.certificate], now=NOW,
                     usage=ExtendedKeyUsageOID.CODE_SIGNING)


def test_non_dmsc_certificate_rejected(ca_a: DomainAuthority) -> None:
    """A certificate from the trusted CA without a DMSC SAN URI names nobody."""
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .issuer_name(ca_a.certificate.subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("x.example")]), False)
            .sign(ca_a.private_key, None))
    with pytest.raises(UntrustedCertificate, match="SAN URI"):
        verify_chain(cert, [ca_a.certificate], now=NOW)


def test_trust_store_refuses_non_authority(ca_a: DomainAuthority) -> None:
    leaf = ca_a.issue("weather", Kind.AGENT, now=NOW)
    with pytest.raises(ValueError, match="not a DMSC domain authority"):
        TrustStore([leaf.certificate])


def test_save_and_load(tmp_path: Path, ca_a: DomainAuthority) -> None:
    ca_a.save(tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    loaded = DomainAuthority.load(tmp_path / "ca")
    assert loaded.domain == "a.example"
    assert loaded.certificate == ca_a.certificate
    cred = loaded.issue("weather", Kind.AGENT, now=NOW)
    cert_path, key_path = cred.save(tmp_path / "certs")
    assert cert_path.name == "weather.pem" and key_path is not None
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    back = Credential.load(cert_path, key_path)
    assert back.identity == cred.identity
    store = TrustStore.load([tmp_path / "ca" / "ca.pem"])
    assert store.verify(back.certificate, now=NOW).name == "weather"


def test_load_refuses_mismatched_key(tmp_path: Path, ca_a: DomainAuthority,
                                     ca_b: DomainAuthority) -> None:
    ca_a.save(tmp_path)
    (tmp_path / "ca.key").unlink()
    ca_b.save(tmp_path / "b")
    (tmp_path / "b" / "ca.key").rename(tmp_path / "ca.key")
    with pytest.raises(ValueError, match="does not match"):
        DomainAuthority.load(tmp_path)


@pytest.mark.parametrize("uri", ["dmsc://a.example", "https://a.example/x", "dmsc://A.example/x",
                                 "dmsc://a.example/x/y", "dmsc://a.example/", "dmsc://-a/x"])
def test_bad_identity_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_identity_uri(uri)


def test_identity_uri_round_trip() -> None:
    assert parse_identity_uri(identity_uri("b.example", "Trans-1_x.y~")) == (
        "b.example", "Trans-1_x.y~")
    with pytest.raises(ValueError):
        identity_uri("b.example", "has space")
