"""Deterministic CBOR (RFC 8949, Section 4.2.1) for structured TLV values.

DMSC maps never mix key types (all unsigned integers, or all text strings), so the
length-first ordering that ``cbor2``'s canonical mode applies coincides with the
bytewise lexicographic ordering of RFC 8949 core deterministic encoding
(draft-dmsc-protocol-00, Section 7.1).
"""

from __future__ import annotations

from typing import Any

import cbor2

from .errors import DecodeError
from .registry import ErrorCode


def dumps(value: Any) -> bytes:
    """Encode ``value`` as deterministic CBOR."""
    return cbor2.dumps(value, canonical=True)


def loads(data: bytes) -> Any:
    """Decode one CBOR item that fills ``data`` exactly and is deterministically encoded.

    Raises :class:`DecodeError` with MALFORMED_CBOR for anything that is not one
    well-formed item, and NON_DETERMINISTIC_CBOR for non-shortest integers or lengths,
    indefinite lengths or duplicate map keys.  Offsets are relative to ``data``.

    Map key *order* is checked by the schema layer (:mod:`.values`, :mod:`.cose`), which
    visits every map anyway: re-encoding in received order (``cbor2`` without canonical
    sorting, roughly twice as fast) then proves everything else.
    """
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types, all mean "malformed"
        raise DecodeError(ErrorCode.MALFORMED_CBOR, 0, f"malformed CBOR: {exc}") from None
    try:
        same = cbor2.dumps(value) == data
    except Exception as exc:
        raise DecodeError(ErrorCode.MALFORMED_CBOR, 0, f"unsupported CBOR item: {exc}") from None
    if not same:
        again = cbor2.dumps(value, canonical=True)
        if again.startswith(data) or not data.startswith(again):
            raise DecodeError(
                ErrorCode.NON_DETERMINISTIC_CBOR, _first_difference(data, again),
                "CBOR item is not in deterministic encoding (RFC 8949, Section 4.2.1)",
            )
        if len(again) < len(data):
            raise DecodeError(ErrorCode.MALFORMED_CBOR, len(again), "data after the CBOR item")
    return value


def check_key_order(keys: list[Any]) -> None:
    """Raise NON_DETERMINISTIC_CBOR unless ``keys`` (all int or all str, in received
    order) are in deterministic order: ascending integers, or text strings by UTF-8
    length then bytes (RFC 8949, Section 4.2.1)."""
    if keys and type(keys[0]) is str:
        encoded = [k.encode() for k in keys]
        ok = encoded == sorted(encoded, key=lambda e: (len(e), e))
    else:
        ok = keys == sorted(keys)
    if not ok:
        raise DecodeError(ErrorCode.NON_DETERMINISTIC_CBOR, 0, "map keys are not in deterministic order")


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
