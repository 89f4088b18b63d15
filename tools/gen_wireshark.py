#!/usr/bin/env python3
"""Generate ``tools/wireshark/dmsc.lua``, the Wireshark/tshark dissector for DMSC, from
the codec (draft-dmsc-protocol-00, Sections 4-7, 9, 11).

Every number in the dissector comes from :mod:`dmscproto.codec.registry` (message
types, TLV types, flags, error codes, enumerations, sizes, port, ALPN), the per-message
TLV tables from the message classes (:mod:`dmscproto.codec.messages`), and the value
layouts from the codec's ``construct`` formats through
:func:`dmscproto.codec.layout.tlv_layout` (the scapy layer uses the same ones).

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
    text = TEMPLATE
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


TEMPLATE = r"""-- dmsc.lua: Wireshark/tshark dissector for DMSC (draft-dmsc-protocol-00).
-- GENERATED by tools/gen_wireshark.py from dmscproto.codec (registry, message classes,
-- value formats).  Do not edit: change the codec and run tools/gen_wireshark.py.
--
--   tshark -X lua_script:tools/wireshark/dmsc.lua -r capture.pcap
--   tshark -X lua_script:tools/wireshark/dmsc.lua -o tls.keylog_file:KEYLOG -r quic.pcap
--
-- Registered on UDP port @UDP_PORT@ (lab mode, Section 9.4), for ALPN @ALPN@ in the QUIC
-- and DTLS ALPN tables (Sections 9.1, 9.2), on DTLS port @UDP_PORT@, and as a heuristic
-- on QUIC stream payloads where Wireshark has that list.  On a stream (QUIC) PDUs are
-- joined across STREAM frames by the length in their header; on datagrams one PDU
-- fills a datagram.
-- Malformed PDUs get expert info named after the decoding error code (Section 4.4) the
-- codec reports for them.

local dmsc = Proto("dmsc", "DMSC")

local VERSION = @VERSION@
local HEADER_SIZE = @HEADER_SIZE@
local TLV_HEADER_SIZE = @TLV_HEADER_SIZE@
local MAX_PDU_SIZE = @MAX_PDU_SIZE@
local CRITICAL_BIT = @CRITICAL_BIT@
local UDP_PORT = @UDP_PORT@
local ALPN = @ALPN@
local SUCCESS = @SUCCESS@
local STATUS_TLV = @STATUS@

-- Registries (Section 11) --------------------------------------------------------------
local vs = {}
@VALUE_STRINGS@

-- Fields -------------------------------------------------------------------------------
local f = {}
f["dmsc.version"] = ProtoField.uint8("dmsc.version", "Version", base.DEC)
f["dmsc.type"] = ProtoField.uint8("dmsc.type", "Message type", base.HEX, vs.MessageType)
f["dmsc.flags"] = ProtoField.uint16("dmsc.flags", "Flags", base.HEX)
f["dmsc.length"] = ProtoField.uint32("dmsc.length", "Length", base.DEC)
f["dmsc.txid"] = ProtoField.uint64("dmsc.txid", "Transaction id", base.DEC)
f["dmsc.tlv"] = ProtoField.none("dmsc.tlv", "TLV")
f["dmsc.tlv.type"] = ProtoField.uint16("dmsc.tlv.type", "Type", base.HEX, vs.TlvType)
f["dmsc.tlv.critical"] = ProtoField.bool("dmsc.tlv.critical", "Critical", 16,
    { "must be understood", "may be skipped" }, CRITICAL_BIT)
f["dmsc.tlv.length"] = ProtoField.uint16("dmsc.tlv.length", "Length", base.DEC)
f["dmsc.tlv.value"] = ProtoField.bytes("dmsc.tlv.value", "Value")
f["dmsc.field"] = ProtoField.string("dmsc.field", "Message field")
f["dmsc.capability_record"] = ProtoField.bytes("dmsc.capability_record",
    "Capability record (COSE payload)")
@FIELDS@
local FLAG_FIELDS = @FLAG_FIELDS@

