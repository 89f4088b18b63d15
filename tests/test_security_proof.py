"""Registration proof (draft Sections 5.1, 10.2-10.4): RequestVerifier + GatewayCore.

Every negative case ends in its registered error code, stores nothing, and the gateway
then accepts the next good REGISTER.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from security_support import NOW, Domain, at, core_for, handle_register, register, signed_of

from dmscproto.codec.cose import HDR_X5CHAIN, SignedRecord
from dmscproto.codec.messages import Deregister, Refresh, Register
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.signing import verify_record
from dmscproto.gateway.core import GatewayCore
from dmscproto.security import proof
from dmscproto.security.ca import Credential, DomainAuthority, Kind
from dmscproto.security.errors import SecurityError
from dmscproto.security.proof import RequestVerifier, SignaturePrecheck
from dmscproto.security.replay import FRESHNESS_WINDOW_MS, ReplayCache, check_fresh
from dmscproto.security.revocation import (
    Revocation,
    RevocationTrustStore,
    issue_crl,
)
from dmscproto.security.tokens import ScopeSet, TokenIssuer, TokenVerifier
from dmscproto.testing.harness import make_record


@dataclass
class Gw:
    a: Domain
    weather: Credential
    rogue: Credential
    verifier: RequestVerifier
    core: GatewayCore
    issuer: TokenIssuer

    def token(self, cred: Credential, scope: str = "register", *, now: float = NOW,
              audience: tuple[str, ...] = ()) -> bytes:
        return self.issuer.issue(cred.certificate, cred.identity.uri, ScopeSet.parse(scope),
                                 now=now, audience=audience).encode()

    def good(self, *, token: bool = False) -> Register:
        return register(signed_of(self.weather),
                        token=self.token(self.weather) if token else None)


def make_gw(tmp_path: Path, *, tokens: bool = False) -> Gw:
    a = Domain.create("a.example")
    gw = a.issue("gw1", Kind.GATEWAY)
    weather, rogue = a.issue("weather"), a.issue("rogue")
    trust = RevocationTrustStore([a.authority.certificate])
    trust.revocation.update(issue_crl(a.authority, [], number=1, now=at(NOW)), at(NOW))
    verifier = RequestVerifier(trust, tokens=TokenVerifier(
        a.authority.certificate, gateway_uri=gw.identity.uri) if tokens else None)
    return Gw(a, weather, rogue, verifier, core_for(tmp_path, "a.example", gw),
              TokenIssuer(a.authority))


@pytest.fixture
def gw(tmp_path: Path) -> Gw:
    return make_gw(tmp_path)


@pytest.fixture
def tgw(tmp_path: Path) -> Gw:
    return make_gw(tmp_path, tokens=True)


def refused_then_served(g: Gw, msg: Register, cert: Credential, code: ErrorCode, *,
                        token: bool = False) -> None:
    ack = handle_register(g.verifier, g.core, msg, cert)
    assert ack.status is code, ack.diagnostic
    assert len(g.core) == 0 and len(g.core.store) == 0  # nothing stored
    ok = handle_register(g.verifier, g.core, g.good(token=token), g.weather)
    assert ok.status is ErrorCode.SUCCESS, ok.diagnostic
    assert ok.agent_id == g.weather.identity.entity_id and g.weather.identity.entity_id in g.core


def test_good_registration_is_stored(gw: Gw) -> None:
    ack = handle_register(gw.verifier, gw.core, gw.good(), gw.weather)
    assert ack.status is ErrorCode.SUCCESS and ack.lease == 600
    stored = gw.core.get(gw.weather.identity.entity_id)
    assert stored is not None and stored.signed.record.agent_uri == "dmsc://a.example/weather"


def _flip(sig: bytes) -> bytes:
    return bytes([sig[0] ^ 1]) + sig[1:]


Case = Callable[[Gw], tuple[Register, Credential]]

CASES: dict[str, tuple[Case, ErrorCode]] = {
    "forged-signature": (lambda g: (register(replace(
        signed_of(g.weather), signature=_flip(signed_of(g.weather).signature))), g.weather),
        ErrorCode.BAD_SIGNATURE),
    "signed-by-another-key": (lambda g: (register(replace(
        signed_of(g.weather), signature=signed_of(g.rogue).signature)), g.weather),
        ErrorCode.BAD_SIGNATURE),
    "record-of-another-agent": (lambda g: (register(signed_of(g.weather)), g.rogue),
                                ErrorCode.IDENTITY_MISMATCH),
    "record-uri-not-certificate": (lambda g: (register(signed_of(
        g.weather, uri="dmsc://a.example/someone-else")), g.weather),
        ErrorCode.IDENTITY_MISMATCH),
    "gateway-registers-as-agent": (lambda g: (register(signed_of(
        g.a.creds["gw1"])), g.a.creds["gw1"]), ErrorCode.IDENTITY_MISMATCH),
    "x5chain-of-another-certificate": (lambda g: (register(_chained(
        signed_of(g.weather), g.rogue)), g.weather), ErrorCode.IDENTITY_MISMATCH),
    "untrusted-ca": (lambda g: _impostor(g), ErrorCode.UNTRUSTED_CERTIFICATE),
    "expired-certificate": (lambda g: _expired(g), ErrorCode.CERTIFICATE_EXPIRED),
    "revoked-certificate": (lambda g: _revoked(g), ErrorCode.CERTIFICATE_REVOKED),
    "stale-timestamp": (lambda g: (register(signed_of(g.weather), timestamp=int(
        NOW * 1000) - FRESHNESS_WINDOW_MS - 1), g.weather), ErrorCode.STALE_TIMESTAMP),
    "future-timestamp": (lambda g: (register(signed_of(g.weather), timestamp=int(
        NOW * 1000) + FRESHNESS_WINDOW_MS + 1), g.weather), ErrorCode.STALE_TIMESTAMP),
    "foreign-domain-record": (lambda g: _foreign(g), ErrorCode.UNTRUSTED_CERTIFICATE),
}


def _chained(signed: SignedRecord, leaf: Credential) -> SignedRecord:
    """``signed`` with an x5chain header (unprotected, so the signature still holds)
    whose first certificate is ``leaf``'s (Section 5.1.1, step 2)."""
    der = leaf.certificate.public_bytes(Encoding.DER)
    return replace(signed, unprotected={**signed.unprotected, HDR_X5CHAIN: der})


