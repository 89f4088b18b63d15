"""scapy layer for DMSC (draft-dmsc-protocol-00, Sections 4-7), in the style of scapy's
``contrib/pfcp.py`` and ``contrib/mqttsn.py``.

* :class:`DMSC` is the common header (Section 4.1); ``post_build`` fills ``length``.
* One payload class per message type (``DMSCRegister``, ``DMSCRouteReply``...) holds
  the TLV list; a message's TLV-carried fields read by their codec names
  (``pkt.lease``, ``pkt.status``, ``pkt.value_of("payload")``), see
  :meth:`DMSCMessage.value_of`.
* One TLV class per TLV type (``DMSCTlvLease``...) with typed value fields, chosen by
  the type code; unknown TLVs (and values of the wrong size) fall back to
  :class:`DMSCTlv`, whose type shows the critical bit (Section 4.2).  CBOR values
  (Section 7) are kept as their octets and shown decoded by the codec's value classes.
* Bound to the lab UDP port (Section 9.4) both ways; ``DMSC(data)`` also dissects the
  payload of a QUIC stream (Section 9.1), :func:`dissect_stream` every PDU in it.
* :meth:`DMSC.hashret` and :meth:`DMSC.answers` pair requests with their responses
  (same transaction id; the matching response type, or ERROR, Section 5.4).

Every number comes from :mod:`dmscproto.codec.registry`; the value layouts are derived
from the codec's ``construct`` formats (:mod:`dmscproto.codec.layout`), which the
Wireshark dissector generator (``tools/gen_wireshark.py``) uses too, without scapy.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from enum import IntFlag
from typing import Any

import cbor2

from ..errors import MissingExtra

try:  # the analysis extra
    from scapy.fields import (
        ByteEnumField,
        ByteField,
        Field,
        FieldLenField,
        FieldListField,
        FlagsField,
        IntField,
        LongField,
        PacketListField,
        ShortField,
        StrLenField,
        XShortEnumField,
        XStrFixedLenField,
        XStrLenField,
    )
    from scapy.layers.inet import UDP
    from scapy.packet import Packet, Raw, bind_bottom_up, bind_layers
except ImportError:
    raise MissingExtra("the scapy layer (dmscproto.analysis.scapy_dmsc)", "analysis",
                       "scapy") from None

from ..codec import cbor
from ..codec.cose import SignedRecord
from ..codec.errors import DecodeError
from ..codec.layout import LAYOUTS, Part, layout_fits
from ..codec.messages import MESSAGE_CLASSES, REPEATED, FieldSpec
from ..codec.pdu import peek_length
from ..codec.registry import (
    ANSWER_TO,
    CRITICAL_BIT,
    HEADER_SIZE,
    TLV_HEADER_SIZE,
    UDP_PORT,
    VERSION,
    Flags,
    MessageType,
    TlvType,
)


def _show_cbor(data: bytes, decode: Callable[[bytes], Any]) -> str:
    """A CBOR value as text: the codec's value object, else the generic CBOR data
    model with the reason the codec refuses it, else hex."""
    try:
        value = decode(data)
    except DecodeError as exc:
        reason = f"  # {exc.code.name}: {exc.reason}"
    else:
        if isinstance(value, SignedRecord):
            kid = "-" if value.kid is None else value.kid.hex()
            return (f"COSE_Sign1(alg={value.algorithm.name}, kid={kid}, "
                    f"signature={value.signature.hex()}, record={value.record!r})")
        return repr(value)
    try:
        return repr(cbor2.loads(data)) + reason
    except Exception:
        return data.hex() + reason


# --- scapy fields -------------------------------------------------------------------------
class TlvTypeField(XShortEnumField):
    """A TLV type code by name, its critical bit spelled out (Section 4.2)."""

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        text = str(super().i2repr(pkt, x))
        if isinstance(x, int):
            text += " (critical)" if x & CRITICAL_BIT else " (skippable)"
        return text


class Utf8Field(StrLenField):
    """UTF-8 text (DIAGNOSTIC, DOMAIN); kept as octets, shown as a string."""

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        try:
            return repr(bytes(x).decode("utf-8"))
        except UnicodeDecodeError:
            return repr(bytes(x)) + "  # invalid UTF-8"


class CborField(StrLenField):
    """A CBOR item (Section 7): the exact octets, so ``raw()`` reproduces them, shown
    decoded by the codec's value class.  Accepts a value object when building."""

    __slots__ = ["decoder"]

    def __init__(self, name: str, default: bytes, decode: Callable[[bytes], Any],
                 length_from: Callable[[Packet], int]) -> None:
        super().__init__(name, default, length_from=length_from)
        self.decoder = decode

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        if isinstance(x, SignedRecord):
            return x.encode()
        if hasattr(x, "to_cbor"):
            return cbor.dumps(x.to_cbor())
        return super().any2i(pkt, x)

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return _show_cbor(bytes(x), self.decoder)