local field_list = {}
for _, field in pairs(f) do field_list[#field_list + 1] = field end
dmsc.fields = field_list

-- Expert info: one per decoding error code (Section 4.4) ------------------------------
local ef = {}
@EXPERTS@
ef.unknown_tlv = ProtoExpert.new("dmsc.unknown_tlv", "Unknown non-critical TLV skipped",
    expert.group.UNDECODED, expert.severity.NOTE)
ef.status = ProtoExpert.new("dmsc.status.error", "Error status",
    expert.group.RESPONSE_CODE, expert.severity.NOTE)
local expert_list = {}
for _, e in pairs(ef) do expert_list[#expert_list + 1] = e end
dmsc.experts = expert_list

-- Value layouts by TLV type (Sections 5-7), from the codec's construct formats --------
local layouts = {
@LAYOUTS@
}

-- Message types: TLV occurrence ("1", "0..1", "0..n") and field names (Sections 5, 6)
local messages = {
@MESSAGES@
}

local cbor = Dissector.get("cbor")
local cose, cose_payload = nil, nil
pcall(function()
  cose = Dissector.get("cose_sign1")
  cose_payload = Field.new("cose.msg.payload")
end)

-- A COSE_Sign1 capability record (Section 7.2.1): Wireshark's COSE dissector shows the
-- envelope (alg, kid, signature), the CBOR dissector the record in its payload.
local function add_signed_record(range, pinfo, item)
  pcall(function() cose:call(range:tvb(), pinfo, item) end)
  local payloads = { cose_payload() }
  local payload = payloads[#payloads]
  if payload ~= nil and payload.len > 0 then
    local rt = item:add(f["dmsc.capability_record"], payload.range)
    if cbor ~= nil then pcall(function() cbor:call(payload.range:tvb(), pinfo, rt) end) end
  end
end

-- Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2
      or (c >= 0xE0 and c <= 0xEF) and 3 or (c >= 0xF0 and c <= 0xF4) and 4 or nil
    if len == nil or i + len - 1 > n then return false end
    for j = i + 1, i + len - 1 do
      local b = s:byte(j)
      if b < 0x80 or b > 0xBF then return false end
    end
    local c2 = s:byte(i + 1)
    if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F)
        or (c == 0xF0 and c2 < 0x90) or (c == 0xF4 and c2 > 0x8F) then
      return false
    end
    i = i + len
  end
  return true
end

-- Decoding errors found in the current PDU: after the first, checks that would only
-- repeat it (MISSING_TLV after a broken TLV list) are skipped.
local pdu_errors = 0

local function expert_at(tree, range, code, text)
  pdu_errors = pdu_errors + 1
  if range ~= nil then
    tree:add_tvb_expert_info(ef[code], range, code .. ": " .. text)
  else
    tree:add_proto_expert_info(ef[code], code .. ": " .. text)
  end
end

-- Adds the parts of a value in [offset, stop); returns the end offset, or nil and why.
local function add_parts(parts, tvb, offset, stop, tree, pinfo)
  local brief = nil
  for _, p in ipairs(parts) do
    if p.kind == "list" then
      if offset + p.count_size > stop then return nil, "list count runs past the value" end
      local count = tvb(offset, p.count_size):uint()
      local size = p.count_size + count * p.item_size
      if offset + size > stop then return nil, "list of " .. count .. " runs past the value" end
      local lt = tree:add(p.field, tvb(offset, size))
      lt:append_text(": " .. count .. (count == 1 and " item" or " items"))
      lt:add(p.count_field, tvb(offset, p.count_size))
      offset = offset + p.count_size
      for _ = 1, count do
        if p.entry_field ~= nil then
          local et = lt:add(p.entry_field, tvb(offset, p.item_size))
          add_parts(p.item, tvb, offset, offset + p.item_size, et, pinfo)
        else
          lt:add(p.item[1].field, tvb(offset, p.item_size))
        end
        offset = offset + p.item_size
      end
      brief = count .. " items"
    elseif p.size ~= nil then
      if offset + p.size > stop then return nil, "value shorter than " .. p.size .. " octets" end
      local range = tvb(offset, p.size)
      local item = tree:add(p.field, range)
      if p.kind == "uint" then
        local value = p.size == 8 and range:uint64() or range:uint()
        brief = tostring(value)
        if p.flags ~= nil then
          for _, bit in ipairs(p.flags) do item:add(bit, range) end
        end
      else
        brief = range:bytes():tohex(true)
      end
      offset = offset + p.size
    else
      local n = stop - offset
      if n == 0 then
        brief = "(empty)"
      else
        local range = tvb(offset, n)
        if p.kind == "text" then
          local item = tree:add_packet_field(p.field, range, ENC_UTF_8)
          brief = '"' .. range:string(ENC_UTF_8) .. '"'
          if not valid_utf8(range:raw()) then
            expert_at(item, range, "INVALID_TLV_VALUE", "invalid UTF-8")
          end
        else
          local item = tree:add(p.field, range)
          brief = n .. " octets"
          if p.cose and cose ~= nil then
            add_signed_record(range, pinfo, item)
          elseif p.kind == "cbor" and cbor ~= nil then
            pcall(function() cbor:call(range:tvb(), pinfo, item) end)
          end
        end
      end
      offset = stop
    end
  end
  if offset ~= stop then return nil, (stop - offset) .. " octets after the value" end
  return offset, (#parts == 1) and brief or nil
end

local function dissect_tlv(tvb, pinfo, tree, offset, stop, mtype, state)
  local ttype = tvb(offset, 2):uint()
  local tlen = tvb(offset + 2, 2):uint()
  local critical = bit32.band(ttype, CRITICAL_BIT) ~= 0
  local name = vs.TlvType[ttype] or string.format("0x%04x", ttype)
  local avail = math.min(TLV_HEADER_SIZE + tlen, stop - offset)
  local t = tree:add(f["dmsc.tlv"], tvb(offset, avail))
  t:set_text(name)
  t:add(f["dmsc.tlv.type"], tvb(offset, 2))
  t:add(f["dmsc.tlv.critical"], tvb(offset, 2))
  local len_item = t:add(f["dmsc.tlv.length"], tvb(offset + 2, 2))
  if offset + TLV_HEADER_SIZE + tlen > stop then
    if not state.truncated then
      expert_at(len_item, tvb(offset + 2, 2), "LENGTH_MISMATCH",
                "TLV length " .. tlen .. " runs past the end of the PDU")
    end
    return stop
  end
  local vstart = offset + TLV_HEADER_SIZE
  local vstop = vstart + tlen
  if ttype < state.last then
    expert_at(t, tvb(offset, 2), "TLV_ORDER",
              string.format("TLV 0x%04x after 0x%04x", ttype, state.last))
  end
  local spec = messages[mtype]
  local occurs = spec and spec.occurs[ttype]
  if spec ~= nil and occurs == nil then
    if critical then
      expert_at(t, tvb(offset, 2), "UNKNOWN_CRITICAL_TLV",
                "critical TLV " .. name .. " not understood in " .. vs.MessageType[mtype])
    else
      t:add_proto_expert_info(ef.unknown_tlv, "TLV " .. name .. " skipped")
    end
  end
  if ttype == state.last and occurs ~= nil and occurs ~= "0..n" then
    expert_at(t, tvb(offset, 2), "DUPLICATE_TLV", name .. " repeated")
  end
  if occurs ~= nil then
    state.seen[ttype] = true
    t:prepend_text(spec.names[ttype] .. " ")
    t:add(f["dmsc.field"], spec.names[ttype]):set_generated()
  end
  state.last = ttype
  local layout = layouts[ttype]
  if layout == nil then
    if tlen > 0 then t:add(f["dmsc.tlv.value"], tvb(vstart, tlen)) end
    t:append_text(", " .. tlen .. " octets")
    return vstop
  end
  local done, brief = add_parts(layout, tvb, vstart, vstop, t, pinfo)
  if done == nil then
    if tlen > 0 then t:add(f["dmsc.tlv.value"], tvb(vstart, tlen)) end
    expert_at(t, tvb(offset, TLV_HEADER_SIZE + tlen), "INVALID_TLV_LENGTH", brief)
    return vstop
  end
  local first = layout[1]
  if #layout == 1 and first.kind == "uint" and first.strict ~= nil then
    local value = tvb(vstart, first.size):uint()
    local meaning = first.strict[value]
    if meaning == nil and first.open then
      meaning = string.format("unregistered 0x%04x", value)
    end
    if meaning == nil then
      expert_at(t, tvb(vstart, first.size), "INVALID_TLV_VALUE",
                string.format("unregistered value 0x%04x", value))
    else
      brief = meaning
      if ttype == STATUS_TLV then
        state.status = meaning
        if value ~= SUCCESS then
          t:add_proto_expert_info(ef.status, "status " .. meaning)
        end
      end
    end
  end
  if brief ~= nil then t:append_text(": " .. brief) end
  return vstop
end

-- Dissects the PDU at offset whose header says `length`, of which `size` octets exist.
local function dissect_pdu(tvb, pinfo, tree, offset, size, datagram)
  local range = tvb(offset, size)
  local pt = tree:add(dmsc, range)
  pdu_errors = 0
  if size < HEADER_SIZE then
    expert_at(pt, range, "TRUNCATED", size .. " octets, header needs " .. HEADER_SIZE)
    return "truncated PDU"
  end
  local version = tvb(offset, 1):uint()
  local mtype = tvb(offset + 1, 1):uint()
  local length = tvb(offset + 4, 4):uint()
  local txid = tvb(offset + 8, 8):uint64()
  local vitem = pt:add(f["dmsc.version"], tvb(offset, 1))
  local titem = pt:add(f["dmsc.type"], tvb(offset + 1, 1))
  local flags = pt:add(f["dmsc.flags"], tvb(offset + 2, 2))
  for _, bit in ipairs(FLAG_FIELDS) do flags:add(bit, tvb(offset + 2, 2)) end
  local litem = pt:add(f["dmsc.length"], tvb(offset + 4, 4))
  pt:add(f["dmsc.txid"], tvb(offset + 8, 8))
  local tname = vs.MessageType[mtype] or string.format("type 0x%02x", mtype)
  pt:append_text(", " .. tname .. ", txid " .. tostring(txid))
  local summary = tname .. " txid=" .. tostring(txid)
  if version ~= VERSION then
    expert_at(vitem, tvb(offset, 1), "UNSUPPORTED_VERSION", "version " .. version)
    return summary
  end
  if messages[mtype] == nil then
    expert_at(titem, tvb(offset + 1, 1), "UNKNOWN_MESSAGE_TYPE",
              string.format("message type 0x%02x", mtype))
  end
  if length > MAX_PDU_SIZE then
    expert_at(litem, tvb(offset + 4, 4), "PDU_TOO_LARGE", "PDU length " .. length)
    return summary
  end
  if length < HEADER_SIZE then
    expert_at(litem, tvb(offset + 4, 4), "LENGTH_MISMATCH",
              "PDU length " .. length .. " < header size")
    return summary
  end
  local stop = offset + math.min(length, size)
  if size < length then
    expert_at(litem, tvb(offset + 4, 4), "TRUNCATED",
              size .. " octets, header says " .. length)
  elseif datagram and size > length then
    expert_at(pt, tvb(offset + length, size - length), "TRAILING_DATA",
              (size - length) .. " octets after the PDU")
  end
  local state = { last = -1, seen = {}, status = nil, truncated = size < length }
  local pos = offset + HEADER_SIZE
  while pos < stop do
    if stop - pos < TLV_HEADER_SIZE then
      if state.truncated then break end
      expert_at(pt, tvb(pos, stop - pos), "LENGTH_MISMATCH",
                "TLV header runs past the end of the PDU")
      break
    end
    pos = dissect_tlv(tvb, pinfo, pt, pos, stop, mtype, state)
  end
  local spec = messages[mtype]
  if spec ~= nil and pdu_errors == 0 then
    for ttype, occurs in pairs(spec.occurs) do
      if occurs == "1" and not state.seen[ttype] then
        expert_at(pt, nil, "MISSING_TLV", tname .. " lacks " .. vs.TlvType[ttype])
      end
    end
  end
  if state.status ~= nil then summary = summary .. " " .. state.status end
  return summary
end

-- Streams (Section 9.1) ------------------------------------------------------------------
-- On QUIC the dissector joins PDUs that span STREAM frames itself, per connection
-- direction and stream id (read from the QUIC dissector's fields): Wireshark 4.0 does
-- not hand a STREAM continuation back after desegment_len.  Other streams use
-- desegment_len, as over TCP.
local quic_fields = nil
pcall(function()
  quic_fields = { id = Field.new("quic.stream.stream_id"),
                  has_offset = Field.new("quic.stream.off"),
                  offset = Field.new("quic.stream.offset") }
end)
local stream_state = {}   -- first pass: stream key -> { next = stream offset, pending = ByteArray }
local stream_frames = {}  -- frame/stream/offset -> { own = n } or { joined = ByteArray }, and rest

function dmsc.init()
  stream_state = {}
  stream_frames = {}
end

local function last_value(field)
  local all = { field() }
  local fi = all[#all]
  return fi and fi.value
end

-- The QUIC stream key and offset of the STREAM frame being dissected, or nil.
local function quic_segment(pinfo)
  if quic_fields == nil then return nil end
  local id = last_value(quic_fields.id)
  if id == nil then return nil end
  local offset = 0
  if last_value(quic_fields.has_offset) then
    offset = tonumber(tostring(last_value(quic_fields.offset)))
  end
  return string.format("%s:%d>%s:%d/%s", tostring(pinfo.src), pinfo.src_port,
                       tostring(pinfo.dst), pinfo.dst_port, tostring(id)), offset
end

local function u32(bytes, i)
  return ((bytes:get_index(i) * 256 + bytes:get_index(i + 1)) * 256
          + bytes:get_index(i + 2)) * 256 + bytes:get_index(i + 3)
end

-- Octets of `bytes` that hold whole PDUs (a header that must be refused takes the rest).
local function complete_prefix(bytes)
  local offset, n = 0, bytes:len()
  while n - offset >= 8 do
    local length = u32(bytes, offset + 4)
    if length < HEADER_SIZE or length > MAX_PDU_SIZE then return n end
    if offset + length > n then break end
    offset = offset + length
  end
  return offset
end

local function tail(bytes, from)
  if from >= bytes:len() then return ByteArray.new() end
  return bytes:subset(from, bytes:len() - from)
end

local function dissect_pdus(tvb, pinfo, tree, stop, summaries)
  local offset = 0
  while offset < stop do
    local length = tvb(offset + 4, 4):uint()
    local size = (length >= HEADER_SIZE and length <= MAX_PDU_SIZE) and length or stop - offset
    summaries[#summaries + 1] = dissect_pdu(tvb, pinfo, tree, offset, size, false)
    offset = offset + size
  end
end

local function dissect_quic_segment(tvb, pinfo, tree, key, offset, summaries)
  local id = pinfo.number .. "/" .. key .. "/" .. offset
  if not pinfo.visited then
    local st = stream_state[key]
    local bytes = tvb():bytes()
    local result
    if st ~= nil and st.next == offset and st.pending:len() > 0 then
      local joined = st.pending .. bytes
      local n = complete_prefix(joined)
      result = { joined = n > 0 and joined:subset(0, n) or nil, rest = joined:len() - n }
      stream_state[key] = { next = offset + bytes:len(), pending = tail(joined, n) }
    elseif bytes:get_index(0) ~= VERSION then  -- the rest of a PDU whose start is not here
      result = { own = 0, rest = 0, orphan = true }
      stream_state[key] = { next = offset + bytes:len(), pending = ByteArray.new() }
    else
      local n = complete_prefix(bytes)
      result = { own = n, rest = bytes:len() - n }
      stream_state[key] = { next = offset + bytes:len(), pending = tail(bytes, n) }
    end
    stream_frames[id] = result
  end
  local r = stream_frames[id]
  if r == nil then return end
  if r.joined ~= nil then
    local joined = r.joined:tvb("Reassembled DMSC")
    dissect_pdus(joined, pinfo, tree, joined:len(), summaries)
  elseif r.own ~= nil and r.own > 0 then
    dissect_pdus(tvb, pinfo, tree, r.own, summaries)
  end
  if r.orphan then
    tree:add(dmsc, tvb(), "DMSC: continuation of a PDU whose start is not in the capture")
  elseif r.rest > 0 then
    local here = math.min(r.rest, tvb:len())
    tree:add(dmsc, tvb(tvb:len() - here), "DMSC: part of a PDU completed in a later frame")
    summaries[#summaries + 1] = "[PDU continues]"
  end
end

-- Entry point: a datagram (one PDU, Section 9.4) or a stream segment (Section 9.1).
function dmsc.dissector(tvb, pinfo, tree)
  local total = tvb:len()
  if total == 0 then return 0 end
  local summaries = {}
  if pinfo.can_desegment > 0 then
    local key, offset = quic_segment(pinfo)
    if key ~= nil then
      dissect_quic_segment(tvb, pinfo, tree, key, offset, summaries)
    else
      local n = complete_prefix(tvb():bytes())
      if n < total then
        pinfo.desegment_offset = n
        pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
      end
      dissect_pdus(tvb, pinfo, tree, n, summaries)
    end
  else
    -- Not DMSC (QUIC sets bit 0x40, DTLS records start at 20): let other dissectors try.
    if tvb(0, 1):uint() >= 16 then return 0 end
    summaries[1] = dissect_pdu(tvb, pinfo, tree, 0, total, true)
  end
  pinfo.cols.protocol = "DMSC"
  if #summaries > 0 then pinfo.cols.info = table.concat(summaries, ", ") end
  return total
end

-- Heuristics, for payloads that no table entry sends here.
-- The header (Section 4.1) of a registered message type: its PDU length, or nil.
local function header_length(tvb)
  if tvb:len() < HEADER_SIZE then return nil end
  if tvb(0, 1):uint() ~= VERSION or messages[tvb(1, 1):uint()] == nil then return nil end
  local length = tvb(4, 4):uint()
  if length < HEADER_SIZE or length > MAX_PDU_SIZE then return nil end
  return length
end

-- QUIC stream payloads (Section 9.1): a PDU may span STREAM frames.
local function quic_heuristic(tvb, pinfo, tree)
  if header_length(tvb) == nil then return false end
  dmsc.dissector(tvb, pinfo, tree)
  return true
end

-- Lab-mode datagrams on any UDP port (Section 9.4), claimed only when one PDU fills the
-- datagram exactly and its first TLV (Section 4.2), if any, is framed within it.  QUIC
-- (first octet has bit 0x40), DTLS (content types 20-25, unified header 0x20-0x3f) and
-- DNS (no length field) do not pass.  The conversation is then DMSC, so its later
-- malformed PDUs are shown with their decoding errors.
local function udp_heuristic(tvb, pinfo, tree)
  local length = header_length(tvb)
  if length == nil or length ~= tvb:reported_length_remaining() then return false end
  if length > HEADER_SIZE then
    if length < HEADER_SIZE + TLV_HEADER_SIZE or tvb:len() < HEADER_SIZE + TLV_HEADER_SIZE then
      return false
    end
    if HEADER_SIZE + TLV_HEADER_SIZE + tvb(HEADER_SIZE + 2, 2):uint() > length then
      return false
    end
  end
  pinfo.conversation = dmsc
  dmsc.dissector(tvb, pinfo, tree)
  return true
end

DissectorTable.get("udp.port"):add(UDP_PORT, dmsc)
for _, name in ipairs({ "quic.proto", "dtls.alpn", "tls.alpn" }) do
  pcall(function() DissectorTable.get(name):add(ALPN, dmsc) end)
end
pcall(function() DissectorTable.get("dtls.port"):add(UDP_PORT, dmsc) end)
dmsc:register_heuristic("udp", udp_heuristic)
pcall(function() dmsc:register_heuristic("quic", quic_heuristic) end)
"""


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
