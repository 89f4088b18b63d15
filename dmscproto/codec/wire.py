"""Wire formats, defined with ``construct`` (draft-dmsc-protocol-00, Section 4).

``construct`` is the definition.  Fixed-size formats are additionally turned into
``struct.Struct`` objects by :func:`fixed_struct` (derived from the construct, never
written by hand), and count-prefixed arrays are parsed with the structs derived from
their count and item constructs.  construct's compiler is not used (its compiled
``Switch`` on an ``Enum`` and compiled ``PrefixedArray`` of ``Bytes`` lose or accept
octets silently); ``tests/test_codec_compiled.py`` checks that the fast paths and the
interpreted definitions agree on every test vector and on random octets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, TypeVar

import construct as c

from . import cbor
from .cose import SignedRecord
from .errors import DecodeError
from .registry import (
    ID_SIZE,
    NONCE_SIZE,
    SUMMARY_MAX_BITS,
    SUMMARY_MAX_HASHES,
    SUMMARY_MIN_BITS,
    THUMBPRINT_SIZE,
    ErrorCode,
    Scope,
    TlvType,
)
from .values import DiscoveryQuery, ExportPolicy, HopRecord, TraceContext, trace_context

T = TypeVar("T")

# --- Section 4.1: the common header -------------------------------------------------
Header = c.Struct(
    "version" / c.Int8ub,
    "type" / c.Int8ub,
    "flags" / c.Int16ub,
    "length" / c.Int32ub,
    "transaction_id" / c.Int64ub,
)

# --- Section 4.2: TLVs ---------------------------------------------------------------
TlvHeader = c.Struct("type" / c.Int16ub, "length" / c.Int16ub)
Tlv = c.Struct("type" / c.Int16ub, "length" / c.Int16ub, "value" / c.Bytes(c.this.length))

#: A whole PDU.  Reference definition used by the analysis tools and the agreement tests.
Pdu = c.Struct("header" / Header, "tlvs" / c.GreedyRange(Tlv))

# --- Section 4.3: fixed-layout TLV values --------------------------------------------
Id = c.Bytes(ID_SIZE)
IdList8 = c.PrefixedArray(c.Int8ub, Id)
IdList16 = c.PrefixedArray(c.Int16ub, Id)
DigestEntry = c.Struct("agent_id" / Id, "version" / c.Int64ub)
DigestSummaryFormat = c.Struct("count" / c.Int32ub, "hash" / c.Bytes(32))
ResultFormat = c.Struct("score" / c.Int16ub, "record" / c.GreedyBytes)
AdvertiseFormat = c.Struct("version" / c.Int64ub, "path" / IdList8, "record" / c.GreedyBytes)
WithdrawFormat = DigestEntry
CapabilitySummaryFormat = c.Struct("hashes" / c.Int8ub, "count" / c.Int32ub,
                                   "bits" / c.GreedyBytes)
DigestEntriesFormat = c.PrefixedArray(c.Int16ub, DigestEntry)
DigestNodeFormat = c.Struct("level" / c.Int8ub, "index" / c.Int16ub)
DigestChildrenFormat = c.PrefixedArray(c.Int8ub, DigestSummaryFormat)

#: The largest value a TLV can carry (its length field is 16 bits).
MAX_TLV_VALUE = 0xFFFF


def fixed_struct(fmt: c.Construct) -> struct.Struct:
    """Derive a ``struct.Struct`` from a fixed-size construct of FormatFields and Bytes."""
    def piece(sub: c.Construct) -> str:
        sub = _unwrap(sub)
        if isinstance(sub, c.FormatField):
            return str(sub.fmtstr[1:])
        if isinstance(sub, c.Bytes) and isinstance(sub.length, int):
            return f"{sub.length}s"
        if isinstance(sub, c.Struct):
            return "".join(piece(s) for s in sub.subcons)
        raise TypeError(f"not a fixed-size format: {sub!r}")
    return struct.Struct(">" + piece(fmt))


def _unwrap(sub: c.Construct) -> c.Construct:
    """Strip names and ``Rebuild`` (same octets on the wire) off a construct."""
    while isinstance(sub, c.Renamed | c.Rebuild):
        sub = sub.subcon
    return sub


HEADER_STRUCT = fixed_struct(Header)
TLV_HEADER_STRUCT = fixed_struct(TlvHeader)


# --- value codecs: one per TLV type ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class DigestSummary:
    """DIGEST_SUMMARY and DIGEST_CHILDREN items (Section 6.6.1): the number of entries
    of a digest tree node and the XOR of their SHA-256 hashes."""

    count: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class DigestNode:
    """DIGEST_NODE (Section 6.6.1): a node of the digest tree, by level and index (the
    root is level 0, index 0)."""

    level: int
    index: int


@dataclass(frozen=True, slots=True)
class Result:
    """RESULT (Section 5.2): one ranked discovery answer."""

    score: int
    record: SignedRecord


@dataclass(frozen=True, slots=True)
class Advertisement:
    """ADVERTISE (Section 6.5): a record, its version and the gateways it crossed."""

    version: int
    path: tuple[bytes, ...]
    record: SignedRecord


@dataclass(frozen=True, slots=True)
class VersionedId:
    """WITHDRAW, PURGE and DIGEST_ENTRIES items (Section 6.5, 6.6): an agent and a
    version."""

    agent_id: bytes
    version: int


@dataclass(frozen=True, slots=True)
class CapabilitySummary:
    """SUMMARY_FILTER (Section 6.9): a Bloom filter of ``8 * len(bits)`` bits with
    ``hashes`` hash functions over the capability terms of ``count`` records."""

    hashes: int
    count: int
    bits: bytes


class ValueCodec(Generic[T]):
    """Parses and builds one TLV type's value.  ``fmt`` is its construct definition."""

    fmt: c.Construct
    #: For a value that is its TLV's octets as they are (a byte string parsed and built
    #: unchanged): the length it must have, -1 for any; None for any other value.  The
    #: message codec then copies such a value itself, without a call.
    raw: int | None = None
    #: The length of every value built, for a fixed-size value (its TLV header is then
    #: always the same); None otherwise.
    fixed: int | None = None
    #: For a value that is one integer of :attr:`fixed` octets: its ``struct`` and the
    #: registered members it stands for (None: the integer itself), with which the
    #: message codec reads a registered one, and builds one, without a call; None for
    #: any other value.
    integer: tuple[struct.Struct, dict[int, Any] | None] | None = None

    def parse(self, data: bytes) -> T:
        raise NotImplementedError

    def build(self, value: T) -> bytes:
        raise NotImplementedError


