#!/usr/bin/env python3
"""Generate ``tools/wireshark/dmsc.lua``, the Wireshark/tshark dissector for DMSC, from
the codec (draft-dmsc-protocol-00, Sections 4-7, 9, 11).

Every number in the dissector comes from :mod:`dmscproto.codec.registry` (message
types, TLV types, flags, error codes, enumerations, sizes, port, ALPN), the per-message
TLV tables from the message classes (:mod:`dmscproto.codec.messages`), and the value
layouts from the codec's ``construct`` formats through
:func:`dmscproto.codec.layout.tlv_layout` (the scapy layer uses the same ones).  The
hand-written Lua is ``tools/wireshark/dmsc.lua.in``; this script fills its ``@NAME@``
placeholders.

Usage:
  tools/gen_wireshark.py           write tools/wireshark/dmsc.lua
  tools/gen_wireshark.py --check   exit 1 if the committed file differs from a fresh one
"""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum, IntFlag
from pathlib import Path

from dmscproto.codec.layout import LAYOUTS, MEANINGS, Part
from dmscproto.codec.messages import MESSAGE_CLASSES
from dmscproto.codec.registry import (
    ALPN,
    CRITICAL_BIT,
    HEADER_SIZE,
    MAX_PDU_SIZE,
    TLV_HEADER_SIZE,
    UDP_PORT,
    VERSION,
    ErrorCode,
    Flags,
    MessageType,
    Scope,
    TlvType,
)

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tools" / "wireshark" / "dmsc.lua"
#: The hand-written Lua, with ``@NAME@`` placeholders for what the codec gives.
TEMPLATE = ROOT / "tools" / "wireshark" / "dmsc.lua.in"

#: Decoding errors (Section 4.4) the dissector reports as expert info, by code name.
#: CBOR and COSE errors are left to Wireshark's own CBOR dissector.
EXPERT_ERRORS = (
    ErrorCode.TRUNCATED, ErrorCode.TRAILING_DATA, ErrorCode.LENGTH_MISMATCH,
    ErrorCode.UNSUPPORTED_VERSION, ErrorCode.UNKNOWN_MESSAGE_TYPE,
    ErrorCode.UNKNOWN_CRITICAL_TLV, ErrorCode.DUPLICATE_TLV, ErrorCode.PDU_TOO_LARGE,
    ErrorCode.MISSING_TLV, ErrorCode.INVALID_TLV_LENGTH, ErrorCode.INVALID_TLV_VALUE,
    ErrorCode.TLV_ORDER,
)
#: TLV value meanings whose values are named by their registry: an unregistered value is
#: refused (INVALID_TLV_VALUE), except in an open registry (STATUS takes any code,
#: Section 4.3), where it is shown as unregistered.
STRICT_MEANINGS = (ErrorCode, Scope)
OPEN_MEANINGS = (ErrorCode,)


def lua_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hx(code: int, digits: int = 2) -> str:
    """A code as a Lua hex literal of at least ``digits`` digits."""
    return f"0x{code:0{digits}x}"


def value_string(enum: type[IntEnum] | type[IntFlag]) -> str:
    digits = 2 if max(int(m) for m in enum) < 0x100 else 4
    items = "".join(f"\n  [{hx(int(m), digits)}] = {lua_str(str(m.name))}," for m in enum)
    return "{" + items + "\n}"


class Fields:
    """Collects ProtoField declarations, keyed by their filter name."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, abbrev: str, ctor: str, label: str, *args: str) -> str:
        rest = "".join(", " + a for a in args)
        self.lines.append(f"f[{lua_str(abbrev)}] = ProtoField.{ctor}({lua_str(abbrev)}, "
                          f"{lua_str(label)}{rest})")
        return f"f[{lua_str(abbrev)}]"


def _uint_field(fields: Fields, abbrev: str, label: str, part: Part) -> tuple[str, str]:
    """A uint part's ProtoField and, for bit sets, its flag sub-fields (Lua list)."""
    size = part.size or 0
    meaning = part.meaning
    ctor = f"uint{8 * size}"
    if meaning is not None and issubclass(meaning, IntFlag):
        ref = fields.add(abbrev, ctor, label, "base.HEX")
        bits = [fields.add(f"{abbrev}.{str(flag.name).lower()}", "bool", str(flag.name),
                           str(8 * size), "nil", hex(int(flag)))
                for flag in meaning]
        return ref, "{ " + ", ".join(bits) + " }"
    if meaning is not None:
        return fields.add(abbrev, ctor, label, "base.HEX", f"vs.{meaning.__name__}"), "nil"
    return fields.add(abbrev, ctor, label, "base.DEC"), "nil"