def field_name(part: Part) -> str:
    """The scapy field name of a part: its layout name, with ``_value`` appended where
    that name is a ``Packet`` attribute (``payload``)."""
    return f"{part.name}_value" if hasattr(Packet, part.name) else part.name


def _rest(fixed: int) -> Callable[[Packet], int]:
    """``length_from`` for the variable part: the TLV length minus what precedes it."""
    def length_from(pkt: Packet) -> int:
        before = fixed
        for f in pkt.fields_desc:
            if isinstance(f, FieldListField | PacketListField):
                before += len(f.addfield(pkt, b"", pkt.getfieldval(f.name)))
        return max(int(pkt.length or 0) - before, 0)
    return length_from


def _uint_field(part: Part, name: str) -> Field[Any, Any]:
    meaning, size = part.meaning, part.size
    if meaning is not None and issubclass(meaning, IntFlag):
        names = {int(f): str(f.name) for f in meaning}
        return FlagsField(name, 0, 8 * (size or 0), names)
    enum = {int(m): str(m.name) for m in meaning} if meaning is not None else None
    if size == 1:
        return ByteEnumField(name, 0, enum) if enum else ByteField(name, 0)
    if size == 2:
        return XShortEnumField(name, 0, enum) if enum else ShortField(name, 0)
    if size == 4:
        return IntField(name, 0)
    if size == 8:
        return LongField(name, 0)
    raise TypeError(f"no scapy field for a {size}-octet integer")


def _item_class(tlv: TlvType, part: Part) -> type[Packet]:
    """A packet class for one structured list item (DIGEST_ENTRIES)."""
    cls = type(f"DMSC{_camel(tlv.name)}Item", (_Item,), {
        "name": f"DMSC {tlv.name} item",
        "fields_desc": [_field(p, field_name(p), 0) for p in part.item],
    })
    return cls


def _field(part: Part, name: str, fixed_before: int) -> Field[Any, Any]:
    if part.kind == "uint":
        return _uint_field(part, name)
    if part.kind == "bytes" and part.size is not None:
        return XStrFixedLenField(name, b"\0" * part.size, part.size)
    if part.kind == "bytes":
        return XStrLenField(name, b"", length_from=_rest(fixed_before))
    if part.kind == "text":
        return Utf8Field(name, b"", length_from=_rest(fixed_before))
    if part.kind == "cbor" and part.decode is not None:
        return CborField(name, b"", part.decode, _rest(fixed_before))
    raise TypeError(part.kind)


def _list_fields(tlv: TlvType, part: Part) -> list[Field[Any, Any]]:
    count_name = f"{part.name}_count"
    count = FieldLenField(count_name, None, count_of=part.name,
                          fmt={1: "B", 2: "H", 4: "I"}[part.count_size])
    counter: Callable[[Packet], int] = lambda pkt: int(pkt.getfieldval(count_name))  # noqa: E731
    if len(part.item) == 1:
        (item,) = part.item
        inner = XStrFixedLenField("", b"", item.size or 0)
        return [count, FieldListField(part.name, [], inner, count_from=counter)]
    return [count, PacketListField(part.name, [], _item_class(tlv, part), count_from=counter)]


def _camel(name: str) -> str:
    return "".join(w.capitalize() for w in name.split("_"))


