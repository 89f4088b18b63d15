"""OAuth 2.0 access tokens for DMSC gateways (draft-dmsc-protocol-00, Section 10.3).

Format: a JWT access token in the RFC 9068 profile, signed by the domain authority's key
(the key of its CA certificate, which every gateway already holds as its trust anchor,
so tokens are verified locally with no call per request):

* header ``typ`` ``at+jwt``, ``alg`` ``Ed25519`` (RFC 9864; ``ES256`` for a P-256
  authority key), ``kid`` the RFC 7638 thumbprint of the authority key;
* ``iss`` ``dmsc://<domain>`` (the domain authority), ``sub`` and ``client_id`` the
  client's identity URI ``dmsc://<domain>/<name>``, ``aud`` the domain's gateways
  (:func:`gateway_audience`, ``dmsc://<domain>/*``, which can never be an entity URI)
  or, when the client asked for it with an RFC 8707 ``resource``, one gateway's URI;
  ``exp``, ``iat``, ``jti``; ``scope``;
* ``cnf`` ``{"x5t#S256": ...}``: the SHA-256 thumbprint of the client's certificate
  (RFC 8705, Section 3.1, RFC 7800).  A gateway accepts the token only from the TLS peer
  that presented that certificate (TOKEN_KEY_MISMATCH otherwise), so a stolen token is
  useless without the client's private key.

Scopes (RFC 6749, Section 3.3) are operations, optionally narrowed to capabilities
(skill ids): ``register``, ``discover``, ``route`` grant the operation for any
capability; ``route:forecast`` grants routing only to agents offering the skill
``forecast`` (``register:X``: registering records whose skills are all granted;
``discover:X``: discovering records offering a granted skill).

Library: joserfc (by the author of Authlib).  It is typed (``py.typed``, so mypy strict
checks our calls), implements the RFC 9864 fully specified ``Ed25519`` algorithm and
RFC 7638 thumbprints, refuses ``alg: none`` and algorithms not explicitly allowed, and
is a focused JOSE library without a web framework attached.  JWT rather than CWT
because RFC 9068 (the access-token profile), RFC 8705's ``x5t#S256`` confirmation and
RFC 7523 client assertions are all defined for JWT.  Claims are checked here rather
than with joserfc's claims registry so that each failure maps to its own error code.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jwk, jwt
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from ..codec.registry import ErrorCode, limit
from ..codec.signing import PrivateKey, PublicKey
from .ca import DomainAuthority, anchor_domains
from .errors import SecurityError

#: ``typ`` of an RFC 9068 access token.
ACCESS_TOKEN_TYPE = "at+jwt"
#: Default access token lifetime in seconds.
TOKEN_LIFETIME = 3600
#: Largest JWS header accepted (joserfc's default, 512 octets, is too small for x5c).
MAX_HEADER = int(limit("TOKEN_MAX_HEADER"))
#: Clock skew tolerated on ``exp``, ``iat`` and ``nbf`` (seconds).
LEEWAY = 30

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 NQCHAR minus space


class Operation(StrEnum):
    """The operations a scope grants (Section 10.3)."""

    REGISTER = "register"
    DISCOVER = "discover"
    ROUTE = "route"


def issuer_uri(domain: str) -> str:
    """``iss`` of the tokens of ``domain``'s authority."""
    return f"dmsc://{domain}"


