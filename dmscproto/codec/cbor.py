"""Deterministic CBOR (RFC 8949, Section 4.2.1) for structured TLV values.

DMSC maps never mix key types (all unsigned integers, or all text strings), so the
length-first ordering that ``cbor2``'s canonical mode applies coincides with the
bytewise lexicographic ordering of RFC 8949 core deterministic encoding
(draft-dmsc-protocol-00, Section 7.1).

Speed: creating a ``cbor2`` encoder or decoder costs more than encoding a small item,
so each thread keeps one of each (:class:`_Workers`) and reuses them.  Reuse cannot
change an outcome: a successful decode is accepted only if re-encoding it reproduces
the input octets, and anything else (including any exception, after which the workers
are replaced) is decided again by :func:`_loads_checked` with fresh ``cbor2`` objects.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any, cast

import cbor2

from .errors import DecodeError
from .registry import ErrorCode


class _Workers(threading.local):
    """Per-thread reusable ``cbor2`` decoder and encoders (received order, canonical)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        out = io.BytesIO()
        seek, truncate, getvalue = out.seek, out.truncate, out.getvalue

        def dumper(encode: Callable[[Any], None]) -> Callable[[Any], bytes]:
            def dump(value: Any) -> bytes:
                seek(0)
                truncate()
                encode(value)
                return getvalue()
            return dump

        # cbor2's C decoder leaks memory each time it raises on a text string that is not
        # UTF-8 (cbor2 5.9, about 700 octets; found by fuzzing): it is never asked to.
        # Here U+FFFD replaces the bad octets and the re-encoding check refuses them.
        self.decode: Callable[[bytes], Any] = cbor2.CBORDecoder(
            io.BytesIO(), str_errors="replace").decode_from_bytes
        self.plain = dumper(cbor2.CBOREncoder(out).encode)
        self.canonical = dumper(cbor2.CBOREncoder(out, canonical=True).encode)


_workers = _Workers()


def dumps(value: Any) -> bytes:
    """Encode ``value`` as deterministic CBOR."""
    w = _workers
    try:
        return w.canonical(value)
    except BaseException:
        w.reset()
        raise


def loads(data: bytes) -> Any:
    """Decode one CBOR item that fills ``data`` exactly and is deterministically encoded.

    Raises :class:`DecodeError` with MALFORMED_CBOR for anything that is not one
    well-formed item, and NON_DETERMINISTIC_CBOR for non-shortest integers or lengths,
    indefinite lengths or duplicate map keys.  Offsets are relative to ``data``.

    Map key *order* is checked by the schema layer (:mod:`.values`, :mod:`.cose`), which
    visits every map anyway: re-encoding in received order (``cbor2`` without canonical
    sorting, roughly twice as fast) then proves everything else.
    """
    w = _workers
    try:
        value = w.decode(data)
        if w.plain(value) == data:
            return value
    except Exception:
        w.reset()
    return _loads_checked(data)


def _loads_checked(data: bytes) -> Any:
    """:func:`loads` with fresh ``cbor2`` objects: the reference that decides every input
    the fast path does not accept, and names the error.  Octets of a text string that
    are not UTF-8 decode to lone surrogates (never raising, so never leaking: see
    :class:`_Workers`), which re-encoding refuses: MALFORMED_CBOR, as a strict decoder
    would say."""
    fp = io.BytesIO(data)
    try:
        # any codec error handler works (cbor2 hands it to the UTF-8 decoder), though
        # cbor2's annotations name only its own three
        value = cbor2.CBORDecoder(fp, str_errors=cast(Any, "surrogateescape")).decode()
    except Exception as exc:  # cbor2 raises several types, all mean "malformed"
        raise DecodeError(ErrorCode.MALFORMED_CBOR, 0, f"malformed CBOR: {exc}") from None
    if fp.tell() != len(data):  # one item filling the value before it is deterministic
        raise DecodeError(ErrorCode.MALFORMED_CBOR, fp.tell(), "data after the CBOR item")
    try:
        same = cbor2.dumps(value) == data
    except Exception as exc:
        raise DecodeError(ErrorCode.MALFORMED_CBOR, 0, f"unsupported CBOR item: {exc}") from None
    if not same:
        again = cbor2.dumps(value, canonical=True)
        if again == data:  # e.g. a float in its shortest form, which cbor2 widens by default
            return value
        raise DecodeError(
            ErrorCode.NON_DETERMINISTIC_CBOR, first_difference(data, again),
            "CBOR item is not in deterministic encoding (RFC 8949, Section 4.2.1)",
        )
    return value


def check_key_order(keys: list[Any]) -> None:
    """Raise NON_DETERMINISTIC_CBOR unless ``keys`` (all int or all str, in received
    order) are in deterministic order: ascending integers, or text strings by UTF-8
    length then bytes (RFC 8949, Section 4.2.1)."""
    if keys and type(keys[0]) is str:
        # UTF-8 preserves code point order, so equal-length keys compare as str.
        order = [(len(k.encode()), k) for k in keys]
        ok = order == sorted(order)
    else:
        ok = keys == sorted(keys)
    if not ok:
        raise DecodeError(ErrorCode.NON_DETERMINISTIC_CBOR, 0,
                          "map keys are not in deterministic order")


def string_span(data: bytes, pos: int, major: int) -> tuple[int, int]:
    """(start, end) of the byte string (``major`` 2) or text string (3) whose head, in
    its shortest form, is at ``pos``.  ValueError for any other head, IndexError if
    ``data`` ends inside it; ``end`` may lie past the end of ``data``."""
    info = data[pos] - (major << 5)
    if 0 <= info <= 23:
        return pos + 1, pos + 1 + info
    if info == 24 and data[pos + 1] >= 24:
        return pos + 2, pos + 2 + data[pos + 1]
    if info == 25:
        n = int.from_bytes(data[pos + 1:pos + 3], "big")
        if n > 0xFF:
            return pos + 3, pos + 3 + n
    raise ValueError("not the shortest head of a string")


def scan_text_map(data: bytes) -> dict[int, str] | None:
    """Fast path of :func:`loads` for a deterministic map from unsigned keys 0-23 to text
    strings (a trace context, Section 7.5): the map :func:`loads` would return, or None
    for anything else, which :func:`loads` then decides."""
    try:
        n = data[0] - 0xA0
        if not 0 <= n <= 23:
            return None
        pos, last, out = 1, -1, {}
        for _ in range(n):
            key = data[pos]
            if not last < key <= 23:
                return None
            start, pos = string_span(data, pos + 1, 3)
            if pos > len(data):
                return None
            out[key] = data[start:pos].decode()
            last = key
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return out if pos == len(data) else None


def head_size(n: int) -> int:
    """Octets of the shortest CBOR head carrying argument ``n`` (RFC 8949, 3.1)."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 2**32 else 9


def bstr_head(n: int) -> bytes:
    """The shortest head of a byte string of ``n`` octets (major type 2)."""
    if n < 24:
        return bytes((0x40 | n,))
    size = head_size(n) - 1
    return bytes((0x58 + size.bit_length() - 1,)) + n.to_bytes(size, "big")


def first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
