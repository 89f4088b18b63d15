"""Cross-domain trust (draft Sections 6.4, 7.4, 10.5, 10.6): federation configuration,
export policy on discovery, import policy on calls and learned records, and origin
assertions on cross-domain ROUTE_REQUESTs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from security_support import NOW, Domain, core_for, record_of, signed_of

from dmscproto.codec.cose import HDR_X5CHAIN
from dmscproto.codec.messages import RouteRequest
from dmscproto.codec.registry import ErrorCode, Scope
from dmscproto.codec.signing import sign_record
from dmscproto.codec.values import DiscoveryQuery, ExportPolicy
from dmscproto.codec.wire import Advertisement
from dmscproto.protocol.certificates import thumbprint
from dmscproto.security.ca import Credential, Kind
from dmscproto.security.errors import SecurityError
from dmscproto.security.federation import Federation, ImportPolicy, PeerDomain
from dmscproto.security.origin import X5T, sign_origin
from dmscproto.security.tokens import ScopeSet, b64url


@dataclass
class World:
    a: Domain
    b: Domain
    c: Domain
    fed_a: Federation  # a federates with b (export: public tags) and c (transit)
    fed_b: Federation  # b federates with a only

    def cred(self, d: Domain, name: str, kind: Kind = Kind.AGENT) -> Credential:
        return d.creds.get(name) or d.issue(name, kind)


def peer(d: Domain, export: ExportPolicy, imports: ImportPolicy, transit: bool = False
         ) -> PeerDomain:
    return PeerDomain(d.name, d.authority.certificate, export, imports, transit)


@pytest.fixture
def world() -> World:
    a, b, c = (Domain.create(n) for n in ("a.example", "b.example", "c.example"))
    fed_a = Federation("a.example", a.authority.certificate, [
        peer(b, ExportPolicy(("b.example",), include_tags=("public",),
                             exclude_tags=("internal",)),
             ImportPolicy(("b.example",), capabilities=("translate",))),
        peer(c, ExportPolicy(("c.example",)), ImportPolicy(("c.example",), ("*",)),
             transit=True)])
    fed_b = Federation("b.example", b.authority.certificate, [
        peer(a, ExportPolicy(("a.example",), include_tags=("public",)),
             ImportPolicy(("a.example",), capabilities=("forecast",)))])
    return World(a, b, c, fed_a, fed_b)


def sec(code: ErrorCode, fn: Callable[[], object]) -> None:
    with pytest.raises(SecurityError) as err:
        fn()
    assert err.value.code is code, err.value.reason


# --- configuration ---------------------------------------------------------------------
def test_load_toml(world: World, tmp_path: Path) -> None:
    for d in (world.a, world.b):
        (tmp_path / f"{d.name}.pem").write_bytes(
            d.authority.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "fed.toml").write_text('''
domain = "a.example"
anchor = "a.example.pem"
crl = "a.crl"
[[peers]]
domain = "b.example"
anchor = "b.example.pem"
crl = "https://authority.b.example/crl"
[peers.export]
include_tags = ["public"]
[peers.import]
capabilities = ["translate"]
''')
    fed = Federation.load(tmp_path / "fed.toml")
    assert fed.crl_sources == (str(tmp_path / "a.crl"), "https://authority.b.example/crl")
    p = fed.peer("b.example")
    assert p.export == ExportPolicy(("b.example",), include_tags=("public",))
    assert p.imports == ImportPolicy(("b.example",), ("translate",)) and not p.transit
    assert fed.trust_store().domains == {"a.example", "b.example"}
    sec(ErrorCode.POLICY_DENIED, lambda: fed.peer("c.example"))
    (tmp_path / "bad.toml").write_text('domain = "a.example"\nanchor = "b.example.pem"\n')
    with pytest.raises(ValueError):
        Federation.load(tmp_path / "bad.toml")


@pytest.mark.security
def test_peer_without_export_table_is_shown_nothing(world: World, tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(
        world.a.authority.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "b.pem").write_bytes(
        world.b.authority.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "fed.toml").write_text('domain = "a.example"\nanchor = "a.pem"\n'
                                       '[[peers]]\ndomain = "b.example"\nanchor = "b.pem"\n')
    fed = Federation.load(tmp_path / "fed.toml")
    assert not fed.exports("b.example", record_of(world.cred(world.a, "weather")))


# --- export policy: discovery never leaks what the policy hides ----------------------------
@pytest.mark.security
def test_discovery_does_not_leak_hidden_records(world: World, tmp_path: Path) -> None:
    core = core_for(tmp_path, "a.example", world.cred(world.a, "gw-a", Kind.GATEWAY))
    public = signed_of(world.cred(world.a, "public"), tags=("public", "weather"))
    secret = signed_of(world.cred(world.a, "secret"), tags=("public", "internal"))
    plain = signed_of(world.cred(world.a, "plain"), tags=("weather",))
    for s in (public, secret, plain):
        assert core.register(s, 600, NOW).status is ErrorCode.SUCCESS
    remote = signed_of(world.cred(world.c, "far"), tags=("public",))
    peer_c = bytes(16)
    assert core.learn(Advertisement(1, (peer_c,), remote), peer_c, NOW)
    query = DiscoveryQuery(skills=("forecast",))

    def names(domain: str) -> set[str]:
        return {r.record.record.name for r in core.discover(
            query, Scope.FEDERATED, 10, NOW, allow=world.fed_a.export_filter(domain))}

    assert names("a.example") == {"public", "secret", "plain", "far"}
    assert names("b.example") == {"public"}  # no transit, excluded tag, not included
    # transit = true: other domains' records, but not c's own back to c (its gateways
    # would refuse them, Section 6.3), unless transit names c.example explicitly
    assert names("c.example") == {"public", "secret", "plain"}
    world.fed_a.peers["c.example"] = replace(world.fed_a.peers["c.example"],
                                             transit=("c.example",))
    assert names("c.example") == {"public", "secret", "plain", "far"}
    assert names("d.example") == set()  # not federated
    # and the gateway still answers its own domain in full afterwards
    assert len(core.discover(query, Scope.LOCAL, 10, NOW)) == 3


# --- import policy on learned records (record poisoning, Section 10.5) -------------------
@pytest.mark.security
def test_advertisements_a_peer_may_not_make(world: World, tmp_path: Path) -> None:
    core = core_for(tmp_path, "a.example", world.cred(world.a, "gw-a", Kind.GATEWAY))
    gw_b = world.cred(world.b, "gw-b", Kind.GATEWAY).identity
    gw_a2 = world.cred(world.a, "gw-a2", Kind.GATEWAY).identity
    own = signed_of(world.cred(world.a, "weather"))  # a.example record via b: poisoning
    third = signed_of(world.cred(world.c, "far"))  # c.example record via b: not imported
    good = signed_of(world.cred(world.b, "translate"), skills=("translate",))
    forged = replace(good, signature=bytes(64))
    other = world.cred(world.b, "other")
    wrong_chain = replace(good, unprotected={**good.unprotected, HDR_X5CHAIN: other.certificate
                                             .public_bytes(serialization.Encoding.DER)})
    fake_ca = Domain.create("b.example").issue("translate")
    fake = sign_record(record_of(world.cred(world.b, "translate"), skills=("translate",)),
                       world.b.creds["translate"].private_key)  # type: ignore[arg-type]
    untrusted_chain = replace(fake, unprotected={**fake.unprotected, HDR_X5CHAIN: fake_ca
                                                 .certificate.public_bytes(
                                                     serialization.Encoding.DER)})
    for signed, code in ((own, ErrorCode.POLICY_DENIED), (third, ErrorCode.POLICY_DENIED),
                         (forged, ErrorCode.BAD_SIGNATURE),
                         (wrong_chain, ErrorCode.IDENTITY_MISMATCH),
                         (untrusted_chain, ErrorCode.UNTRUSTED_CERTIFICATE)):
        sec(code, lambda s=signed: world.fed_a.check_advertisement(s, gw_b, NOW))  # type: ignore[misc]
    assert len(core) == 0
    right_chain = replace(good, unprotected={
        **good.unprotected, HDR_X5CHAIN: world.b.creds["translate"].certificate.public_bytes(
            serialization.Encoding.DER)})
    for signed in (good, right_chain):
        world.fed_a.check_advertisement(signed, gw_b, NOW)
    assert core.learn(Advertisement(1, (gw_b.entity_id,), good), gw_b.entity_id, NOW)
    # a gateway of our own domain relays any federated domain, but not unknown ones
    world.fed_a.check_advertisement(third, gw_a2, NOW)
    d = Domain.create("d.example")
    sec(ErrorCode.POLICY_DENIED,
        lambda: world.fed_a.check_advertisement(signed_of(d.issue("x")), gw_a2, NOW))


@pytest.mark.security
def test_foreign_agents_not_served(world: World) -> None:
    sec(ErrorCode.POLICY_DENIED,
        lambda: world.fed_a.check_client(world.cred(world.b, "translate").identity))
    world.fed_a.check_client(world.cred(world.b, "gw-b", Kind.GATEWAY).identity)
    world.fed_a.check_client(world.cred(world.a, "weather").identity)


# --- import policy on calls -------------------------------------------------------------
@pytest.mark.security
def test_cross_domain_call_not_allowed_by_policy(world: World) -> None:
    caller = world.cred(world.a, "weather").identity.uri
    translate = record_of(world.cred(world.b, "translate"), skills=("translate",))
    forecast = record_of(world.cred(world.b, "bforecast"), skills=("forecast",))
    sec(ErrorCode.POLICY_DENIED, lambda: world.fed_a.check_call(caller, forecast))
    world.fed_a.check_call(caller, translate)
    world.fed_a.check_call(caller, record_of(world.cred(world.a, "local")))
    d = Domain.create("d.example")
    sec(ErrorCode.POLICY_DENIED, lambda: world.fed_a.check_call(caller, record_of(
        d.issue("x"))))
    only = Federation("a.example", world.a.authority.certificate, [peer(
        world.b, ExportPolicy(()), ImportPolicy(("b.example",), ("*",), callers=(
            "dmsc://a.example/boss",)))])
    sec(ErrorCode.POLICY_DENIED, lambda: only.check_call(caller, translate))
    only.check_call("dmsc://a.example/boss", translate)


# --- origin assertions --------------------------------------------------------------------
@dataclass
class Call:
    msg: RouteRequest
    target: Credential
    gateway: Credential
    source: Credential
    #: The certificates the peer session holds, by thumbprint (Section 6.10).
    held: dict[bytes, x509.Certificate] = field(default_factory=dict)

    def hold(self, cert: x509.Certificate) -> None:
        self.held[thumbprint(cert.public_bytes(serialization.Encoding.DER))] = cert

    def resolve(self, key: bytes) -> x509.Certificate | None:
        return self.held.get(key)

    def assertion(self, *, now: float = NOW, scope: str = "route",
                  gateway: Credential | None = None, domain: str = "b.example") -> bytes:
        self.hold((gateway or self.gateway).certificate)
        return sign_origin(gateway or self.gateway, self.msg,
                           source_uri=self.source.identity.uri,
                           target_agent=self.target.identity.entity_id, target_domain=domain,
                           scope=ScopeSet.parse(scope), now=now)


@pytest.fixture
def call(world: World) -> Call:
    source = world.cred(world.a, "weather")
    target = world.cred(world.b, "pub-forecast")
    msg = RouteRequest(transaction_id=9, source_agent=source.identity.entity_id,
                       target_agent=target.identity.entity_id, hop_limit=8, path=(),
                       payload=b"forecast for Paris")
    return Call(msg, target, world.cred(world.a, "gw-a", Kind.GATEWAY), source)


@pytest.mark.security
def test_origin_assertion_accepted_once(world: World, call: Call) -> None:
    rec = record_of(call.target, tags=("public",))
    token = call.assertion(scope="route:forecast")
    claims = world.fed_b.verify_origin(token, call.msg, rec, NOW + 1, call.resolve)
    assert claims.gateway.uri == "dmsc://a.example/gw-a"
    assert claims.source_uri == "dmsc://a.example/weather"
    assert str(claims.scope) == "route:forecast"
    header = json.loads(base64.urlsafe_b64decode(token.split(b".")[0] + b"=="))
    ec_key = isinstance(call.gateway.private_key, ec.EllipticCurvePrivateKey)
    assert header["typ"] == "dmsc-origin+jwt"
    assert header["alg"] == ("ES256" if ec_key else "Ed25519")
    der = call.gateway.certificate.public_bytes(serialization.Encoding.DER)
    assert header["x5t#S256"] == b64url(thumbprint(der)) and "x5c" not in header
    sec(ErrorCode.REPLAY, lambda: world.fed_b.verify_origin(token, call.msg, rec, NOW + 2,
                                                            call.resolve))


ORIGIN_CASES: dict[str, tuple[Callable[[World, Call], tuple[bytes, RouteRequest, bool]],
                              ErrorCode]] = {
    "tampered-payload": (lambda w, c: (c.assertion(), replace(c.msg, payload=b"other"), True),
                         ErrorCode.IDENTITY_MISMATCH),
    "other-source": (lambda w, c: (c.assertion(), replace(c.msg, source_agent=bytes(16)),
                                   True), ErrorCode.IDENTITY_MISMATCH),
    "not-exported": (lambda w, c: (c.assertion(), c.msg, False), ErrorCode.POLICY_DENIED),
    "narrow-scope": (lambda w, c: (c.assertion(scope="route:alerts"), c.msg, True),
                     ErrorCode.INSUFFICIENT_SCOPE),
    "expired": (lambda w, c: (c.assertion(now=NOW - 3600), c.msg, True),
                ErrorCode.TOKEN_EXPIRED),
    "wrong-audience": (lambda w, c: (c.assertion(domain="c.example"), c.msg, True),
                       ErrorCode.WRONG_AUDIENCE),
    "signed-by-agent": (lambda w, c: (_agent_signed(w, c), c.msg, True),
                        ErrorCode.IDENTITY_MISMATCH),
    "unfederated-origin": (lambda w, c: (c.assertion(gateway=w.cred(
        w.c, "gw-c", Kind.GATEWAY)), c.msg, True), ErrorCode.UNTRUSTED_CERTIFICATE),
    "forged-signature": (lambda w, c: (c.assertion()[:-4] + b"AAAA", c.msg, True),
                         ErrorCode.INVALID_TOKEN),
    "garbage": (lambda w, c: (b"xyz", c.msg, True), ErrorCode.INVALID_TOKEN),
    "certificate-not-held": (lambda w, c: (c.assertion(gateway=w.cred(
        w.a, "gw-a2", Kind.GATEWAY)), c.msg, True), ErrorCode.CERTIFICATE_UNKNOWN),
    "x5c-instead-of-x5t": (lambda w, c: (_resigned(c, _x5c), c.msg, True),
                           ErrorCode.INVALID_TOKEN),
}


def _resigned(c: Call, edit: Callable[[dict[str, Any]], object],
              signer: Credential | None = None) -> bytes:
    """A good origin assertion with its header edited, signed again by the gateway (or
    by ``signer``, named iss: sign_origin refuses an agent's key, so by hand)."""
    from dmscproto.security.tokens import sign_jwt
    good = c.assertion()
    header = json.loads(base64.urlsafe_b64decode(good.split(b".")[0] + b"=="))
    claims = json.loads(base64.urlsafe_b64decode(good.split(b".")[1] + b"=="))
    del header["alg"]
    edit(header)
    signer = signer or c.gateway
    claims["iss"] = signer.identity.uri
    return sign_jwt(header, claims, signer.private_key).encode()  # type: ignore[arg-type]


def _x5c(header: dict[str, Any]) -> None:
    """The certificate carried in x5c rather than named (the form before Section 6.10)."""
    del header[X5T]
    header["x5c"] = ["MIIB" + "A" * 60]


def _agent_signed(w: World, c: Call) -> bytes:
    """An origin assertion made with an agent's key, naming its certificate, which the
    session holds."""
    c.hold(c.source.certificate)
    der = c.source.certificate.public_bytes(serialization.Encoding.DER)
    return _resigned(c, lambda h: h.update({X5T: b64url(thumbprint(der))}), c.source)


@pytest.mark.security
@pytest.mark.parametrize("case", sorted(ORIGIN_CASES))
def test_origin_assertion_refused(world: World, call: Call, case: str) -> None:
    build, code = ORIGIN_CASES[case]
    token, msg, exported = build(world, call)
    rec = record_of(call.target, tags=("public",) if exported else ("private",))
    held = dict(call.held)
    if case == "certificate-not-held":
        call.held.clear()
    sec(code, lambda: world.fed_b.verify_origin(token, msg, rec, NOW, call.resolve))
    # the destination still accepts the next good call
    call.held = held
    good = record_of(call.target, tags=("public",))
    world.fed_b.verify_origin(call.assertion(), call.msg, good, NOW, call.resolve)


@pytest.mark.security
def test_check_open_rules(world: World) -> None:
    from dmscproto.codec.messages import Open
    gw_b = world.cred(world.b, "gw-b", Kind.GATEWAY).identity
    agent_b = world.cred(world.b, "translate").identity
    gw_d = Domain.create("d.example").issue("gw-d", Kind.GATEWAY).identity

    def open_of(domain: str, gid: bytes) -> Open:
        return Open(gateway_id=gid, domain=domain, hold_time=90, capabilities=0)

    assert world.fed_a.check_open(open_of("b.example", gw_b.entity_id), gw_b) is \
        world.fed_a.peers["b.example"]
    sec(ErrorCode.IDENTITY_MISMATCH,
        lambda: world.fed_a.check_open(open_of("b.example", agent_b.entity_id), agent_b))
    sec(ErrorCode.IDENTITY_MISMATCH,
        lambda: world.fed_a.check_open(open_of("c.example", gw_b.entity_id), gw_b))
    sec(ErrorCode.POLICY_DENIED,
        lambda: world.fed_a.check_open(open_of("d.example", gw_d.entity_id), gw_d))
    gw_a2 = world.cred(world.a, "gw-a2", Kind.GATEWAY).identity
    assert world.fed_a.check_open(open_of("a.example", gw_a2.entity_id), gw_a2) is None