class FixedCodec(ValueCodec[T]):
    """A fixed-size value: one integer or byte string (optionally through an enum)."""

    def __init__(self, fmt: c.Construct, convert: type[IntEnum] | None = None) -> None:
        self.fmt = fmt
        self._struct = fixed_struct(fmt)
        self.size = self.fixed = self._struct.size
        self._convert = convert
        self._members = None if convert is None else dict(convert._value2member_map_)
        self._is_bytes = self._struct.format.endswith("s")
        self.raw = self.size if self._is_bytes else None
        if not self._is_bytes:
            self.integer = (self._struct, self._members)

    def parse(self, data: bytes) -> T:
        if len(data) != self.size:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0,
                              f"value is {len(data)} octets, expected {self.size}")
        if self._is_bytes:
            return data  # type: ignore[return-value]
        (value,) = self._struct.unpack(data)
        if self._members is None:
            return value  # type: ignore[no-any-return]
        member = self._members.get(value)
        if member is None:
            try:  # an open registry (STATUS, Section 4.3) takes any value
                member = self._convert(value)  # type: ignore[misc]
            except ValueError:
                raise DecodeError(ErrorCode.INVALID_TLV_VALUE, 0,
                                  f"unregistered value {value!r}") from None
        return member  # type: ignore[return-value]

    def build(self, value: T) -> bytes:
        if self._is_bytes and len(value) != self.size:  # type: ignore[arg-type]
            raise ValueError(f"{len(value)} octets, expected {self.size}")  # type: ignore[arg-type]
        return self._struct.pack(value)


