"""Access tokens and the authority's HTTPS endpoints (draft Section 10.3): scopes, the
RFC 6749 client-credentials grant over real TLS with mTLS (RFC 8705) and RFC 7523
assertions, the errors of RFC 6749 Section 5.2, and `dmsc authority`."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmscproto.cli import main
from dmscproto.codec.registry import ErrorCode
from dmscproto.security.authority_store import AuthorityStore
from dmscproto.security.ca import Credential, Kind
from dmscproto.security.federation import Federation
from dmscproto.security.revocation import (
    MAX_REFRESH,
    MIN_REFRESH,
    CertificateRevoked,
    CrlFeed,
    RevocationChecker,
)
from dmscproto.security.token_server import (
    TokenRequestError,
    TokenServer,
    client_assertion,
    client_context,
    request_token,
    serve,
)
from dmscproto.security.tokens import (
    DEFAULT_SCOPE,
    Operation,
    ScopeSet,
    TokenVerifier,
    gateway_audience,
)


# --- scopes ---------------------------------------------------------------------------
def test_scope_parse_and_render() -> None:
    s = ScopeSet.parse("route:forecast discover route:alerts register")
    assert str(s) == "register discover route:alerts route:forecast"
    assert ScopeSet.parse("route route:x").grants[Operation.ROUTE] is None
    for bad in ("admin", "route:", "register:a\"b"):
        with pytest.raises(ValueError):
            ScopeSet.parse(bad)


def test_scope_semantics_per_operation() -> None:
    s = ScopeSet.parse("register:forecast route:forecast discover:weather")
    assert s.allows(Operation.REGISTER, ["forecast"])
    assert not s.allows(Operation.REGISTER, ["forecast", "alerts"])  # all must be granted
    assert s.allows(Operation.REGISTER, [])  # REFRESH, DEREGISTER: the operation only
    assert s.allows(Operation.ROUTE, ["alerts", "forecast"])  # target offers one
    assert not s.allows(Operation.ROUTE, ["alerts"]) and not s.allows(Operation.ROUTE, [])
    assert s.allows(Operation.DISCOVER) and s.visible(["weather"]) and not s.visible(["x"])
    assert DEFAULT_SCOPE.covers(s) and not s.covers(DEFAULT_SCOPE)
    assert ScopeSet.parse("route:a route:b").covers(ScopeSet.parse("route:a"))
    assert not ScopeSet.parse("route:a").covers(ScopeSet.parse("route"))


# --- the token endpoint over HTTPS --------------------------------------------------------
@dataclass
class Authority:
    store: AuthorityStore
    server: TokenServer
    agent: Credential
    narrow: Credential
    gateway: Credential

    @property
    def url(self) -> str:
        return self.server.endpoint.url

    @property
    def anchors(self) -> bytes:
        return self.store.authority.trust_store.pem()

    def post(self, form: list[tuple[str, str]], cred: Credential | None = None
             ) -> tuple[int, dict[str, object]]:
        req = urllib.request.Request(self.url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=5,
                                        context=client_context(self.anchors, cred)) as r:
                assert r.headers["Cache-Control"] == "no-store"
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authority]:
    store = AuthorityStore.init(tmp_path_factory.mktemp("auth"), "a.example")
    agent = store.issue("weather", Kind.AGENT)
    narrow = store.issue("narrow", Kind.AGENT, scope=ScopeSet.parse("route:forecast"))
    gateway = store.issue("gw1", Kind.GATEWAY)
    server = serve(store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Authority(store, server, agent, narrow, gateway)
    server.shutdown()
    server.server_close()


def verifier(a: Authority) -> TokenVerifier:
    return TokenVerifier(a.store.authority.certificate, gateway_uri="dmsc://a.example/gw1")


def test_mtls_client_credentials(authority: Authority) -> None:
    resp = request_token(authority.url, authority.agent, authority.anchors,
                         scope="route discover")
    assert resp.token_type == "Bearer" and resp.expires_in == 3600
    assert resp.scope == "discover route"
    tok = verifier(authority).verify(resp.access_token, now=time.time(),
                                     peer_certificate=authority.agent.certificate,
                                     operation=Operation.ROUTE, capabilities=["anything"])
    assert tok.subject == tok.client_id == "dmsc://a.example/weather"
    assert tok.issuer == "dmsc://a.example" and tok.audience == (gateway_audience("a.example"),)
    header = json.loads(base64.urlsafe_b64decode(resp.access_token.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "Ed25519"
    assert header["kid"] == authority.server.endpoint.issuer.kid


def test_default_scope_is_the_recorded_one(authority: Authority) -> None:
    assert request_token(authority.url, authority.agent, authority.anchors).scope == \
        "register discover route"
    assert request_token(authority.url, authority.narrow, authority.anchors).scope == \
        "route:forecast"


def test_jwt_assertion_client(authority: Authority) -> None:
    resp = request_token(authority.url, authority.agent, authority.anchors,
                         scope="register", resources=["dmsc://a.example/gw1"],
                         use_assertion=True)
    tok = verifier(authority).verify(resp.access_token, now=time.time(),
                                     peer_certificate=authority.agent.certificate,
                                     operation=Operation.REGISTER)
    assert tok.audience == ("dmsc://a.example/gw1",)


@pytest.mark.security
def test_assertion_replay_and_forgery_refused(authority: Authority) -> None:
    assertion = client_assertion(authority.agent, authority.url)
    form = [("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion)]
    assert authority.post(form)[0] == 200
    status, body = authority.post(form)
    assert (status, body["error"]) == (401, "invalid_client") and "REPLAY" in \
        str(body["error_description"])
    # an assertion signed by another key than the x5c certificate's
    head, _, _ = assertion.split(".")
    forged = client_assertion(authority.narrow, authority.url).split(".")
    status, body = authority.post([*form[:2], ("client_assertion",
                                               f"{head}.{forged[1]}.{forged[2]}")])
    assert (status, body["error"]) == (401, "invalid_client")
    # an assertion for another token endpoint
    other = client_assertion(authority.agent, "https://elsewhere.example/token")
    status, body = authority.post([*form[:2], ("client_assertion", other)])
    assert (status, body["error"]) == (401, "invalid_client")
    fresh = client_assertion(authority.agent, authority.url)
    assert authority.post([*form[:2], ("client_assertion", fresh)])[0] == 200


@pytest.mark.security
@pytest.mark.parametrize(("form", "mtls", "status", "error"), [
    ([("grant_type", "client_credentials")], False, 401, "invalid_client"),
    ([("grant_type", "password")], True, 400, "unsupported_grant_type"),
    ([], True, 400, "invalid_request"),
    ([("grant_type", "client_credentials")] * 2, True, 400, "invalid_request"),
    ([("grant_type", "client_credentials"), ("scope", "route admin")], True, 400,
     "invalid_scope"),
    ([("grant_type", "client_credentials"), ("client_id", "dmsc://a.example/other")], True,
     401, "invalid_client"),
    ([("grant_type", "client_credentials"), ("resource", "dmsc://b.example/gw")], True, 400,
     "invalid_target"),
])
def test_token_request_errors(authority: Authority, form: list[tuple[str, str]], mtls: bool,
                              status: int, error: str) -> None:
    got = authority.post(form, authority.agent if mtls else None)
    assert got[0] == status and got[1]["error"] == error


@pytest.mark.security
def test_scope_beyond_the_recorded_one_refused(authority: Authority) -> None:
    with pytest.raises(TokenRequestError) as err:
        request_token(authority.url, authority.narrow, authority.anchors, scope="route")
    assert err.value.error == "invalid_scope"
    with pytest.raises(TokenRequestError) as err:  # gateways get no agent tokens
        request_token(authority.url, authority.gateway, authority.anchors)
    assert err.value.error == "invalid_scope"


@pytest.mark.security
def test_revoked_client_gets_no_token_and_gateways_refresh_the_crl(
        authority: Authority, tmp_path: Path) -> None:
    cred = authority.store.issue("leaver", Kind.AGENT)
    token = request_token(authority.url, cred, authority.anchors).access_token
    checker = RevocationChecker([authority.store.authority.certificate])
    feed = CrlFeed(checker, [authority.url.replace("/token", "/crl")],
                   ssl_context=client_context(authority.anchors))
    assert feed.refresh() == {}
    checker.check(cred.certificate)
    authority.store.revoke([cred.certificate.serial_number])
    for use_assertion in (False, True):
        with pytest.raises(TokenRequestError) as err:
            request_token(authority.url, cred, authority.anchors, use_assertion=use_assertion)
        assert err.value.error == "invalid_client" and "CERTIFICATE_REVOKED" in \
            err.value.description
    assert feed.refresh() == {}
    with pytest.raises(CertificateRevoked) as exc:
        checker.check(cred.certificate)
    assert exc.value.code is ErrorCode.CERTIFICATE_REVOKED
    # a token issued before the revocation still verifies: tokens are short-lived and
    # the gateway's certificate check (with the refreshed CRL) refuses the peer
    assert verifier(authority).verify(token, now=time.time(),
                                      peer_certificate=cred.certificate).subject.endswith(
                                          "/leaver")


def test_jwks_and_no_client_cert_needed_for_crl(authority: Authority) -> None:
    ctx = client_context(authority.anchors)
    base = authority.url.removesuffix("/token")
    with urllib.request.urlopen(base + "/jwks", context=ctx, timeout=5) as r:
        keys = json.loads(r.read())["keys"]
    assert keys[0]["kty"] == "OKP" and keys[0]["crv"] == "Ed25519"
    assert keys[0]["kid"] == authority.server.endpoint.issuer.kid
    with urllib.request.urlopen(base + "/crl", context=ctx, timeout=5) as r:
        assert r.headers["Content-Type"] == "application/pkix-crl" and r.read()[0] == 0x30


# --- dmsc authority ----------------------------------------------------------------------
def test_cli_init_issue_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "auth")
    assert main(["authority", "init", d, "--domain", "a.example",
                 "--crl-validity-hours", "2"]) == 0
    assert main(["authority", "init", d, "--domain", "a.example"]) == 2
    assert main(["authority", "issue", d, "weather", "--scope", "route:forecast",
                 "--validity-days", "7"]) == 0
    assert main(["authority", "issue", d, "gw1", "--kind", "gateway",
                 "--out", str(tmp_path / "gw")]) == 0
    assert (tmp_path / "gw" / "gw1.key").stat().st_mode & 0o777 == 0o600
    assert main(["authority", "issue", d, "authority"]) == 2  # reserved
    cred = Credential.load(tmp_path / "auth" / "issued" / "weather.pem",
                           tmp_path / "auth" / "issued" / "weather.key")
    life = cred.certificate.not_valid_after_utc - cred.certificate.not_valid_before_utc
    assert 7 * 86400 <= life.total_seconds() <= 7 * 86400 + 600
    store = AuthorityStore.open(d)
    assert str(store.scope_for(cred.certificate)) == "route:forecast"
    number = store.state.crl_number
    capsys.readouterr()
    assert main(["authority", "revoke", d, "weather", "--reason", "keyCompromise"]) == 0
    assert f"revoked {cred.certificate.serial_number:x}" in capsys.readouterr().out
    assert main(["authority", "revoke", d, "--serial", "abc"]) == 2  # never issued
    assert main(["authority", "revoke", d, "nobody"]) == 2
    crl = AuthorityStore.open(d).crl()
    revoked = crl.get_revoked_certificate_by_serial_number(cred.certificate.serial_number)
    assert revoked is not None
    next_update = crl.next_update_utc
    assert next_update is not None
    assert (next_update - crl.last_update_utc).total_seconds() <= 2 * 3600 + 600
    checker = RevocationChecker([store.authority.certificate])
    assert CrlFeed(checker, [tmp_path / "auth" / "crl.pem"]).refresh() == {}
    assert checker.number(store.authority.certificate.subject) == number + 1
    assert main(["authority", "crl", d]) == 0
    assert main(["authority", "issue", str(tmp_path / "none"), "x"]) == 2


def test_cli_serve_and_token(tmp_path: Path) -> None:
    d = tmp_path / "auth"
    assert main(["authority", "init", str(d), "--domain", "a.example"]) == 0
    assert main(["authority", "issue", str(d), "weather", "--scope", "route:forecast"]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-c", "from dmscproto.cli import main; raise SystemExit(main())",
         "authority", "serve", str(d), "--port", "0", "--token-lifetime", "120"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("token endpoint https://127.0.0.1:"), line
        url = line.split()[-1]
        issued = d / "issued"
        out = subprocess.run(
            [sys.executable, "-c", "from dmscproto.cli import main; raise SystemExit(main())",
             "authority", "token", url, "--cert", str(issued / "weather.pem"),
             "--key", str(issued / "weather.key"), "--ca", str(d / "ca.pem")],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "scope 'route:forecast', expires in 120 s" in out.stderr
        cred = Credential.load(issued / "weather.pem")
        store = AuthorityStore.open(d)
        tok = TokenVerifier(store.authority.certificate).verify(
            out.stdout.strip(), peer_certificate=cred.certificate, now=time.time(),
            operation=Operation.ROUTE, capabilities=["forecast"])
        assert tok.expires_at - tok.issued_at == 120
        bad = subprocess.run(
            [sys.executable, "-c", "from dmscproto.cli import main; raise SystemExit(main())",
             "authority", "token", url, "--cert", str(issued / "weather.pem"),
             "--key", str(issued / "weather.key"), "--ca", str(d / "ca.pem"),
             "--scope", "register"], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and "invalid_scope" in bad.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_federation_crl_feed_over_https(authority: Authority) -> None:
    """A gateway's federation feed fetches its authority's CRL over HTTPS, trusting the
    federation anchors, and schedules the next refresh before nextUpdate."""
    anchor = authority.store.authority.certificate
    fed = Federation("a.example", anchor, [], crl_sources=[
        authority.url.replace("/token", "/crl")])
    feed = fed.crl_feed()
    now = dt.datetime.now(dt.UTC)
    assert feed.next_refresh(now) == now + MIN_REFRESH  # nothing held yet
    assert feed.refresh() == {}
    assert fed.revocation.number(anchor.subject) == authority.store.state.crl_number
    assert feed.next_refresh(now) == now + MAX_REFRESH  # a day left: capped
    next_update = fed.revocation.next_update()
    assert next_update is not None
    soon = next_update - dt.timedelta(minutes=10)
    assert feed.next_refresh(soon) == soon + dt.timedelta(minutes=5)
    broken = Federation("a.example", anchor, [], crl_sources=["https://127.0.0.1:1/crl"])
    assert list(broken.crl_feed().refresh()) == ["https://127.0.0.1:1/crl"]


@pytest.mark.security
def test_stalled_client_does_not_block_the_endpoint(authority: Authority) -> None:
    host, port = authority.server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        resp = request_token(authority.url, authority.agent, authority.anchors,
                             scope="discover", timeout=3)
        assert resp.scope == "discover"


def test_concurrent_revocations_are_not_lost(tmp_path: Path) -> None:
    """Two processes' handles on one authority directory (the CLI and a running token
    server): changes made through one are seen, never overwritten, by the other."""
    one = AuthorityStore.init(tmp_path, "a.example")
    other = AuthorityStore.open(tmp_path)
    x, y = one.issue("x", Kind.AGENT), other.issue("y", Kind.AGENT)
    one.revoke([y.certificate.serial_number])  # one has not re-read since y was issued
    other.revoke([x.certificate.serial_number])
    crl = AuthorityStore.open(tmp_path).crl()
    assert {r.serial_number for r in crl} == {x.certificate.serial_number,
                                              y.certificate.serial_number}
    assert one.write_crl() is not None and AuthorityStore.open(tmp_path).state.crl_number == 4
