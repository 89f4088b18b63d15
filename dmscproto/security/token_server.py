"""The domain authority's HTTPS endpoints (draft-dmsc-protocol-00, Section 10.3).

``POST /token``: the OAuth 2.0 client-credentials grant (RFC 6749, Section 4.4).  The
client authenticates either

* with its DMSC certificate as the TLS client certificate (RFC 8705, Section 2,
  ``tls_client_auth``: the certificate's identity URI is the client_id), or
* with a JWT client assertion (RFC 7523, Sections 2.2 and 3:
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``)
  signed with its certificate key, the certificate in the ``x5c`` header, ``iss`` and
  ``sub`` its identity URI, ``aud`` the token endpoint URL or the issuer, ``exp`` at
  most :data:`MAX_ASSERTION_LIFETIME` ahead, and a ``jti`` that is never accepted twice.

Either way the certificate must chain to the authority, be valid and not revoked.  The
token (:mod:`.tokens`) is bound to that certificate (``cnf`` ``x5t#S256``); its scope is
the requested ``scope``, which must lie within the scope recorded when the certificate
was issued (all of it when absent); RFC 8707 ``resource`` parameters narrow the
audience to named gateways of the domain.  Errors follow RFC 6749, Section 5.2
(``invalid_request``, ``invalid_client`` with status 401, ``unsupported_grant_type``,
``invalid_scope``) and RFC 8707 (``invalid_target``).

``GET /crl``: the current CRL, DER (:mod:`.revocation`), for gateways' :class:`CrlFeed`.
``GET /jwks``: the token signing key as a JWK Set (RFC 7517), for inspection.

:class:`TokenEndpoint` is the protocol logic without I/O; :func:`serve` puts it behind
``http.server`` over TLS 1.3; :func:`request_token` is the client side.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..codec.registry import ErrorCode
from ..codec.signing import PrivateKey
from ..errors import DmscError
from .authority_store import AuthorityStore
from .ca import Credential, Identity, parse_identity_uri
from .errors import SecurityError
from .proof import check_certificate, utc
from .replay import ReplayCache
from .revocation import CRL_MEDIA_TYPE, RevocationTrustStore
from .tokens import (
    ScopeSet,
    TokenIssuer,
    audiences,
    b64url,
    check_times,
    gateway_audience,
    jose_key,
    sign_jwt,
    verify_jwt,
)

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Longest a client assertion may be valid for (seconds ahead of now).
MAX_ASSERTION_LIFETIME = 300
#: Socket timeout of a connection (handshake, request, response), seconds.
IO_TIMEOUT = 10.0
#: Largest request body accepted.
MAX_BODY = 8192
TOKEN_PATH = "/token"
CRL_PATH = "/crl"
JWKS_PATH = "/jwks"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def _json(status: int, obj: Mapping[str, Any], headers: Mapping[str, str] | None = None
          ) -> Response:
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
    return Response(status, json.dumps(obj).encode(), headers=no_store)


class OAuthError(Exception):
    """An RFC 6749 Section 5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status

    def response(self) -> Response:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_client"'} \
            if self.status == 401 else {}
        return _json(self.status, {"error": self.error, "error_description": self.description},
                     headers)


def _invalid_client(reason: str) -> OAuthError:
    return OAuthError("invalid_client", reason, 401)