def gateway_audience(domain: str) -> str:
    """The audience naming every gateway of ``domain``."""
    return f"dmsc://{domain}/*"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def x5t_s256(cert: x509.Certificate) -> str:
    """The RFC 8705 ``x5t#S256`` thumbprint: base64url SHA-256 of the DER certificate."""
    return b64url(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """Granted operations; ``None`` means every capability, else the capabilities."""

    grants: Mapping[Operation, frozenset[str] | None]

    @classmethod
    def parse(cls, text: str) -> ScopeSet:
        """Parse a space-delimited scope string; ValueError on an unknown scope token."""
        grants: dict[Operation, frozenset[str] | None] = {}
        for item in text.split():
            if not _SCOPE_TOKEN.fullmatch(item):
                raise ValueError(f"bad scope token {item!r}")
            op_name, sep, capability = item.partition(":")
            try:
                op = Operation(op_name)
            except ValueError:
                raise ValueError(f"unknown scope {item!r}") from None
            if sep and not capability:
                raise ValueError(f"empty capability in scope {item!r}")
            held = grants.get(op, frozenset())
            if held is None or not sep:
                grants[op] = None
            else:
                grants[op] = held | {capability}
        return cls(grants)

    def __str__(self) -> str:
        items = []
        for op in Operation:
            if op not in self.grants:
                continue
            caps = self.grants[op]
            items += [op.value] if caps is None else [f"{op.value}:{c}" for c in sorted(caps)]
        return " ".join(items)

    def __bool__(self) -> bool:
        return bool(self.grants)

    def allows(self, op: Operation, capabilities: Iterable[str] = ()) -> bool:
        """Whether the scope grants ``op`` on ``capabilities``: for REGISTER, the
        record's skills, every one must be granted; for ROUTE, the target's skills, one
        must be; for DISCOVER, the operation itself (narrowing filters the results,
        :meth:`visible`)."""
        if op not in self.grants:
            return False
        caps = self.grants[op]
        if caps is None or op is Operation.DISCOVER:
            return True
        if op is Operation.REGISTER:
            return caps.issuperset(capabilities)
        return not caps.isdisjoint(capabilities)

    def visible(self, capabilities: Iterable[str]) -> bool:
        """Whether a discovery answer may include a record offering ``capabilities``."""
        caps = self.grants.get(Operation.DISCOVER, frozenset())
        return caps is None or not caps.isdisjoint(capabilities)

    def covers(self, other: ScopeSet) -> bool:
        """Whether every grant of ``other`` is within this one."""
        for op, caps in other.grants.items():
            mine = self.grants.get(op, frozenset())
            if mine is None:
                continue
            if caps is None or not caps <= mine:
                return False
        return True


#: Scope granted to a client that asks for none and has no narrower policy.
DEFAULT_SCOPE = ScopeSet.parse("register discover route")


def _algorithm(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) \
            and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def jose_key(key: PrivateKey | PublicKey) -> jwk.Key:
    """The joserfc key of a cryptography Ed25519 or P-256 key."""
    kind = "OKP" if _algorithm(key) == "Ed25519" else "EC"
    return jwk.import_key(key, kind)  # type: ignore[call-overload,no-any-return]


def sign_jwt(header: dict[str, Any], claims: dict[str, Any], key: PrivateKey) -> str:
    """A compact JWS of ``claims`` signed with ``key`` (its algorithm chosen by type)."""
    alg = _algorithm(key)
    return jwt.encode({**header, "alg": alg}, claims, jose_key(key), algorithms=[alg])


def verify_jwt(token: bytes | str, key: PublicKey) -> jwt.Token:
    """Decode a compact JWS and check its signature with ``key`` (INVALID_TOKEN)."""
    alg = _algorithm(key)
    registry = JWSRegistry(algorithms=[alg])
    registry.max_header_length = MAX_HEADER  # room for an x5c certificate
    try:
        return jwt.decode(token, jose_key(key), algorithms=[alg], registry=registry)
    except (JoseError, ValueError, TypeError) as exc:
        raise SecurityError(ErrorCode.INVALID_TOKEN, f"token does not verify: {exc}") from None


def check_times(claims: Mapping[str, Any], now: float, what: str = "token") -> None:
    """``exp`` (TOKEN_EXPIRED), ``iat`` and ``nbf`` (INVALID_TOKEN) against ``now``."""
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise SecurityError(ErrorCode.INVALID_TOKEN, f"{what} lacks numeric exp or iat")
    if now >= exp + LEEWAY:
        raise SecurityError(ErrorCode.TOKEN_EXPIRED, f"{what} expired {now - exp:.0f} s ago")
    nbf = claims.get("nbf", iat)
    if not isinstance(nbf, int | float) or iat > now + LEEWAY or nbf > now + LEEWAY:
        raise SecurityError(ErrorCode.INVALID_TOKEN, f"{what} is not valid yet")


def _text(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise SecurityError(ErrorCode.INVALID_TOKEN, f"claim {name} missing or not a string")
    return value


def audiences(claims: Mapping[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return tuple(aud)
    raise SecurityError(ErrorCode.INVALID_TOKEN, "aud is missing or not a string array")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """The verified claims of an access token."""

    issuer: str
    subject: str
    client_id: str
    audience: tuple[str, ...]
    scope: ScopeSet
    issued_at: int
    expires_at: int
    jti: str
    x5t_s256: str

    def require(self, op: Operation, capabilities: Iterable[str] = ()) -> None:
        """INSUFFICIENT_SCOPE unless the token grants ``op`` for ``capabilities``."""
        caps = tuple(capabilities)
        if not self.scope.allows(op, caps):
            what = f"{op.value}" + (f" for {', '.join(caps)}" if caps else "")
            raise SecurityError(ErrorCode.INSUFFICIENT_SCOPE,
                                f"token scope {str(self.scope)!r} does not grant {what}")


class TokenIssuer:
    """The signing half of the domain authority's token service (Section 10.3)."""

    def __init__(self, authority: DomainAuthority, *, lifetime: int = TOKEN_LIFETIME) -> None:
        if lifetime <= 0:
            raise ValueError("token lifetime must be positive")
        self.authority = authority
        self.lifetime = lifetime
        self.issuer = issuer_uri(authority.domain)
        self.kid = jose_key(authority.private_key.public_key()).thumbprint()

    def issue(self, client: x509.Certificate, client_uri: str, scope: ScopeSet, *,
              now: float, audience: Iterable[str] = ()) -> str:
        """An access token for the holder of ``client`` (identity ``client_uri``)."""
        iat = int(now)
        claims = {
            "iss": self.issuer, "sub": client_uri, "client_id": client_uri,
            "aud": list(audience) or [gateway_audience(self.authority.domain)],
            "iat": iat, "exp": iat + self.lifetime, "jti": b64url(secrets.token_bytes(16)),
            "scope": str(scope), "cnf": {"x5t#S256": x5t_s256(client)},
        }
        return sign_jwt({"typ": ACCESS_TOKEN_TYPE, "kid": self.kid}, claims,
                        self.authority.private_key)


class TokenVerifier:
    """Local verification of access tokens at a gateway (Section 10.3).

    ``authority`` is the domain authority's CA certificate (the gateway's own trust
    anchor); ``gateway_uri`` is this gateway's identity, accepted as an audience besides
    the domain-wide :func:`gateway_audience`.  Checks, in order: signature and ``alg``,
    ``typ``, ``iss``, required claims (INVALID_TOKEN), ``exp`` (TOKEN_EXPIRED), ``aud``
    (WRONG_AUDIENCE), ``cnf`` against the TLS peer's certificate (TOKEN_KEY_MISMATCH),
    then the scope (INSUFFICIENT_SCOPE, :meth:`AccessToken.require`).
    """

    def __init__(self, authority: x509.Certificate, *, gateway_uri: str | None = None) -> None:
        domains = anchor_domains(authority)
        if len(domains) != 1:
            raise ValueError("not a DMSC domain authority certificate")
        self.domain = next(iter(domains))
        key = authority.public_key()
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"unsupported authority key {type(key).__name__}")
        self._key: PublicKey = key
        self.issuer = issuer_uri(self.domain)
        self.audiences = frozenset(
            {gateway_audience(self.domain)} | ({gateway_uri} if gateway_uri else set()))

    def verify(self, token: bytes | str, *, peer_certificate: x509.Certificate | None,
               now: float, operation: Operation | None = None,
               capabilities: Iterable[str] = ()) -> AccessToken:
        """The verified token; with ``operation``, also require that scope."""
        decoded = verify_jwt(token, self._key)
        if decoded.header.get("typ") not in (ACCESS_TOKEN_TYPE, f"application/{ACCESS_TOKEN_TYPE}"):
            raise SecurityError(ErrorCode.INVALID_TOKEN, "typ is not at+jwt")
        c = decoded.claims
        if c.get("iss") != self.issuer:
            raise SecurityError(ErrorCode.INVALID_TOKEN, f"issuer {c.get('iss')!r} is not "
                                f"{self.issuer!r}")
        cnf = c.get("cnf")
        sub, client_id, jti, scope, thumb = (
            _text(c, "sub"), _text(c, "client_id"), _text(c, "jti"), _text(c, "scope"),
            _text(cnf if isinstance(cnf, dict) else {}, "x5t#S256"))
        check_times(c, now)
        aud = audiences(c)
        if self.audiences.isdisjoint(aud):
            raise SecurityError(ErrorCode.WRONG_AUDIENCE,
                                f"audience {list(aud)} does not include this gateway")
        if peer_certificate is None or x5t_s256(peer_certificate) != thumb:
            raise SecurityError(ErrorCode.TOKEN_KEY_MISMATCH,
                                "token is bound to another certificate than the peer's")
        try:
            scopes = ScopeSet.parse(scope)
        except ValueError as exc:
            raise SecurityError(ErrorCode.INVALID_TOKEN, str(exc)) from None
        result = AccessToken(c["iss"], sub, client_id, aud, scopes, int(c["iat"]),
                             int(c["exp"]), jti, thumb)
        if operation is not None:
            result.require(operation, capabilities)
        return result
