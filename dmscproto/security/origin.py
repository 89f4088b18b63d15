"""Origin assertions (draft-dmsc-protocol-00, Sections 6.10 and 10.6): the JWT an
origin gateway puts in the ACCESS_TOKEN of a ROUTE_REQUEST it forwards for one of its
agents (:func:`sign_origin`), naming its certificate by SHA-256 thumbprint
(``x5t#S256``, :func:`origin_thumbprint`) rather than carrying it; the gateway that
delivers the request checks it
(:meth:`~.federation.Federation.verify_origin`, :class:`OriginClaims`)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from ..codec.messages import RouteRequest
from ..codec.registry import THUMBPRINT_SIZE, ErrorCode, timer
from ..protocol.certificates import thumbprint
from .ca import Credential, Identity, Kind
from .errors import SecurityError
from .tokens import ScopeSet, b64url, gateway_audience, sign_jwt

#: ``typ`` of an origin assertion.
ORIGIN_TYPE = "dmsc-origin+jwt"
#: Lifetime of an origin assertion: the longest a forwarded transaction lives.
ORIGIN_LIFETIME = int(timer("ROUTE_TIMEOUT"))
#: The JWS header parameter naming the signer's certificate by SHA-256 thumbprint
#: (RFC 7515, Section 4.1.8).
X5T = "x5t#S256"


@dataclass(slots=True)
class OriginClaims:
    """A verified origin assertion."""

    gateway: Identity
    source_uri: str
    scope: ScopeSet
    jti: str


def payload_hash(payload: bytes) -> str:
    return b64url(hashlib.sha256(payload).digest())


def origin_thumbprint(token: bytes) -> bytes | None:
    """The certificate thumbprint (``x5t#S256``) an origin assertion names; None for a
    token that is not an origin assertion; INVALID_TOKEN for one without a valid
    thumbprint (Section 6.10)."""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(b".", 1)[0] + b"==="))
        if not isinstance(header, dict) or header.get("typ") != ORIGIN_TYPE:
            return None
        key = base64.urlsafe_b64decode(str(header[X5T]) + "==")
    except (ValueError, KeyError, TypeError) as exc:
        raise SecurityError(ErrorCode.INVALID_TOKEN, f"origin assertion: {exc}") from None
    if len(key) != THUMBPRINT_SIZE:
        raise SecurityError(ErrorCode.INVALID_TOKEN, "origin assertion: x5t#S256 is not a "
                            "SHA-256 thumbprint")
    return key


def sign_origin(gateway: Credential, msg: RouteRequest, *, source_uri: str,
                target_agent: bytes, target_domain: str, scope: ScopeSet,
                now: float) -> bytes:
    """The origin assertion an origin gateway puts in a forwarded ROUTE_REQUEST's
    ACCESS_TOKEN, after it authorized ``source_uri`` (its own agent) for ``scope``; it
    names the gateway's certificate by thumbprint (module docstring)."""
    if gateway.private_key is None or gateway.identity.kind is not Kind.GATEWAY:
        raise ValueError("an origin assertion is signed with a gateway's key")
    der = gateway.certificate.public_bytes(serialization.Encoding.DER)
    claims = {
        "iss": gateway.identity.uri, "sub": source_uri,
        "aud": [gateway_audience(target_domain)], "iat": int(now),
        "exp": int(now) + ORIGIN_LIFETIME, "jti": b64url(secrets.token_bytes(16)),
        "scope": str(scope), "src": b64url(msg.source_agent), "tgt": b64url(target_agent),
        "pld": payload_hash(msg.payload),
    }
    header: dict[str, Any] = {"typ": ORIGIN_TYPE, X5T: b64url(thumbprint(der))}
    return sign_jwt(header, claims, gateway.private_key).encode()