class TokenEndpoint:
    """Token, CRL and JWKS endpoints of one authority, without I/O (thread-safe)."""

    def __init__(self, store: AuthorityStore, *, url: str,
                 issuer: TokenIssuer | None = None) -> None:
        self.store = store
        self.url = url
        self.issuer = issuer or TokenIssuer(store.authority)
        self.trust = RevocationTrustStore([store.authority.certificate])
        self._assertions = ReplayCache(window_ms=MAX_ASSERTION_LIFETIME * 1000)
        self._lock = threading.Lock()

    def _current_trust(self, now: float) -> RevocationTrustStore:
        self.store.reload()
        self.trust.revocation.update(self.store.crl(utc(now)), utc(now))
        return self.trust

    def _client_cert(self, cert: x509.Certificate, now: float) -> Identity:
        try:
            return check_certificate(self._current_trust(now), cert, now,
                                     ExtendedKeyUsageOID.CLIENT_AUTH)
        except SecurityError as exc:
            raise _invalid_client(f"client certificate refused ({exc.code.name}): "
                                  f"{exc.reason}") from None

    def _assertion(self, assertion: str, now: float) -> tuple[x509.Certificate, Identity]:
        """RFC 7523: the client's certificate from ``x5c``, after every check."""
        try:
            header = json.loads(base64.urlsafe_b64decode(
                assertion.split(".", 1)[0] + "==="))
            x5c = header["x5c"]
            cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
        except (ValueError, KeyError, TypeError, IndexError):
            raise _invalid_client("client assertion lacks a usable x5c header") from None
        identity = self._client_cert(cert, now)
        try:
            token = verify_jwt(assertion, cert.public_key())  # type: ignore[arg-type]
            c = token.claims
            if c.get("iss") != identity.uri or c.get("sub") != identity.uri:
                raise _invalid_client("assertion iss and sub must be the certificate's URI")
            if {self.url, self.issuer.issuer}.isdisjoint(audiences(c)):
                raise _invalid_client("assertion audience is not this token endpoint")
            exp, jti = c.get("exp"), c.get("jti")
            if not isinstance(jti, str) or not jti:
                raise _invalid_client("assertion lacks a jti")
            check_times({"iat": now, **c}, now, "assertion")
            if not isinstance(exp, int | float) or exp > now + MAX_ASSERTION_LIFETIME:
                raise _invalid_client(f"assertion must expire within "
                                      f"{MAX_ASSERTION_LIFETIME} s")
            now_ms = int(now * 1000)
            self._assertions.accept(identity.entity_id,
                                    hashlib.sha256(jti.encode()).digest()[:16], now_ms, now_ms)
        except SecurityError as exc:
            raise _invalid_client(f"client assertion refused ({exc.code.name}): "
                                  f"{exc.reason}") from None
        return cert, identity

    def token(self, form: Mapping[str, Sequence[str]], client_cert: x509.Certificate | None,
              now: float | None = None) -> Response:
        """``POST /token`` with the parsed form and the TLS client certificate."""
        now = time.time() if now is None else now
        with self._lock:
            try:
                return self._token(form, client_cert, now)
            except OAuthError as exc:
                return exc.response()

    def _token(self, form: Mapping[str, Sequence[str]], client_cert: x509.Certificate | None,
               now: float) -> Response:
        single = {}
        for key, values in form.items():
            if key != "resource" and len(values) != 1:
                raise OAuthError("invalid_request", f"parameter {key} repeated")
            single[key] = values[0]
        grant = single.get("grant_type")
        if grant is None:
            raise OAuthError("invalid_request", "grant_type is missing")
        if grant != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", f"only {GRANT_TYPE} is supported")
        assertion_type = single.get("client_assertion_type")
        if assertion_type is not None:
            if assertion_type != ASSERTION_TYPE or "client_assertion" not in single:
                raise _invalid_client(f"client_assertion_type must be {ASSERTION_TYPE} "
                                      "with a client_assertion")
            cert, identity = self._assertion(single["client_assertion"], now)
        elif client_cert is not None:
            cert, identity = client_cert, self._client_cert(client_cert, now)
        else:
            raise _invalid_client("authenticate with a TLS client certificate or a "
                                  "client assertion")
        if single.get("client_id", identity.uri) != identity.uri:
            raise _invalid_client("client_id is not the certificate's identity")
        allowed = self.store.scope_for(cert)
        if "scope" in single:
            try:
                scope = ScopeSet.parse(single["scope"])
            except ValueError as exc:
                raise OAuthError("invalid_scope", str(exc)) from None
            if not scope or not allowed.covers(scope):
                raise OAuthError("invalid_scope",
                                 f"{single['scope']!r} exceeds what this client may get "
                                 f"({str(allowed)!r})")
        else:
            scope = allowed
        if not scope:
            raise OAuthError("invalid_scope", "this client may not get access tokens")
        resources = list(form.get("resource", ()))
        for r in resources:
            if r != gateway_audience(self.store.domain) and _domain_of(r) != self.store.domain:
                raise OAuthError("invalid_target", f"{r!r} is not a gateway of "
                                 f"{self.store.domain}")
        token = self.issuer.issue(cert, identity.uri, scope, now=now, audience=resources)
        return _json(200, {"access_token": token, "token_type": "Bearer",
                           "expires_in": self.issuer.lifetime, "scope": str(scope)})

    def crl(self, now: float | None = None) -> Response:
        """``GET /crl``: the current CRL in DER."""
        with self._lock:
            crl = self.store.crl(utc(time.time() if now is None else now))
        return Response(200, crl.public_bytes(serialization.Encoding.DER), CRL_MEDIA_TYPE)

    def jwks(self) -> Response:
        """``GET /jwks``: the authority's token signing key."""
        key = jose_key(self.store.authority.private_key.public_key())
        jwk = {**key.as_dict(private=False), "kid": self.issuer.kid, "use": "sig"}
        return _json(200, {"keys": [jwk]})