class StructCodec(ValueCodec[T]):
    """A fixed-size struct of several fields, mapped onto a dataclass."""

    def __init__(self, fmt: c.Struct, cls: Callable[..., T]) -> None:
        self.fmt = fmt
        self._struct = fixed_struct(fmt)
        self.fixed = self._struct.size
        self._cls = cls

    def parse(self, data: bytes) -> T:
        if len(data) != self._struct.size:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0,
                              f"value is {len(data)} octets, expected {self._struct.size}")
        return self._cls(*self._struct.unpack(data))

    def build(self, value: T) -> bytes:
        return self._struct.pack(*(getattr(value, f) for f in value.__slots__))  # type: ignore[attr-defined]


class BytesCodec(ValueCodec[bytes]):
    fmt = c.GreedyBytes
    raw = -1

    def parse(self, data: bytes) -> bytes:
        return data

    def build(self, value: bytes) -> bytes:
        return bytes(value)


class TextCodec(ValueCodec[str]):
    fmt = c.GreedyString("utf8")

    def parse(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(ErrorCode.INVALID_TLV_VALUE, exc.start, "invalid UTF-8") from None

    def build(self, value: str) -> bytes:
        return value.encode("utf-8")


class CborCodec(ValueCodec[T]):
    """A deterministic CBOR value mapped onto a class with ``to_cbor``/``from_cbor``.

    ``scan``, if given, is a fast path for the value's usual shape: it returns what
    :func:`cbor.loads` would, or None to leave the input to :func:`cbor.loads`.
    """

    fmt = c.GreedyBytes

    def __init__(self, cls: Any, scan: Callable[[bytes], Any] | None = None) -> None:
        #: The class the value decodes into (its CDDL rule, Section 7).
        self.value_class: Any = cls
        self._scan = scan

    def parse(self, data: bytes) -> T:
        obj = None if self._scan is None else self._scan(data)
        if obj is None:
            obj = cbor.loads(data)
        return self.value_class.from_cbor(obj)  # type: ignore[no-any-return]

    def build(self, value: T) -> bytes:
        return cbor.dumps(value.to_cbor())  # type: ignore[attr-defined]


#: The usual TRACE_CONTEXT's first octets: map(1), key 1, text string with a 1-octet length
#: (a module constant: a class attribute read through ``self`` is never specialised on
#: Python 3.11, ~20 ns a read; read by each parse and build, 4 a routed call at a gateway)
_TC_HEAD = b"\xa1\x01\x78"


class TraceCodec(CborCodec[TraceContext]):
    """TRACE_CONTEXT (Section 7.5), on every request and answer a gateway relays: its
    usual shape, a map holding only a traceparent of 24 to 255 octets (a W3C one has 55),
    is read and written directly, octet for octet as the CBOR codec reads and writes it;
    any other shape goes through that codec."""

    def __init__(self) -> None:
        super().__init__(TraceContext, cbor.scan_text_map)

    def parse(self, data: bytes) -> TraceContext:
        if data[:3] == _TC_HEAD and len(data) >= 28 and data[3] == len(data) - 4:
            try:
                return trace_context(data[4:].decode())
            except UnicodeDecodeError:  # the CBOR codec says why
                return super().parse(data)
        return super().parse(data)

    def build(self, value: TraceContext) -> bytes:
        if value.tracestate is None:
            text = value.traceparent.encode()
            if 24 <= len(text) <= 0xFF:
                return _TC_HEAD + bytes((len(text),)) + text
        return super().build(value)


class SignedRecordCodec(ValueCodec[SignedRecord]):
    fmt = c.GreedyBytes
    #: :meth:`SignedRecord.decode` itself: no frame of its own on a REGISTER's decode.
    parse = staticmethod(SignedRecord.decode)

    def build(self, value: SignedRecord) -> bytes:
        return value.encode()


class ArrayCodec(ValueCodec[tuple[T, ...]]):
    """A count-prefixed array of fixed-size items: ``c.PrefixedArray(count, item)``.

    Parsed and built with the ``struct.Struct`` objects :func:`fixed_struct` derives
    from the count and item constructs.  (Not ``fmt.compile()``: construct 2.10's
    compiled ``Bytes`` returns short reads without an error, so a compiled
    ``PrefixedArray`` of IDs accepts an array shorter than its count.)
    """

    def __init__(self, fmt: c.PrefixedArray, item: Callable[..., T] | None = None) -> None:
        self.fmt = fmt
        count, items = fmt.subcons
        self._count = fixed_struct(count)
        self._item_struct = fixed_struct(_unwrap(items).subcon)
        self._item = item
        self._id_size = self._item_struct.size
        #: The array of no item (the path of a request at its first gateway).
        self._empty = self._count.pack(0)

    def parse(self, data: bytes) -> tuple[T, ...]:
        if data == self._empty:
            return ()
        head, size = self._count.size, self._item_struct.size
        if len(data) < head:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0, "array count missing")
        (n,) = self._count.unpack_from(data)
        if len(data) != head + n * size:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0,
                              f"{len(data) - head} octets for {n} items of {size}")
        if self._item is None:
            return tuple(data[i:i + size] for i in range(head, len(data), size))  # type: ignore[misc]
        item = self._item
        return tuple(item(*v) for v in self._item_struct.iter_unpack(data[head:]))

    def build(self, value: tuple[T, ...]) -> bytes:
        if value == ():
            return self._empty
        if self._item is None:
            if any(len(v) != self._id_size for v in value):  # type: ignore[arg-type]
                raise ValueError(f"array item is not {self._id_size} octets")
            return self._count.pack(len(value)) + b"".join(value)  # type: ignore[arg-type]
        pack = self._item_struct.pack
        return self._count.pack(len(value)) + b"".join(
            pack(*(getattr(v, f) for f in v.__slots__)) for v in value)  # type: ignore[attr-defined]