def _impostor(g: Gw) -> tuple[Register, Credential]:
    """A second, untrusted authority for the same domain name issues 'weather'."""
    fake = DomainAuthority.create("a.example", now=at(NOW - 3600))
    cred = fake.issue("weather", Kind.AGENT, now=at(NOW - 60))
    return register(signed_of(cred)), cred


def _expired(g: Gw) -> tuple[Register, Credential]:
    cred = g.a.issue("old", now=NOW - 10 * 86400, validity=dt.timedelta(days=1))
    return register(signed_of(cred)), cred


def _revoked(g: Gw) -> tuple[Register, Credential]:
    cred = g.a.issue("fired")
    crl = issue_crl(g.a.authority, [Revocation(cred.certificate.serial_number, at(NOW))],
                    number=2, now=at(NOW))
    assert isinstance(g.verifier.trust, RevocationTrustStore)
    g.verifier.trust.revocation.update(crl, at(NOW))
    return register(signed_of(cred)), cred


def _foreign(g: Gw) -> tuple[Register, Credential]:
    b = Domain.create("b.example")
    cred = b.issue("spy")
    return register(signed_of(cred)), cred


@pytest.mark.security
@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_register(gw: Gw, case: str) -> None:
    build, code = CASES[case]
    msg, cert = build(gw)
    refused_then_served(gw, msg, cert, code)


@pytest.mark.security
def test_replayed_register(gw: Gw) -> None:
    msg = gw.good()
    assert handle_register(gw.verifier, gw.core, msg, gw.weather).status is ErrorCode.SUCCESS
    before = gw.core.get(gw.weather.identity.entity_id)
    ack = handle_register(gw.verifier, gw.core, msg, gw.weather, NOW + 60)
    assert ack.status is ErrorCode.REPLAY
    assert gw.core.get(gw.weather.identity.entity_id) == before  # lease not renewed
    ok = handle_register(gw.verifier, gw.core, replace(msg, nonce=os.urandom(16)),
                         gw.weather, NOW + 60)
    assert ok.status is ErrorCode.SUCCESS
    renewed = gw.core.get(gw.weather.identity.entity_id)
    assert renewed is not None and before is not None
    assert renewed.expires_at == before.expires_at + 60