# --- TLVs (Section 4.2) -------------------------------------------------------------------
class DMSCTlv(Packet):
    """A TLV.  Dispatches on the type code to the TLV's own class; this class itself
    is the generic view, for unknown types and values of the wrong size."""

    name = "DMSC TLV"
    fields_desc = [
        TlvTypeField("type", 0, {int(t): t.name for t in TlvType}),
        ShortField("length", None),
        XStrLenField("value", b"", length_from=lambda pkt: int(pkt.length or 0)),
    ]
    #: The registered TLV type this class carries (None for the generic view).
    tlv_type: TlvType | None = None
    layout: tuple[Part, ...] = ()
    registered: dict[int, type[DMSCTlv]] = {}

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any
                      ) -> type[Packet]:
        if cls is not DMSCTlv or not _pkt or len(_pkt) < TLV_HEADER_SIZE:
            return cls
        ttype, length = struct.unpack_from("!HH", _pkt)
        sub = DMSCTlv.registered.get(ttype)
        value = _pkt[TLV_HEADER_SIZE:TLV_HEADER_SIZE + length]
        if sub is None or len(value) < length or not layout_fits(sub.layout, value):
            return DMSCTlv
        return sub

    @property
    def critical(self) -> bool:
        """The must-understand bit of the type (Section 4.2)."""
        return bool(int(self.type) & CRITICAL_BIT)

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.length is None:
            pkt = pkt[:2] + struct.pack("!H", len(pkt) - TLV_HEADER_SIZE) + pkt[4:]
        return pkt + pay

    def to_data(self) -> Any:
        """The value in the codec's data model, from this packet's fields: integers
        (registered codes as their enum), bytes, text, decoded CBOR objects, lists;
        several parts as a dict by part name.  The generic view gives its octets."""
        if self.tlv_type is None:
            return bytes(self.value)
        values = {p.name: self._part_data(p) for p in self.layout}
        return values[self.layout[0].name] if len(self.layout) == 1 else values

    def _part_data(self, part: Part) -> Any:
        return _part_value(part, self.getfieldval(field_name(part)))

    def mysummary(self) -> str:
        return str(self.sprintf("%type%"))


class _Item(Packet):
    """A fixed-size item of a TLV's list (no payload)."""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


def _part_value(part: Part, value: Any) -> Any:
    if part.kind == "uint":
        number = int(value)
        meaning = part.meaning
        if meaning is not None and not issubclass(meaning, IntFlag) \
                and number in meaning._value2member_map_:
            return meaning(number)
        return number
    if part.kind == "bytes":
        return bytes(value)
    if part.kind == "text":
        return bytes(value).decode("utf-8", errors="replace")
    if part.kind == "cbor":
        assert part.decode is not None
        try:
            return part.decode(bytes(value))
        except DecodeError:
            return bytes(value)
    if len(part.item) == 1:
        return tuple(bytes(v) for v in value)
    return tuple({p.name: _part_value(p, item.getfieldval(field_name(p))) for p in part.item}
                 for item in value)


def _tlv_class(tlv: TlvType) -> type[DMSCTlv]:
    layout = LAYOUTS[tlv]
    fields: list[Field[Any, Any]] = [
        TlvTypeField("type", int(tlv), {int(t): t.name for t in TlvType}),
        ShortField("length", None),
    ]
    fixed = 0
    for part in layout:
        if part.kind == "list":
            fields += _list_fields(tlv, part)
            fixed += part.count_size
        else:
            fields.append(_field(part, field_name(part), fixed))
            fixed += part.fixed_size or 0
    cls = type(f"DMSCTlv{_camel(tlv.name)}", (DMSCTlv,), {
        "name": f"DMSC TLV {tlv.name}",
        "fields_desc": fields,
        "tlv_type": tlv,
        "layout": layout,
        "__doc__": f"The {tlv.name} TLV (Section 11.4).",
    })
    DMSCTlv.registered[int(tlv)] = cls
    return cls


#: The TLV class of every registered TLV type.
TLV_CLASSES: dict[TlvType, type[DMSCTlv]] = {t: _tlv_class(t) for t in TlvType}


# --- messages (Sections 5, 6) -------------------------------------------------------------
class DMSCMessage(Packet):
    """The body of a message: its TLVs, in order.  Each message type has a subclass;
    its TLV-carried fields read by their codec names: ``value_of("payload")``, or as
    attributes (``pkt.lease``) where the name is not a scapy ``Packet`` attribute
    (``payload`` and ``summary`` are)."""

    name = "DMSC message"
    fields_desc = [PacketListField("tlvs", [], DMSCTlv)]
    message_type: MessageType
    spec: dict[str, FieldSpec] = {}

    def value_of(self, field: str) -> Any:
        """The message field ``field`` (a codec field name) from the TLVs: None when an
        optional TLV is absent, a tuple for a repeated one (Section 4.2)."""
        spec = self.spec[field]
        values = [t.to_data() for t in self.tlvs if int(t.type) == spec.tlv]
        if spec.occurs is REPEATED:
            return tuple(values)
        return values[0] if values else None

    def message_fields(self) -> dict[str, Any]:
        """Every TLV-carried field of the message by its codec name."""
        return {name: self.value_of(name) for name in self.spec}

    def __getattr__(self, attr: str) -> Any:
        try:
            return super().__getattr__(attr)
        except AttributeError:
            if attr in type(self).spec:
                return self.value_of(attr)
            raise

    def mysummary(self) -> tuple[str, list[type[Packet]]]:  # type: ignore[override]
        names = (TlvType(t.type).name if t.type in TlvType._value2member_map_
                 else f"0x{int(t.type):04x}" for t in self.tlvs)
        return ", ".join(names), [DMSC]