class ResultCodec(ValueCodec[Result]):
    fmt = ResultFormat

    def parse(self, data: bytes) -> Result:
        if len(data) < 2:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0, "RESULT shorter than 2 octets")
        try:
            record = SignedRecord.decode(data[2:])
        except DecodeError as exc:
            raise exc.at(2) from None
        return Result(int.from_bytes(data[:2], "big"), record)

    def build(self, value: Result) -> bytes:
        return value.score.to_bytes(2, "big") + value.record.encode()


class AdvertiseCodec(ValueCodec[Advertisement]):
    fmt = AdvertiseFormat

    def parse(self, data: bytes) -> Advertisement:
        if len(data) < 9 or len(data) < 9 + data[8] * ID_SIZE:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0, "ADVERTISE shorter than its path")
        n = data[8]
        end = 9 + n * ID_SIZE
        path = tuple(data[9 + i * ID_SIZE: 9 + (i + 1) * ID_SIZE] for i in range(n))
        try:
            record = SignedRecord.decode(data[end:])
        except DecodeError as exc:
            raise exc.at(end) from None
        return Advertisement(int.from_bytes(data[:8], "big"), path, record)

    def build(self, value: Advertisement) -> bytes:
        return (value.version.to_bytes(8, "big") + len(value.path).to_bytes(1, "big")
                + b"".join(value.path) + value.record.encode())