@pytest.mark.security
def test_name_owned_by_another_key(gw: Gw) -> None:
    """The authority re-issued 'weather' with a new key while the old registration
    lives: the core refuses the second key with NAME_CONFLICT."""
    assert handle_register(gw.verifier, gw.core, gw.good(), gw.weather).status \
        is ErrorCode.SUCCESS
    second = gw.a.issue("weather")
    assert second.identity.entity_id != gw.weather.identity.entity_id
    ack = handle_register(gw.verifier, gw.core, register(signed_of(second)), second)
    assert ack.status is ErrorCode.NAME_CONFLICT
    assert second.identity.entity_id not in gw.core and len(gw.core) == 1
    other = gw.a.issue("other")
    assert handle_register(gw.verifier, gw.core, register(signed_of(other)), other).status \
        is ErrorCode.SUCCESS


# --- tokens (Section 10.3) ----------------------------------------------------------------
TOKEN_CASES: dict[str, tuple[Callable[[Gw], bytes | None], ErrorCode]] = {
    "missing": (lambda g: None, ErrorCode.INVALID_TOKEN),
    "garbage": (lambda g: b"not.a.jwt", ErrorCode.INVALID_TOKEN),
    "other-authority": (lambda g: TokenIssuer(DomainAuthority.create("a.example")).issue(
        g.weather.certificate, g.weather.identity.uri, ScopeSet.parse("register"),
        now=NOW).encode(), ErrorCode.INVALID_TOKEN),
    "wrong-scope": (lambda g: g.token(g.weather, "discover route"),
                    ErrorCode.INSUFFICIENT_SCOPE),
    "narrowed-to-other-capability": (lambda g: g.token(g.weather, "register:alerts"),
                                     ErrorCode.INSUFFICIENT_SCOPE),
    "wrong-audience": (lambda g: g.token(g.weather, audience=("dmsc://a.example/gw2",)),
                       ErrorCode.WRONG_AUDIENCE),
    "expired": (lambda g: g.token(g.weather, now=NOW - 7200), ErrorCode.TOKEN_EXPIRED),
    "bound-to-another-key": (lambda g: g.token(g.rogue), ErrorCode.TOKEN_KEY_MISMATCH),
}


@pytest.mark.security
@pytest.mark.parametrize("case", sorted(TOKEN_CASES))
def test_refused_token(tgw: Gw, case: str) -> None:
    build, code = TOKEN_CASES[case]
    msg = register(signed_of(tgw.weather), token=build(tgw))
    refused_then_served(tgw, msg, tgw.weather, code, token=True)


def test_narrowed_register_scope_and_own_gateway_audience(tgw: Gw) -> None:
    token = tgw.token(tgw.weather, "register:forecast register:alerts",
                      audience=("dmsc://a.example/gw1",))
    ack = handle_register(tgw.verifier, tgw.core, register(signed_of(tgw.weather),
                                                           token=token), tgw.weather)
    assert ack.status is ErrorCode.SUCCESS


def test_refused_request_does_not_burn_its_nonce(tgw: Gw) -> None:
    nonce = os.urandom(16)
    bad = register(signed_of(tgw.weather), nonce=nonce, token=tgw.token(tgw.weather, "route"))
    assert handle_register(tgw.verifier, tgw.core, bad, tgw.weather).status \
        is ErrorCode.INSUFFICIENT_SCOPE
    good = replace(bad, token=tgw.token(tgw.weather))
    assert handle_register(tgw.verifier, tgw.core, good, tgw.weather).status \
        is ErrorCode.SUCCESS


@pytest.mark.security
def test_refresh_and_deregister_only_for_own_agent_id(gw: Gw) -> None:
    assert handle_register(gw.verifier, gw.core, gw.good(), gw.weather).status \
        is ErrorCode.SUCCESS
    aid = gw.weather.identity.entity_id
    ts = int(NOW * 1000)
    for msg in (Refresh(agent_id=aid, lease=600, nonce=os.urandom(16), timestamp=ts),
                Deregister(agent_id=aid, nonce=os.urandom(16), timestamp=ts)):
        with pytest.raises(SecurityError) as err:
            (gw.verifier.refresh if isinstance(msg, Refresh) else gw.verifier.deregister)(
                msg, gw.rogue.certificate, NOW)  # type: ignore[arg-type]
        assert err.value.code is ErrorCode.IDENTITY_MISMATCH
    assert aid in gw.core
    dereg = Deregister(agent_id=aid, nonce=os.urandom(16), timestamp=ts)
    assert gw.verifier.deregister(dereg, gw.weather.certificate, NOW).identity.entity_id == aid
    with pytest.raises(SecurityError) as err:
        gw.verifier.deregister(dereg, gw.weather.certificate, NOW)
    assert err.value.code is ErrorCode.REPLAY