def _part_lua(fields: Fields, prefix: str, part: Part, single: bool) -> str:
    """The Lua layout entry of one part, declaring its fields."""
    abbrev = prefix if single else f"{prefix}.{part.name}"
    label = abbrev.removeprefix("dmsc.").replace(".", " ").replace("_", " ")
    if part.kind == "uint":
        ref, flags = _uint_field(fields, abbrev, label, part)
        strict = f"vs.{part.meaning.__name__}" if part.meaning in STRICT_MEANINGS else "nil"
        is_open = "true" if part.meaning in OPEN_MEANINGS else "false"
        return (f'{{ kind = "uint", size = {part.size}, field = {ref}, flags = {flags}, '
                f"strict = {strict}, open = {is_open} }}")
    if part.kind == "list":
        ref = fields.add(abbrev, "none", label)
        count = fields.add(f"{abbrev}.count", f"uint{8 * part.count_size}", "count", "base.DEC")
        item_size = sum(p.size or 0 for p in part.item)
        if len(part.item) == 1:
            item = _part_lua(fields, f"{abbrev}.item", part.item[0], True)
            entry = "nil"
        else:
            entry = fields.add(f"{abbrev}.entry", "none", "entry")
            item = ", ".join(_part_lua(fields, abbrev, p, False) for p in part.item)
        return (f'{{ kind = "list", field = {ref}, count_field = {count}, '
                f"count_size = {part.count_size}, item_size = {item_size}, "
                f"entry_field = {entry}, item = {{ {item} }} }}")
    if part.kind == "text":
        ref = fields.add(abbrev, "string", label, "base.UNICODE")
    else:
        ref = fields.add(abbrev, "bytes", label)
    size = "nil" if part.size is None else str(part.size)
    cose = "true" if part.is_signed_record else "false"
    return f'{{ kind = "{part.kind}", size = {size}, field = {ref}, cose = {cose} }}'


def render() -> str:
    """The whole dissector source."""
    fields = Fields()
    layouts = []
    for tlv in TlvType:
        parts = LAYOUTS[tlv]
        prefix = f"dmsc.{tlv.name.lower()}"
        entries = ", ".join(_part_lua(fields, prefix, p, len(parts) == 1) for p in parts)
        layouts.append(f"  [{hx(int(tlv), 4)}] = {{ {entries} }},")
    messages = []
    for mtype, cls in sorted(MESSAGE_CLASSES.items()):
        specs = ", ".join(f"[{hx(int(s.tlv), 4)}] = {lua_str(s.occurs.value)}" for s in cls.SPEC)
        names = ", ".join(f"[{hx(int(s.tlv), 4)}] = {lua_str(s.name)}" for s in cls.SPEC)
        messages.append(f"  [{hx(mtype)}] = {{ -- {MessageType(mtype).name}\n"
                        f"    occurs = {{ {specs} }},\n    names = {{ {names} }} }},")
    flag_fields = [fields.add(f"dmsc.flags.{str(flag.name).lower()}", "bool", str(flag.name),
                              "16", "nil", hex(int(flag))) for flag in Flags]
    experts = "\n".join(
        f"ef.{code.name} = ProtoExpert.new(\"dmsc.error.{code.name.lower()}\", "
        f"\"{code.name}\", expert.group.MALFORMED, expert.severity.ERROR)"
        for code in EXPERT_ERRORS)
    enums = {m.__name__: m for m in (MessageType, TlvType, ErrorCode, *MEANINGS.values())
             if not issubclass(m, IntFlag)}
    substitutions = {
        "@VERSION@": str(VERSION),
        "@HEADER_SIZE@": str(HEADER_SIZE),
        "@TLV_HEADER_SIZE@": str(TLV_HEADER_SIZE),
        "@MAX_PDU_SIZE@": str(MAX_PDU_SIZE),
        "@CRITICAL_BIT@": hex(CRITICAL_BIT),
        "@UDP_PORT@": str(UDP_PORT),
        "@ALPN@": lua_str(ALPN),
        "@VALUE_STRINGS@": "\n".join(f"vs.{name} = {value_string(enum)}"
                                     for name, enum in sorted(enums.items())),
        "@FIELDS@": "\n".join(fields.lines),
        "@FLAG_FIELDS@": "{ " + ", ".join(flag_fields) + " }",
        "@LAYOUTS@": "\n".join(layouts),
        "@MESSAGES@": "\n".join(messages),
        "@EXPERTS@": experts,
        "@SUCCESS@": hx(int(ErrorCode.SUCCESS), 4),
        "@STATUS@": hx(int(TlvType.STATUS), 4),
    }
    text = TEMPLATE.read_text()
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if tools/wireshark/dmsc.lua is not what the codec gives")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"stale: {OUTPUT.relative_to(ROOT)} (run tools/gen_wireshark.py)",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(OUTPUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