def _domain_of(uri: str) -> str | None:
    try:
        return parse_identity_uri(uri)[0]
    except ValueError:
        return None


class _Handler(BaseHTTPRequestHandler):
    server: TokenServer
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT

    def setup(self) -> None:
        # The TLS handshake runs here, in the connection's thread, not in accept():
        # a client that never completes it holds one thread until IO_TIMEOUT.
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        path = urllib.parse.urlsplit(self.path).path
        if path == CRL_PATH:
            self._send(endpoint.crl())
        elif path == JWKS_PATH:
            self._send(endpoint.jwks())
        else:
            self._send(_json(404, {"error": "not_found"}))

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != TOKEN_PATH:
            self._send(_json(404, {"error": "not_found"}))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not 0 <= length <= MAX_BODY or ctype != "application/x-www-form-urlencoded":
            self.close_connection = True
            self._send(OAuthError("invalid_request", "need a form-encoded body of at most "
                                  f"{MAX_BODY} octets").response())
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        try:
            form = urllib.parse.parse_qs(body, keep_blank_values=True, strict_parsing=True,
                                         max_num_fields=32)
        except ValueError:
            self._send(OAuthError("invalid_request", "malformed form body").response())
            return
        der = self.connection.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der) if der else None
        self._send(self.server.endpoint.token(form, cert))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TokenServer(ThreadingHTTPServer):
    """The HTTPS server of :func:`serve`; ``endpoint.url`` is the token endpoint."""

    daemon_threads = True
    endpoint: TokenEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Failed handshakes and dropped connections are the client's problem."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def server_context(credential: Credential, anchors_pem: bytes) -> ssl.SSLContext:
    """TLS 1.3 server context: ``credential`` as server certificate, client certificates
    requested (optional: assertion clients have none) and checked against the anchors
    by OpenSSL, then again by :class:`TokenEndpoint` with revocation."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    _load_credential(ctx, credential)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=anchors_pem.decode())
    return ctx


def _load_credential(ctx: ssl.SSLContext, credential: Credential) -> None:
    assert credential.private_key is not None
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = credential.save(tmp, "tls")
        assert key_path is not None
        ctx.load_cert_chain(cert_path, key_path)


def serve(store: AuthorityStore, host: str = "127.0.0.1", port: int = 0, *,
          lifetime: int | None = None, dns_names: Sequence[str] | None = None
          ) -> TokenServer:
    """An HTTPS server for ``store`` on ``host``:``port`` (0: ephemeral), not started:
    call ``serve_forever()`` (in a thread) and ``shutdown()``.  Its certificate,
    ``dmsc://<domain>/authority``, names ``dns_names`` (default: localhost and
    127.0.0.1)."""
    credential = store.authority_credential() if not dns_names else \
        store.authority_credential(dns_names=dns_names, ip_addresses=())
    httpd = TokenServer((host, port), _Handler, bind_and_activate=True)
    bound = httpd.server_address
    url = f"https://{host}:{bound[1]}{TOKEN_PATH}"
    issuer = TokenIssuer(store.authority, **({"lifetime": lifetime} if lifetime else {}))
    httpd.endpoint = TokenEndpoint(store, url=url, issuer=issuer)
    ctx = server_context(credential, store.authority.trust_store.pem())
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                   do_handshake_on_connect=False)
    return httpd


# --- client side ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class TokenRequestError(DmscError):
    """The token endpoint refused: ``error`` is the RFC 6749 error code, ``code`` the
    DMSC one nearest to it (no token for that scope or audience, or none at all)."""

    named = False
    #: The DMSC error code of each RFC 6749 error an agent may get.
    CODES = {"invalid_scope": ErrorCode.INSUFFICIENT_SCOPE,
             "invalid_target": ErrorCode.WRONG_AUDIENCE}

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status, self.error, self.description = status, error, description
        super().__init__(f"{status} {error}: {description}",
                         self.CODES.get(error, ErrorCode.INVALID_TOKEN))


def client_context(anchors_pem: bytes, credential: Credential | None = None) -> ssl.SSLContext:
    """TLS client context trusting ``anchors_pem``; with ``credential``, presenting it."""
    ctx = ssl.create_default_context(cadata=anchors_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if credential is not None:
        _load_credential(ctx, credential)
    return ctx


def client_assertion(credential: Credential, audience: str, *, now: float | None = None,
                     lifetime: int = 60) -> str:
    """An RFC 7523 client assertion for ``credential``'s holder."""
    key: PrivateKey | None = credential.private_key
    if key is None:
        raise ValueError("a client assertion needs the certificate's private key")
    now = time.time() if now is None else now
    uri = credential.identity.uri
    der = credential.certificate.public_bytes(serialization.Encoding.DER)
    claims = {"iss": uri, "sub": uri, "aud": audience, "iat": int(now),
              "exp": int(now) + lifetime, "jti": b64url(hashlib.sha256(
                  der + str(time.time_ns()).encode()).digest()[:16])}
    return sign_jwt({"typ": "JWT", "x5c": [base64.b64encode(der).decode()]}, claims, key)


def request_token(url: str, credential: Credential, anchors_pem: bytes, *,
                  scope: str | None = None, resources: Sequence[str] = (),
                  use_assertion: bool = False, timeout: float = 5.0) -> TokenResponse:
    """Ask the token endpoint ``url`` for an access token, authenticating with the
    credential as TLS client certificate or, with ``use_assertion``, as an RFC 7523
    client assertion over a TLS connection without client certificate."""
    form: list[tuple[str, str]] = [("grant_type", GRANT_TYPE)]
    if scope is not None:
        form.append(("scope", scope))
    form += [("resource", r) for r in resources]
    if use_assertion:
        form += [("client_assertion_type", ASSERTION_TYPE),
                 ("client_assertion", client_assertion(credential, url))]
        ctx = client_context(anchors_pem)
    else:
        ctx = client_context(anchors_pem, credential)
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as resp:
            obj = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
        except ValueError:
            err = {}
        raise TokenRequestError(exc.code, str(err.get("error", "")),
                                str(err.get("error_description", ""))) from None
    return TokenResponse(obj["access_token"], obj["token_type"], int(obj["expires_in"]),
                         obj["scope"])
