"""The layout of every TLV value (draft-dmsc-protocol-00, Sections 4.2, 5, 6, 7),
derived from the codec's ``construct`` formats: what the scapy layer
(:mod:`dmscproto.analysis.scapy_dmsc`) and the Wireshark dissector generator
(``tools/gen_wireshark.py``) show, without either restating a field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

import construct as c

from .cose import SignedRecord
from .registry import ErrorCode, GatewayCaps, MessageType, Scope, TlvType
from .wire import (
    VALUE_CODECS,
    AdvertiseCodec,
    ArrayCodec,
    BytesCodec,
    CapabilitySummaryCodec,
    CborCodec,
    FixedCodec,
    ResultCodec,
    SignedRecordCodec,
    StructCodec,
    TextCodec,
    ValueCodec,
)

#: Registered meanings of integer TLV values: codes shown by name, bits by flag name.
MEANINGS: dict[TlvType, type[IntEnum] | type[IntFlag]] = {
    TlvType.STATUS: ErrorCode,
    TlvType.SCOPE: Scope,
    TlvType.GATEWAY_CAPS: GatewayCaps,
    TlvType.OFFENDING_TYPE: MessageType,
}


@dataclass(frozen=True, slots=True)
class Part:
    """One field of a TLV value.

    ``kind`` is ``uint`` (``size`` octets, big-endian), ``bytes`` (``size`` octets, or
    the rest of the value when ``size`` is None), ``text`` (UTF-8, the rest), ``cbor``
    (one CBOR item, the rest; ``decode`` is the codec's parser for it) or ``list``
    (a ``count_size``-octet count, then that many ``item``s of fixed size).
    ``is_signed_record`` tells a COSE_Sign1 capability record (Section 7.2.1); any other
    CBOR part decodes into ``value_class``.
    """

    name: str
    kind: str
    size: int | None = None
    meaning: type[IntEnum] | type[IntFlag] | None = None
    count_size: int = 0
    item: tuple[Part, ...] = ()
    decode: Callable[[bytes], Any] | None = None
    value_class: type | None = None

    @property
    def is_signed_record(self) -> bool:
        return self.kind == "cbor" and self.decode == SignedRecord.decode

    @property
    def fixed_size(self) -> int | None:
        """Octets of a fixed-size part (uint, fixed bytes), None otherwise."""
        return self.size if self.kind in ("uint", "bytes") else None


def _parts(fmt: c.Construct, name: str) -> tuple[Part, ...]:
    """The parts of a construct format; a greedy byte string inside a struct is the
    signed record (RESULT, ADVERTISE) when named ``record``, else octets."""
    while isinstance(fmt, c.Renamed):
        fmt = fmt.subcon
    if isinstance(fmt, c.FormatField):
        return (Part(name, "uint", fmt.sizeof()),)
    if isinstance(fmt, c.Bytes) and isinstance(fmt.length, int):
        return (Part(name, "bytes", fmt.length),)
    if isinstance(fmt, c.StringEncoded):
        return (Part(name, "text"),)
    if fmt is c.GreedyBytes:
        if name != "record":
            return (Part(name, "bytes"),)
        return (Part(name, "cbor", decode=SignedRecord.decode),)
    if isinstance(fmt, c.FocusedSeq):  # PrefixedArray: Rebuild(count), Array(items)
        count, items = (s.subcon for s in fmt.subcons)
        item = _parts(items.subcon, "item")
        return (Part(name, "list", count_size=count.subcon.sizeof(), item=item),)
    if isinstance(fmt, c.Struct):
        return tuple(p for sub in fmt.subcons for p in _parts(sub, sub.name))
    raise TypeError(f"no layout for {fmt!r}")


def tlv_layout(tlv: TlvType) -> tuple[Part, ...]:
    """The value layout of ``tlv``, from its codec in :data:`VALUE_CODECS`."""
    codec: ValueCodec[Any] = VALUE_CODECS[tlv]
    name = tlv.name.lower()
    if isinstance(codec, SignedRecordCodec):
        return (Part(name, "cbor", decode=SignedRecord.decode),)
    if isinstance(codec, CborCodec):
        return (Part(name, "cbor", decode=codec.parse, value_class=codec.value_class),)
    if isinstance(codec, TextCodec):
        return (Part(name, "text"),)
    if isinstance(codec, BytesCodec):
        return (Part(name, "bytes"),)
    if isinstance(codec, ResultCodec | AdvertiseCodec | StructCodec | CapabilitySummaryCodec):
        return _parts(codec.fmt, name)
    if isinstance(codec, FixedCodec | ArrayCodec):
        (part,) = _parts(codec.fmt, name)
        if part.kind == "uint" and tlv in MEANINGS:
            part = Part(part.name, "uint", part.size, MEANINGS[tlv])
        return (part,)
    raise TypeError(f"no layout for the codec of {tlv.name}")


#: Value layout of every registered TLV type.
LAYOUTS: dict[TlvType, tuple[Part, ...]] = {t: tlv_layout(t) for t in TlvType}


def layout_fits(parts: tuple[Part, ...], value: bytes) -> bool:
    """Whether ``value`` has exactly the size ``parts`` describe (counts included)."""
    offset = 0
    for part in parts:
        if part.kind == "list":
            if offset + part.count_size > len(value):
                return False
            count = int.from_bytes(value[offset:offset + part.count_size], "big")
            item = sum(p.fixed_size or 0 for p in part.item)
            offset += part.count_size + count * item
        elif part.fixed_size is not None:
            offset += part.fixed_size
        else:
            return offset <= len(value)
    return offset == len(value)
