"""COSE_Sign1 (RFC 9052, Section 4.2) envelopes for capability records.

The codec checks structure only (draft-dmsc-protocol-00, Section 7.2.1); signature
verification lives in :mod:`dmscproto.security.signing`, which uses
:meth:`SignedRecord.to_be_signed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from . import cbor
from .errors import DecodeError
from .registry import CoseAlgorithm, ErrorCode
from .values import CapabilityRecord

#: CBOR tag of COSE_Sign1_Tagged (RFC 9052, Section 2).
COSE_SIGN1_TAG = 18
#: COSE header labels used by DMSC (RFC 9052, Section 3.1; RFC 9360).
HDR_ALG = 1
HDR_KID = 4
HDR_X5CHAIN = 33


def _malformed(reason: str) -> DecodeError:
    return DecodeError(ErrorCode.MALFORMED_COSE, 0, reason)


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A capability record inside a COSE_Sign1_Tagged envelope.

    ``protected``, ``payload`` and ``signature`` are the exact octets from the wire, so
    re-encoding reproduces them and the signature stays verifiable.
    """

    protected: bytes
    unprotected: dict[int, Any]
    payload: bytes
    signature: bytes
    record: CapabilityRecord
    algorithm: CoseAlgorithm

    @property
    def kid(self) -> bytes | None:
        kid = self.unprotected.get(HDR_KID)
        return kid if isinstance(kid, bytes) else None

    def to_be_signed(self) -> bytes:
        """The Sig_structure for "Signature1" with empty external AAD (RFC 9052, 4.4)."""
        return cbor.dumps(["Signature1", self.protected, b"", self.payload])

    def encode(self) -> bytes:
        return cbor.dumps(cbor2.CBORTag(
            COSE_SIGN1_TAG, [self.protected, self.unprotected, self.payload, self.signature]))

    @classmethod
    def unsigned(cls, record: CapabilityRecord, algorithm: CoseAlgorithm,
                 unprotected: dict[int, Any] | None = None) -> SignedRecord:
        """An envelope with an empty signature, ready for a signer to fill in."""
        return cls(
            protected=cbor.dumps({HDR_ALG: int(algorithm)}),
            unprotected=dict(unprotected or {}),
            payload=cbor.dumps(record.to_cbor()),
            signature=b"",
            record=record,
            algorithm=algorithm,
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedRecord:
        """Parse a COSE_Sign1_Tagged item (structure and record schema, no signature check)."""
        obj = cbor.loads(data)
        if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
            raise _malformed("not a COSE_Sign1_Tagged item (tag 18)")
        parts = obj.value
        if type(parts) is not list or len(parts) != 4:
            raise _malformed("COSE_Sign1 is not a 4-element array")
        protected, unprotected, payload, signature = parts
        if type(protected) is not bytes or type(payload) is not bytes \
                or type(signature) is not bytes:
            raise _malformed("protected header, payload or signature is not a byte string")
        if type(unprotected) is not dict or any(type(k) is not int for k in unprotected):
            raise _malformed("unprotected header is not a map with integer labels")
        cbor.check_key_order(list(unprotected))
        try:
            prot = cbor.loads(protected)
        except DecodeError as exc:
            raise _malformed(f"protected header: {exc.reason}") from None
        if type(prot) is not dict or set(prot) != {HDR_ALG}:
            raise _malformed("protected header must hold exactly the alg label")
        alg = prot[HDR_ALG]
        if type(alg) is not int or alg not in CoseAlgorithm._value2member_map_:
            raise _malformed(f"unsupported COSE algorithm {alg!r}")
        kid = unprotected.get(HDR_KID)
        if kid is not None and type(kid) is not bytes:
            raise _malformed("kid is not a byte string")
        record = CapabilityRecord.from_cbor(cbor.loads(payload))
        return cls(protected, unprotected, payload, signature, record, CoseAlgorithm(alg))
