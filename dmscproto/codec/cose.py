"""COSE_Sign1 (RFC 9052, Section 4.2) envelopes for capability records.

The codec checks structure only (draft-dmsc-protocol-00, Section 7.2.1); signature
verification lives in :mod:`dmscproto.codec.signing`, which uses
:meth:`SignedRecord.to_be_signed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from . import cbor
from .cbor import bstr_head, string_span
from .errors import DecodeError
from .registry import CoseAlgorithm, ErrorCode
from .scan import scan_record
from .values import CapabilityRecord, twin

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
    re-encoding reproduces them and the signature stays verifiable.  The envelope's
    octets are kept once known (decoded from them, or encoded once): :meth:`encode`
    never serializes twice.  The parts are not to be changed in place (a new envelope
    is made with ``dataclasses.replace``, which starts without them).
    """

    protected: bytes
    unprotected: dict[int, Any]
    payload: bytes
    signature: bytes
    record: CapabilityRecord
    algorithm: CoseAlgorithm
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def kid(self) -> bytes | None:
        kid = self.unprotected.get(HDR_KID)
        return kid if isinstance(kid, bytes) else None

    def to_be_signed(self) -> bytes:
        """The Sig_structure for "Signature1" with empty external AAD (RFC 9052, 4.4):
        ``["Signature1", protected, h'', payload]`` in deterministic CBOR."""
        protected, payload = self.protected, self.payload
        return b"".join((_SIG_STRUCTURE_START, bstr_head(len(protected)), protected, b"\x40",
                         bstr_head(len(payload)), payload))

    def encode(self) -> bytes:
        """The COSE_Sign1_Tagged item, deterministically encoded (Section 7.2.1)."""
        wire = self._wire
        if wire is None:
            wire = _envelope(self.protected, self.unprotected, self.payload, self.signature)
            object.__setattr__(self, "_wire", wire)
        return wire

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
        """Parse a COSE_Sign1_Tagged item (structure and record schema, no signature check).

        Offsets are into ``data``: COSE structure errors (MALFORMED_COSE) carry 0, CBOR
        errors where the octets go wrong, and record errors the payload's first octet or
        the position inside it.
        """
        signed = _scan_envelope(data)
        return cls._decode_general(data) if signed is None else signed

    @classmethod
    def _decode_general(cls, data: bytes) -> SignedRecord:
        """Decode any input :func:`_scan_envelope` does not accept, naming the first error."""
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
        envelope = _envelope(protected, unprotected, payload, signature)
        if envelope != data:  # unprotected labels out of order, or a float not at its shortest
            raise DecodeError(ErrorCode.NON_DETERMINISTIC_CBOR,
                              cbor.first_difference(data, envelope),
                              "unprotected header is not in deterministic encoding")
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
        end = len(data) - len(signature) - cbor.head_size(len(signature))
        record = _payload_record(payload, end - len(payload))
        return cls(protected, unprotected, payload, signature, record, CoseAlgorithm(alg))


def _envelope(protected: bytes, unprotected: dict[int, Any], payload: bytes,
              signature: bytes) -> bytes:
    """The deterministic encoding of a COSE_Sign1_Tagged item with these parts."""
    return b"".join((_ENVELOPE_START, bstr_head(len(protected)), protected,
                     cbor.dumps(unprotected), bstr_head(len(payload)), payload,
                     bstr_head(len(signature)), signature))


#: Tag 18 and a 4-element array head: how every deterministic COSE_Sign1_Tagged starts.
_ENVELOPE_START = b"\xd2\x84"
#: A 4-element array head and the text string "Signature1": how a Sig_structure starts.
_SIG_STRUCTURE_START = b"\x84\x6aSignature1"
#: The deterministic protected header of each accepted algorithm: exactly ``{1: alg}``.
_PROTECTED = {cbor.dumps({HDR_ALG: int(alg)}): alg for alg in CoseAlgorithm}
#: How a deterministic COSE_Sign1_Tagged with such a header starts (tag 18, a 4-element
#: array, the header as a byte string): the header and its algorithm.
_USUAL_START = {_ENVELOPE_START + bstr_head(len(p)) + p: (p, alg) for p, alg in _PROTECTED.items()}
#: The octets of every such start (one size: ValueError at import otherwise).
(_USUAL_SIZE,) = {len(start) for start in _USUAL_START}


def _payload_record(payload: bytes, start: int) -> CapabilityRecord:
    """The capability record in ``payload``, found at offset ``start`` of the envelope."""
    record = scan_record(payload)
    if record is not None:
        return record
    return _general_record(payload, start)


def _general_record(payload: bytes, start: int) -> CapabilityRecord:
    """The record :func:`scan_record` does not take, or the error that names why."""
    try:
        return CapabilityRecord.from_cbor(cbor.loads(payload))
    except DecodeError as exc:
        raise exc.at(start) from None


def _scan_envelope(data: bytes) -> SignedRecord | None:
    """Fast path of :meth:`SignedRecord.decode` for the usual shape: a deterministic
    envelope whose unprotected labels are 0-23 with byte string values.

    Returns the envelope :meth:`SignedRecord._decode_general` would return for
    ``data``, or raises the error it would raise for the payload's record; returns
    None to send every other input there.  Its first six octets are looked up at once
    (:data:`_USUAL_START`), and a byte string of at most 23 octets is read where it
    stands (the envelope 23.1k -> 20.1k instructions, callgrind).
    """
    usual = _USUAL_START.get(data[:_USUAL_SIZE])
    if usual is None:
        return None
    protected, algorithm = usual
    pos = _USUAL_SIZE
    try:
        n = data[pos] - 0xA0
        if not 0 <= n <= 23:
            return None
        pos += 1
        unprotected: dict[int, Any] = {}
        last = -1
        for _ in range(n):
            label = data[pos]
            if not last < label <= 23:
                return None
            k = data[pos + 1] - 0x40
            if 0 <= k <= 23:  # a short byte string (a kid)
                start = pos + 2
                pos = start + k
            else:
                start, pos = string_span(data, pos + 1, 2)
            unprotected[label] = data[start:pos]
            last = label
        # the payload (256 octets or more: a 2-octet length, not 0x00 first) and the
        # signature (24 to 255: a 1-octet length) read where they stand, as
        # string_span would: REGISTER decode 154.7k -> 151.0k instructions (callgrind)
        if data[pos] == 0x59 and data[pos + 1]:
            start = pos + 3
            end = start + (data[pos + 1] << 8 | data[pos + 2])
        else:
            start, end = string_span(data, pos, 2)
        if data[end] == 0x58 and data[end + 1] >= 24:
            sig_start = end + 2
            sig_end = sig_start + data[end + 1]
        else:
            sig_start, sig_end = string_span(data, end, 2)
    except (IndexError, ValueError):
        return None
    if sig_end != len(data):
        return None
    payload = data[start:end]
    record = _payload_record(payload, start)
    signed = _new(_SignedTwin)  # slot by slot: REGISTER decode 157.0k -> 155.9k instructions
    signed.protected = protected
    signed.unprotected = unprotected
    signed.payload = payload
    signed.signature = data[sig_start:sig_end]
    signed.record = record
    signed.algorithm = algorithm
    signed._wire = data  # what _envelope() gives for these parts
    signed.__class__ = SignedRecord
    return signed  # type: ignore[no-any-return]


_SignedTwin = twin(SignedRecord)
_new = object.__new__