class CapabilitySummaryCodec(ValueCodec[CapabilitySummary]):
    """1..SUMMARY_MAX_HASHES hash functions, a record count, and a filter of 64 to
    SUMMARY_MAX_BITS bits, a whole number of 64-bit words."""

    fmt = CapabilitySummaryFormat

    def parse(self, data: bytes) -> CapabilitySummary:
        bits = data[5:]
        if len(data) < 5 or not SUMMARY_MIN_BITS <= 8 * len(bits) <= SUMMARY_MAX_BITS \
                or len(bits) % 8:
            raise DecodeError(ErrorCode.INVALID_TLV_LENGTH, 0,
                              f"{len(bits)} filter octets: not 8 to "
                              f"{SUMMARY_MAX_BITS // 8} in 8-octet words")
        if not 1 <= data[0] <= SUMMARY_MAX_HASHES:
            raise DecodeError(ErrorCode.INVALID_TLV_VALUE, 0,
                              f"{data[0]} hash functions, not 1 to {SUMMARY_MAX_HASHES}")
        return CapabilitySummary(data[0], int.from_bytes(data[1:5], "big"), bits)

    def build(self, value: CapabilitySummary) -> bytes:
        return bytes((value.hashes,)) + value.count.to_bytes(4, "big") + value.bits


#: The value codec of every TLV type: the one table the message codec dispatches on.
VALUE_CODECS: dict[TlvType, ValueCodec[Any]] = {
    TlvType.TRACE_CONTEXT: TraceCodec(),
    TlvType.DIAGNOSTIC: TextCodec(),
    TlvType.RETRY_AFTER: FixedCodec(c.Int32ub),
    TlvType.AGENT_ID: FixedCodec(Id),
    TlvType.GATEWAY_ID: FixedCodec(Id),
    TlvType.SIGNED_RECORD: SignedRecordCodec(),
    TlvType.LEASE: FixedCodec(c.Int32ub),
    TlvType.STATUS: FixedCodec(c.Int16ub, ErrorCode),
    TlvType.NONCE: FixedCodec(c.Bytes(NONCE_SIZE)),
    TlvType.TIMESTAMP: FixedCodec(c.Int64ub),
    TlvType.QUERY: CborCodec(DiscoveryQuery),
    TlvType.SCOPE: FixedCodec(c.Int8ub, Scope),
    TlvType.MAX_RESULTS: FixedCodec(c.Int16ub),
    TlvType.RESULT: ResultCodec(),
    TlvType.SOURCE_AGENT: FixedCodec(Id),
    TlvType.TARGET_AGENT: FixedCodec(Id),
    TlvType.HOP_LIMIT: FixedCodec(c.Int8ub),
    TlvType.PATH_VECTOR: ArrayCodec(IdList8),
    TlvType.PAYLOAD: BytesCodec(),
    TlvType.DOMAIN: TextCodec(),
    TlvType.HOLD_TIME: FixedCodec(c.Int16ub),
    TlvType.GATEWAY_CAPS: FixedCodec(c.Int32ub),
    TlvType.ADVERTISE: AdvertiseCodec(),
    TlvType.WITHDRAW: StructCodec(WithdrawFormat, VersionedId),
    TlvType.DIGEST_SUMMARY: StructCodec(DigestSummaryFormat, DigestSummary),
    TlvType.DIGEST_ENTRIES: ArrayCodec(DigestEntriesFormat, VersionedId),
    TlvType.AGENT_IDS: ArrayCodec(IdList16),
    TlvType.ACCESS_TOKEN: BytesCodec(),
    TlvType.OFFENDING_TYPE: FixedCodec(c.Int8ub),
    TlvType.TIMEOUT: FixedCodec(c.Int32ub),
    TlvType.EXPORT_POLICY: CborCodec(ExportPolicy),
    TlvType.SEQUENCE: FixedCodec(c.Int32ub),
    TlvType.HOP: CborCodec(HopRecord),
    TlvType.SUMMARY_FILTER: CapabilitySummaryCodec(),
    TlvType.PURGE: StructCodec(WithdrawFormat, VersionedId),
    TlvType.DIGEST_NODE: StructCodec(DigestNodeFormat, DigestNode),
    TlvType.DIGEST_CHILDREN: ArrayCodec(DigestChildrenFormat, DigestSummary),
    TlvType.CERTIFICATE_DER: BytesCodec(),
    TlvType.THUMBPRINT: FixedCodec(c.Bytes(THUMBPRINT_SIZE)),
}
