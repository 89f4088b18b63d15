"""Human- and machine-readable views of decoded messages (draft-dmsc-protocol-00,
Sections 4-7), used by ``dmsc decode`` and by anything that logs or prints PDUs.

Everything here walks the message dataclasses generically; nothing is written per
message type.  Conventions (the same in JSON and text):

* header: ``type`` by name with its code, ``flags`` as value and names, ``transaction_id``;
* TLV-carried fields by their dataclass name, absent optional ones as ``null``;
* enums (ErrorCode, Scope, ConstraintOp, CoseAlgorithm) by name; integers whose TLV
  holds registered bits or codes (GATEWAY_CAPS, OFFENDING_TYPE) as value plus name(s);
* byte strings (ids, nonces, payloads, keys) as lowercase hex;
* CBOR values (Section 7) as nested objects with the CDDL's field names;
* signed records (Section 7.2.1) as ``alg``, ``kid``, headers, signature and the
  decoded ``record``;
* unknown TLVs as type, criticality and hex value;
* a :class:`DecodeError` as ``{"error": name, "code": int, "offset": n, "reason": str}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from enum import Enum, IntEnum, IntFlag
from typing import Any

from .cose import HDR_ALG, HDR_KID, HDR_X5CHAIN, SignedRecord
from .errors import DecodeError
from .messages import Message, RawTlv
from .registry import CRITICAL_BIT, ID_SIZE, VERSION, Flags, GatewayCaps, MessageType, TlvType

#: TLVs whose plain integer value is a registered code or bit set (Section 11).
_INT_MEANINGS: dict[TlvType, type[IntEnum] | type[IntFlag]] = {
    TlvType.GATEWAY_CAPS: GatewayCaps,
    TlvType.OFFENDING_TYPE: MessageType,
}
#: COSE header labels by name (RFC 9052, Section 3.1; RFC 9360).
_COSE_LABELS = {HDR_ALG: "alg", HDR_KID: "kid", HDR_X5CHAIN: "x5chain"}


class Hex(str):
    """A byte string rendered as hex; a ``str`` for JSON, recognisable for text output."""

    __slots__ = ()


class Coded(dict[str, Any]):
    """A registered code or bit set: ``{"value": int, "name": str | None}`` or
    ``{"value": int, "names": [str, ...]}``; a ``dict`` for JSON, recognisable for text."""


def flag_names(value: int, flags: type[IntFlag]) -> list[str]:
    """Names of the registered bits set in ``value`` (unassigned bits are not named)."""
    return [f.name for f in flags if f.name is not None and value & f.value]


def _coded_int(value: int, meaning: type[IntEnum] | type[IntFlag]) -> Coded:
    if issubclass(meaning, IntFlag):
        return Coded(value=value, names=flag_names(value, meaning))
    known = meaning._value2member_map_.get(value)
    return Coded(value=value, name=None if known is None else known.name)


def _coded_text(coded: Coded) -> str:
    value = coded["value"]
    if "names" in coded:
        return " ".join([f"0x{value:04x}", *coded["names"]])
    name = coded["name"]
    return f"0x{value:02x} (unregistered)" if name is None else f"{name} (0x{value:02x})"


def _cose_header(header: dict[int, Any]) -> dict[str, Any]:
    return {_COSE_LABELS.get(label, str(label)): jsonable(v) for label, v in header.items()}


def jsonable(value: Any) -> Any:
    """Convert a decoded value (dataclass, enum, bytes, tuple...) to JSON-able data."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return Hex(bytes(value).hex())
    if isinstance(value, SignedRecord):
        return {
            "alg": value.algorithm.name,
            "kid": jsonable(value.kid),
            "protected": Hex(value.protected.hex()),
            "unprotected": _cose_header(value.unprotected),
            "signature": Hex(value.signature.hex()),
            "record": jsonable(value.record),
        }
    if isinstance(value, RawTlv):
        return {"type": value.type, "critical": bool(value.type & CRITICAL_BIT),
                "value": Hex(value.value.hex())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    raise TypeError(f"cannot render {type(value).__name__}")


def _field_jsonable(tlv: TlvType, value: Any) -> Any:
    meaning = _INT_MEANINGS.get(tlv)
    if meaning is not None and isinstance(value, int):
        return _coded_int(value, meaning)
    return jsonable(value)


def _tlv_fields(msg: Message) -> Iterator[tuple[str, TlvType]]:
    """The TLV-carried fields of ``msg`` in declaration order, with their TLV types."""
    tlvs = {spec.name: spec.tlv for spec in msg.SPEC}
    for f in dataclasses.fields(msg):
        if f.name in tlvs:
            yield f.name, tlvs[f.name]


def message_to_dict(msg: Message, length: int | None = None) -> dict[str, Any]:
    """``msg`` as JSON-able data: ``{"header": {...}, "fields": {...}, "unknown_tlvs": [...]}``.

    ``length`` is the PDU length in octets when known (the decoder knows it; a message
    built in memory does not until it is encoded).
    """
    header: dict[str, Any] = {
        "version": VERSION,
        "type": msg.TYPE.name,
        "type_code": int(msg.TYPE),
        "flags": _coded_int(msg.flags, Flags),
    }
    if length is not None:
        header["length"] = length
    header["transaction_id"] = msg.transaction_id
    fields = {}
    for name, tlv in _tlv_fields(msg):
        fields[name] = _field_jsonable(tlv, getattr(msg, name))
    return {"header": header, "fields": fields, "unknown_tlvs": jsonable(msg.unknown_tlvs)}


def error_to_dict(exc: DecodeError) -> dict[str, Any]:
    """A decoding error (Section 4.4) as JSON-able data."""
    return {"error": exc.code.name, "code": int(exc.code), "offset": exc.offset,
            "reason": exc.reason}


def error_text(exc: DecodeError) -> str:
    """A decoding error (Section 4.4) as one line."""
    return f"{exc.code.name} (0x{int(exc.code):04x}) at offset {exc.offset}: {exc.reason}"


# --- text -------------------------------------------------------------------------------
def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and text.strip() else None


def _safe(text: str) -> str:
    """``text`` as is when it is printable and non-empty, else quoted with escapes (text
    from the wire must not break lines or reach the terminal as control characters)."""
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _scalar_text(value: Any) -> str | None:
    """One-line text for a leaf of :func:`jsonable` output, None for containers."""
    if value is None:
        return "null"
    if isinstance(value, Hex):
        if not value:
            return "(empty)"
        text = _printable(bytes.fromhex(value))
        return f"{value}  {text!r}" if text is not None else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Coded):
        return _coded_text(value)
    if isinstance(value, str):
        return _safe(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and not value:
        return "[]"
    if isinstance(value, dict) and not value:
        return "{}"
    return None


def _text_lines(value: Any, indent: str) -> Iterator[str]:
    """Lines for a container of :func:`jsonable` output, YAML-like, under ``indent``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                continue
            scalar = _scalar_text(item)
            if scalar is not None:
                yield f"{indent}{_safe(key)}: {scalar}"
            else:
                yield f"{indent}{_safe(key)}:"
                yield from _text_lines(item, indent + "  ")
    else:
        for item in value:
            scalar = _scalar_text(item)
            if scalar is not None:
                yield f"{indent}- {scalar}"
            else:
                inner = list(_text_lines(item, indent + "  ")) or ["{}"]
                yield f"{indent}- {inner[0].lstrip()}"
                yield from inner[1:]


def message_text(msg: Message, length: int | None = None) -> str:
    """``msg`` as readable multi-line text: a header line, then every field by name with
    its TLV type, nested values indented."""
    data = message_to_dict(msg, length)
    head = data["header"]
    lines = [
        f"{head['type']} (0x{head['type_code']:02x})"
        + (f", {length} octets" if length is not None else ""),
        f"  transaction_id: {msg.transaction_id} (0x{msg.transaction_id:016x})",
        f"  flags: {_scalar_text(head['flags'])}",
    ]
    for (name, tlv), value in zip(_tlv_fields(msg), data["fields"].values(), strict=True):
        if value is None:
            continue
        label = f"  {name} [{tlv.name}]"
        scalar = _scalar_text(value)
        if scalar is not None:
            lines.append(f"{label}: {scalar}")
        else:
            lines.append(f"{label}:")
            lines.extend(_text_lines(value, "    "))
    for raw in msg.unknown_tlvs:
        kind = "critical" if raw.type & CRITICAL_BIT else "non-critical"
        lines.append(f"  unknown TLV 0x{raw.type:04x} ({kind}): {raw.value.hex() or '(empty)'}")
    return "\n".join(lines)


# --- one-line summaries -----------------------------------------------------------------
def _brief(value: Any) -> str | None:
    if value is None or value == ():
        return None
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 32 else repr(value[:31] + "…")
    if isinstance(value, bytes):
        text = _printable(value)
        if text is not None:
            return _brief(text)
        if 0 < len(value) <= ID_SIZE:
            return value[:4].hex() + ("…" if len(value) > 4 else "")
        return f"<{len(value)} octets>"
    if isinstance(value, SignedRecord):
        return value.record.agent_uri
    if isinstance(value, tuple):
        parts = [b for b in map(_brief, value) if b is not None]
        return "[" + ", ".join(parts) + "]"
    if dataclasses.is_dataclass(value):
        inner = (f"{f.name}={b}" for f in dataclasses.fields(value)
                 if (b := _brief(getattr(value, f.name))) is not None)
        return "{" + " ".join(inner) + "}"
    return str(value)


def summary(msg: Message, width: int = 120) -> str:
    """A one-line digest of ``msg``'s fields (ids shortened, records by agent URI)."""
    parts = []
    for name, tlv in _tlv_fields(msg):
        value = getattr(msg, name)
        brief = (_scalar_text(_field_jsonable(tlv, value)) if tlv in _INT_MEANINGS
                 else _brief(value))
        if brief is not None:
            parts.append(f"{name}={brief}")
    if msg.unknown_tlvs:
        parts.append(f"unknown_tlvs={len(msg.unknown_tlvs)}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"