# --- the replay cache -------------------------------------------------------------------
def test_freshness_window_edges() -> None:
    check_fresh(1_000_000, 1_000_000 + FRESHNESS_WINDOW_MS)
    check_fresh(1_000_000 + FRESHNESS_WINDOW_MS, 1_000_000)
    with pytest.raises(SecurityError) as err:
        check_fresh(1_000_000, 1_000_001 + FRESHNESS_WINDOW_MS)
    assert err.value.code is ErrorCode.STALE_TIMESTAMP


def test_replay_cache_expires_and_is_bounded() -> None:
    cache = ReplayCache(window_ms=1000, capacity=3, per_agent=2)
    cache.accept(b"a", b"n1", 10_000, 10_000)
    with pytest.raises(SecurityError) as err:
        cache.accept(b"a", b"n1", 10_500, 10_500)
    assert err.value.code is ErrorCode.REPLAY
    cache.accept(b"a", b"n2", 10_000, 10_000)
    with pytest.raises(SecurityError) as err:
        cache.accept(b"a", b"n3", 10_000, 10_000)
    assert err.value.code is ErrorCode.RATE_LIMITED  # one agent cannot fill the cache
    cache.accept(b"b", b"n1", 10_000, 10_000)
    with pytest.raises(SecurityError) as err:
        cache.accept(b"c", b"n1", 10_000, 10_000)
    assert err.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert len(cache) == 3
    # remembered until timestamp + window, then the freshness check takes over
    assert cache.seen(b"a", b"n1", 11_000)
    assert not cache.seen(b"a", b"n1", 11_001) and len(cache) == 0
    with pytest.raises(SecurityError) as err:
        cache.accept(b"a", b"n1", 10_000, 11_001)
    assert err.value.code is ErrorCode.STALE_TIMESTAMP
    cache.accept(b"c", b"n1", 11_001, 11_001)


@pytest.mark.security
def test_check_dispatches_and_refuses_unauthenticated(gw: Gw) -> None:
    msg = gw.good()
    with pytest.raises(SecurityError) as err:
        gw.verifier.check(msg, None, NOW)
    assert err.value.code is ErrorCode.UNTRUSTED_CERTIFICATE
    assert gw.verifier.check(msg, gw.weather.certificate, NOW).identity == gw.weather.identity
    aid, ts = gw.weather.identity.entity_id, int(NOW * 1000)
    refresh = Refresh(agent_id=aid, lease=60, nonce=os.urandom(16), timestamp=ts)
    assert gw.verifier.check(refresh, gw.weather.certificate, NOW).token is None
    with pytest.raises(SecurityError) as err:
        gw.verifier.check(refresh, gw.weather.certificate, NOW)
    assert err.value.code is ErrorCode.REPLAY


def test_signature_precheck_passes_each_checked_envelope_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Signatures checked in the worker pass on the loop without a second check, once;
    a failed one is checked again there and named (BAD_SIGNATURE)."""
    calls: list[bytes] = []

    def counted(signed: SignedRecord) -> None:
        calls.append(signed.signature)
        verify_record(signed)

    monkeypatch.setattr(proof, "verify_record", counted)
    good = make_record(60, "precheck", "a.example")
    bad = replace(good, signature=bytes(64))
    pre = SignaturePrecheck()
    asyncio.run(pre.precheck([good, bad]))
    assert len(calls) == 2
    pre.check_signature(good)
    assert len(calls) == 2
    pre.check_signature(good)  # used once: checked again
    assert len(calls) == 3
    with pytest.raises(SecurityError) as info:
        pre.check_signature(bad)
    assert info.value.code is ErrorCode.BAD_SIGNATURE and len(calls) == 4
    pre.close()