def _message_class(mtype: MessageType) -> type[DMSCMessage]:
    codec_cls = MESSAGE_CLASSES[mtype]
    return type(f"DMSC{codec_cls.__name__}", (DMSCMessage,), {
        "name": f"DMSC {mtype.name}",
        "fields_desc": [PacketListField("tlvs", [], DMSCTlv)],
        "message_type": mtype,
        "spec": {s.name: s for s in codec_cls.SPEC},
        "__doc__": f"{mtype.name} (Section 11.2): {codec_cls.__doc__}",
    })


#: The message class of every registered message type.
MESSAGE_PACKETS: dict[MessageType, type[DMSCMessage]] = {
    m: _message_class(m) for m in MessageType
}


#: The answer type of each request type (Section 9.3); any request may also be answered
#: by ERROR (Section 5.4).
RESPONSES: Mapping[MessageType, MessageType] = ANSWER_TO


# --- the header (Section 4.1) -------------------------------------------------------------
class DMSC(Packet):
    """The DMSC common header; the payload is the message's class by ``type``."""

    name = "DMSC"
    fields_desc = [
        ByteField("version", VERSION),
        ByteEnumField("type", None, {int(m): m.name for m in MessageType}),
        FlagsField("flags", 0, 16, {int(f): str(f.name) for f in Flags}),
        IntField("length", None),
        LongField("txid", 0),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.length is None:
            pkt = pkt[:4] + struct.pack("!I", len(pkt) + len(pay)) + pkt[8:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        body = max(int(self.length or 0) - HEADER_SIZE, 0)
        return s[:body], s[body:]

    def do_dissect_payload(self, s: bytes) -> None:
        if s:
            super().do_dissect_payload(s)
        elif self.type in MESSAGE_PACKETS:  # a message without TLVs (KEEPALIVE)
            self.add_payload(MESSAGE_PACKETS[MessageType(self.type)](_internal=1))

    def hashret(self) -> bytes:
        return struct.pack("!Q", int(self.txid))

    def answers(self, other: Packet) -> int:
        """A response answers the request with the same transaction id whose type it
        pairs with (:data:`RESPONSES`); ERROR answers any request (Section 5.4)."""
        if not isinstance(other, DMSC) or int(other.txid) != int(self.txid):
            return 0
        try:
            mine, theirs = MessageType(self.type), MessageType(other.type)
        except ValueError:
            return 0
        if theirs not in RESPONSES:
            return 0
        return int(mine in (RESPONSES[theirs], MessageType.ERROR))

    def mysummary(self) -> str:
        return str(self.sprintf("DMSC %type% txid=%txid%"))


def dissect_stream(data: bytes) -> list[Packet]:
    """Every PDU of a stream (e.g. a QUIC stream's payload, Section 9.1), split by the
    length in each header as a stream receiver does (:func:`peek_length`); the rest,
    from a header that must be refused or a PDU cut short, is returned as ``Raw``."""
    pdus: list[Packet] = []
    offset = 0
    while offset < len(data):
        try:
            length = peek_length(data[offset:])
        except DecodeError:
            length = None
        if length is None or offset + length > len(data):
            pdus.append(Raw(data[offset:]))
            break
        pdus.append(DMSC(data[offset:offset + length]))
        offset += length
    return pdus


for _mtype, _cls in MESSAGE_PACKETS.items():
    bind_layers(DMSC, _cls, type=int(_mtype))
bind_layers(UDP, DMSC, dport=UDP_PORT)
bind_bottom_up(UDP, DMSC, sport=UDP_PORT)

__all__ = [
    "DMSC", "MESSAGE_PACKETS", "RESPONSES", "TLV_CLASSES", "DMSCMessage", "DMSCTlv",
    "dissect_stream",
]
