"""Agent identities and capability record signatures (draft-dmsc-protocol-00, Sections 3.2
and 7.2.1).

An Agent ID (and a Gateway ID) is the first 16 octets of SHA-256 over the
DER SubjectPublicKeyInfo of the entity's public key.  Records are signed as
COSE_Sign1 with EdDSA (Ed25519) or ES256 (P-256).  It sits in the codec, below every
layer that checks a record (the protocol machines' default record check included).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .cose import HDR_KID, SignedRecord
from .errors import DmscError
from .registry import ID_SIZE, CoseAlgorithm, ErrorCode
from .values import CapabilityRecord

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class SignatureError(DmscError, ValueError):
    """A signed record does not verify (reported as BAD_SIGNATURE)."""

    code = ErrorCode.BAD_SIGNATURE
    named = False


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def entity_id(key: PublicKey) -> bytes:
    """The 16-octet Agent ID or Gateway ID of a public key (Section 3.2)."""
    return hashlib.sha256(spki(key)).digest()[:ID_SIZE]


def load_public_key(der_spki: bytes) -> PublicKey:
    """Load an Ed25519 or P-256 public key; any other key type or curve, known to the
    crypto library or not, is refused (:class:`SignatureError`, Section 7.2.1)."""
    try:
        key = serialization.load_der_public_key(der_spki)
    except UnsupportedAlgorithm as exc:
        raise SignatureError(f"record key algorithm not supported: {exc}") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise SignatureError("record keys must be Ed25519 or P-256")


def algorithm_of(key: PrivateKey | PublicKey) -> CoseAlgorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return CoseAlgorithm.EDDSA
    return CoseAlgorithm.ES256


def sign_record(record: CapabilityRecord, key: PrivateKey,
                unprotected: dict[int, Any] | None = None) -> SignedRecord:
    """Sign ``record`` as COSE_Sign1; the kid header is the record's agent ID."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError("ES256 needs a P-256 key")
    header = {HDR_KID: record.agent_id, **(unprotected or {})}
    env = SignedRecord.unsigned(record, algorithm_of(key), header)
    tbs = env.to_be_signed()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(tbs)
    else:
        r, s = decode_dss_signature(key.sign(tbs, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return replace(env, signature=sig)


def verify_record(signed: SignedRecord) -> None:
    """Check the signature against the record's own public key, that the record's
    agent ID is derived from that key and that the kid, if present, equals it.
    Raises :class:`SignatureError`."""
    try:
        key = load_public_key(signed.record.public_key)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"record public key unusable: {exc}") from None
    if entity_id(key) != signed.record.agent_id:
        raise SignatureError("agent id is not derived from the record's public key")
    if signed.kid is not None and signed.kid != signed.record.agent_id:
        raise SignatureError("kid differs from the record's agent id")
    if algorithm_of(key) is not signed.algorithm:
        raise SignatureError("COSE algorithm does not match the key type")
    tbs = signed.to_be_signed()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signed.signature, tbs)
        else:
            if len(signed.signature) != 64:
                raise SignatureError("ES256 signature is not 64 octets")
            der = encode_dss_signature(int.from_bytes(signed.signature[:32], "big"),
                                       int.from_bytes(signed.signature[32:], "big"))
            key.verify(der, tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None
