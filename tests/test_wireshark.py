"""The generated Wireshark dissector (tools/wireshark/dmsc.lua) against the codec: it is
up to date with the registry, and tshark with it decodes every fixture to the field
values dmscproto.codec gives (message type, transaction id, TLV types in order, the
message field each TLV carries, typed values, status names); malformed PDUs get the
expert info named after the codec's decoding error; the QUIC capture decrypts with
its key log; lab captures on any UDP port are found by the UDP heuristic, which leaves
near misses, DTLS, DNS and QUIC alone.  Skipped without tshark, except in CI (CI=true),
where it must exist."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from dmscproto.analysis.pcap import PcapWriter, read_udp
from dmscproto.codec import DecodeError, Message, SignedRecord, decode, encode
from dmscproto.codec import cbor as dcbor
from dmscproto.codec.layout import LAYOUTS, Part
from dmscproto.codec.messages import MESSAGE_CLASSES, REPEATED
from dmscproto.codec.registry import HEADER_SIZE, UDP_PORT, VERSION, TlvType
from dmscproto.codec.wire import VALUE_CODECS, Pdu
from dmscproto.testing.examples import examples

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "tools" / "wireshark" / "dmsc.lua"
FIXTURES = ROOT / "pcap-fixtures"
LAB = sorted(FIXTURES.glob("lab-*.pcap"))


@pytest.fixture(scope="module")
def tshark() -> str:
    return require_tool("tshark")


def test_generated_dissector_is_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_wireshark.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def pdml(tshark: str, pcap: Path, *options: str) -> list[ET.Element]:
    """The packets of ``pcap`` as tshark's PDML with the DMSC dissector loaded."""
    out = subprocess.run([tshark, "-n", "-X", f"lua_script:{LUA}", *options,
                          "-r", str(pcap), "-T", "pdml"],
                         capture_output=True, check=True, timeout=60).stdout
    return ET.fromstring(out).findall("packet")


def error_experts(packet: ET.Element) -> set[str]:
    return {f.get("name", "") for f in packet.iter("field")
            if f.get("name", "").startswith("dmsc.error.")}


def _children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [f for f in elem if f.get("name") == name]


def _one(elem: ET.Element, name: str) -> ET.Element:
    (found,) = _children(elem, name)
    return found


def _encoded(value: Any, tlv: TlvType, top: bool) -> bytes:
    if isinstance(value, SignedRecord):
        return value.encode()
    return VALUE_CODECS[tlv].build(value) if top else dcbor.dumps(value.to_cbor())


def expected_leaves(parts: tuple[Part, ...], value: Any, prefix: str, tlv: TlvType
                    ) -> list[tuple[str, Any]]:
    """(field name, value) of every leaf the dissector shows for a TLV value, from the
    codec's value, in tree order."""
    out: list[tuple[str, Any]] = []
    single = len(parts) == 1
    for part in parts:
        abbrev = prefix if single else f"{prefix}.{part.name}"
        v = value if single else (value[part.name] if isinstance(value, dict)
                                  else getattr(value, part.name))
        if part.kind == "uint":
            out.append((abbrev, int(v)))
        elif part.kind == "bytes":
            out.append((abbrev, bytes(v).hex()))
        elif part.kind == "text":
            out.append((abbrev, v))
        elif part.kind == "cbor":
            out.append((abbrev, _encoded(v, tlv, single and prefix.count(".") == 1).hex()))
        else:
            out.append((f"{abbrev}.count", len(v)))
            for item in v:
                if len(part.item) == 1:
                    out += expected_leaves(part.item, item, f"{abbrev}.item", tlv)
                else:
                    out += expected_leaves(part.item, item, abbrev, tlv)
    return out


def shown_leaves(tlv_elem: ET.Element, names: set[str], kinds: dict[str, str]
                 ) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in tlv_elem.iter("field"):
        name = f.get("name", "")
        if name not in names:
            continue
        raw = f.get("value", "")
        kind = kinds[name]
        if kind == "uint":
            out.append((name, int(raw, 16)))
        elif kind == "text":
            out.append((name, bytes.fromhex(raw).decode()))
        else:
            out.append((name, raw))
    return out


def _kinds(parts: tuple[Part, ...], prefix: str) -> dict[str, str]:
    kinds: dict[str, str] = {}
    single = len(parts) == 1
    for part in parts:
        abbrev = prefix if single else f"{prefix}.{part.name}"
        if part.kind == "list":
            kinds[f"{abbrev}.count"] = "uint"
            sub = f"{abbrev}.item" if len(part.item) == 1 else abbrev
            kinds.update(_kinds(part.item, sub))
        else:
            kinds[abbrev] = part.kind
    return kinds


def check_pdu(proto: ET.Element, msg: Message, data: bytes) -> None:
    """One DMSC tree of tshark's output shows what the codec decoded from ``data``."""
    mtype = _one(proto, "dmsc.type")
    assert int(mtype.get("value", ""), 16) == msg.TYPE
    assert msg.TYPE.name in mtype.get("showname", "")
    assert int(_one(proto, "dmsc.txid").get("show", "")) == msg.transaction_id
    assert int(_one(proto, "dmsc.flags").get("value", ""), 16) == msg.flags
    assert int(_one(proto, "dmsc.length").get("show", "")) == len(data)
    wire_tlvs = Pdu.parse(data).tlvs
    shown = _children(proto, "dmsc.tlv")
    assert [int(_one(t, "dmsc.tlv.type").get("value", ""), 16) for t in shown] == \
        [t.type for t in wire_tlvs]
    seen: dict[int, int] = {}
    for elem, wire in zip(shown, wire_tlvs, strict=True):
        spec = msg.BY_TLV.get(wire.type)
        if spec is None:  # unknown to this message: shown as its octets
            assert _one(elem, "dmsc.tlv.value").get("value", "") == bytes(wire.value).hex()
            continue
        assert _one(elem, "dmsc.field").get("show") == spec.name
        value = getattr(msg, spec.name)
        if spec.occurs is REPEATED:
            value = value[seen.get(wire.type, 0)]
            seen[wire.type] = seen.get(wire.type, 0) + 1
        tlv = TlvType(wire.type)
        prefix = f"dmsc.{tlv.name.lower()}"
        kinds = _kinds(LAYOUTS[tlv], prefix)
        expected = expected_leaves(LAYOUTS[tlv], value, prefix, tlv)
        assert expected  # every registered TLV value shows at least one typed field
        assert shown_leaves(elem, set(kinds), kinds) == expected, tlv.name
        if any(part.is_signed_record for part in LAYOUTS[tlv]):
            record = value if isinstance(value, SignedRecord) else value.record
            assert record.kid is not None
            fields = [(f.get("name"), f.get("value")) for f in elem.iter("field")]
            assert [v for n, v in fields if n == "dmsc.capability_record"] == \
                [record.payload.hex()]
            assert [v for n, v in fields if n == "cose.kid"] == [record.kid.hex()]
        if tlv is TlvType.STATUS:  # an unregistered code is shown, not refused
            name = value.name if value.registered else "Unknown"
            assert f"{name} (0x{int(value):04x})" in _one(elem, "dmsc.status").get(
                "showname", "")


@pytest.mark.parametrize("pcap", LAB, ids=[p.name for p in LAB])
def test_lab_fixture_decodes_like_the_codec(tshark: str, pcap: Path) -> None:
    datagrams = list(read_udp(pcap))
    packets = pdml(tshark, pcap)
    assert len(packets) == len(datagrams)
    for packet, dgram in zip(packets, datagrams, strict=True):
        protos = packet.findall("proto[@name='dmsc']")
        assert len(protos) == 1
        try:
            msg = decode(dgram.payload)
        except DecodeError as exc:
            assert error_experts(packet) == {f"dmsc.error.{exc.code.name.lower()}"}
            continue
        assert error_experts(packet) == set()
        check_pdu(protos[0], msg, dgram.payload)


def test_error_fixture_covers_the_decoding_errors(tshark: str) -> None:
    """lab-errors.pcap exercises every decoding error the dissector reports."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_wireshark
    finally:
        sys.path.pop(0)
    found: set[str] = set()
    for packet in pdml(tshark, FIXTURES / "lab-errors.pcap"):
        found |= error_experts(packet)
    assert found == {f"dmsc.error.{code.name.lower()}" for code in gen_wireshark.EXPERT_ERRORS}


def test_lab_capture_on_any_port_decodes_without_decode_as(tshark: str, tmp_path: Path
                                                            ) -> None:
    """Lab mode on ephemeral ports (Section 9.4) needs no ``-d udp.port==N,dmsc``: the UDP
    heuristic claims every example message, and then the whole conversation, so a later
    malformed PDU in it shows its decoding error."""
    msgs = list(examples().values())
    client, server = ("192.0.2.10", 45000), ("192.0.2.1", 45001)
    broken = encode(msgs[0])[:HEADER_SIZE + 10]
    with pytest.raises(DecodeError) as err:
        decode(broken)
    pcap = tmp_path / "ephemeral.pcap"
    with PcapWriter(pcap) as writer:
        for i, msg in enumerate(msgs):
            src, dst = (client, server) if i % 2 == 0 else (server, client)
            writer.write_udp(src, dst, encode(msg), i)
        writer.write_udp(client, server, broken, len(msgs))
    packets = pdml(tshark, pcap)
    assert len(packets) == len(msgs) + 1
    for packet, msg in zip(packets, msgs, strict=False):
        (proto,) = packet.findall("proto[@name='dmsc']")
        assert error_experts(packet) == set()
        check_pdu(proto, msg, encode(msg))
    assert packets[-1].findall("proto[@name='dmsc']")
    assert error_experts(packets[-1]) == {f"dmsc.error.{err.value.code.name.lower()}"}


def _near_misses() -> dict[str, bytes]:
    """UDP payloads on an unregistered port that the heuristic must leave alone."""
    good = bytearray(encode(examples()["register"]))
    unknown_type = next(t for t in range(256) if t not in MESSAGE_CLASSES)
    tlv_overrun = bytearray(good)
    tlv_overrun[HEADER_SIZE + 2:HEADER_SIZE + 4] = len(good).to_bytes(2, "big")
    two_octets = bytearray(good[:HEADER_SIZE] + b"\0\0")
    two_octets[4:8] = len(two_octets).to_bytes(4, "big")
    return {
        "trailing octet": bytes(good) + b"\0",
        "truncated": bytes(good[:-1]),
        "other version": bytes([VERSION + 1]) + bytes(good[1:]),
        "unknown message type": bytes(good[:1]) + bytes([unknown_type]) + bytes(good[2:]),
        "first TLV runs past the PDU": bytes(tlv_overrun),
        "TLV header cut short": bytes(two_octets),
        # DTLS 1.2 handshake record (content type 0x16), as a ClientHello starts.
        "DTLS": bytes.fromhex("16fefd000000000000000000310100"
                              "00250000000000000025fefd") + bytes(35),
        # DNS query whose id reads as version 1, REGISTER: the length field is qd/ancount.
        "DNS": bytes.fromhex("010101000001000000000000076578616d706c6503636f6d0000010001"),
        # QUIC short header (fixed bit 0x40) and a long-header Initial.
        "QUIC short": bytes([0x41]) + bytes(range(40)),
        "QUIC Initial": bytes.fromhex("c000000001") + bytes(40),
    }


def test_udp_heuristic_leaves_other_payloads_alone(tshark: str, tmp_path: Path) -> None:
    """Only a datagram holding exactly one well-framed DMSC PDU of a registered type is
    claimed; each near miss is on its own ports, so no DMSC conversation carries it."""
    cases = _near_misses()
    pcap = tmp_path / "others.pcap"
    with PcapWriter(pcap) as writer:
        for i, data in enumerate(cases.values()):
            writer.write_udp(("192.0.2.10", 46000 + 2 * i), ("192.0.2.1", 46001 + 2 * i),
                             data, i)
    packets = pdml(tshark, pcap)
    assert len(packets) == len(cases)
    claimed = [name for name, packet in zip(cases, packets, strict=True)
               if packet.findall("proto[@name='dmsc']")]
    assert claimed == []


DRAFT = ROOT / "drafts" / "draft-dmsc-protocol-00.md"


def _draft_vectors() -> list[tuple[str, str, bytes]]:
    """The draft's Appendix A vectors, by its own extraction rule (tools/draft_vectors.py)."""
    if not DRAFT.exists():
        return []
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import draft_vectors
    finally:
        sys.path.pop(0)
    found: list[tuple[str, str, bytes]] = draft_vectors.vectors(DRAFT.read_text("utf-8"))
    return found


def test_draft_vectors(tshark: str, tmp_path: Path) -> None:
    """Every Appendix A vector, one per datagram: valid ones decode to the codec's field
    values; for an invalid one the dissector reports the vector's error code if it
    reports any, and always does for the errors it checks (INVALID_TLV_VALUE only for
    registered codes and UTF-8: CBOR and COSE content is left to Wireshark's CBOR
    dissector)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_wireshark
    finally:
        sys.path.pop(0)
    vectors = _draft_vectors()
    pcap = tmp_path / "vectors.pcap"
    with PcapWriter(pcap) as writer:
        for i, (_, _, data) in enumerate(vectors):
            writer.write_udp(("192.0.2.10", 40001), ("192.0.2.1", UDP_PORT), data, i)
    packets = pdml(tshark, pcap)
    assert len(packets) == len(vectors)
    structural = {c.name for c in gen_wireshark.EXPERT_ERRORS} - {"INVALID_TLV_VALUE"}
    for packet, (name, expect, data) in zip(packets, vectors, strict=True):
        errors = error_experts(packet)
        if expect == "valid":
            assert errors == set(), name
            (proto,) = packet.findall("proto[@name='dmsc']")
            check_pdu(proto, decode(data), data)
        elif expect in structural:
            assert errors == {f"dmsc.error.{expect.lower()}"}, name
        else:
            assert errors <= {f"dmsc.error.{expect.lower()}"}, name


QUIC = FIXTURES / "quic-session.pcap"
KEYLOG = FIXTURES / "quic-session.keylog"


def test_quic_fixture_decrypts_with_its_key_log(tshark: str) -> None:
    """The QUIC capture shows its DMSC messages only with the key log (Section 9.1)."""
    ex = examples()
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_fixtures
    finally:
        sys.path.pop(0)
    large = gen_fixtures.quic_discover_reply()
    expected = [ex["register"], ex["register-ack"], ex["echo-request"], ex["echo-reply"],
                ex["discover"], large]
    packets = pdml(tshark, QUIC, "-o", f"tls.keylog_file:{KEYLOG}")
    trees = [p for packet in packets for p in packet.findall("proto[@name='dmsc']")]
    protos = [p for p in trees if _children(p, "dmsc.type")]
    assert [int(_one(p, "dmsc.type").get("value", ""), 16) for p in protos] == \
        [m.TYPE for m in expected]
    parts = [p for p in trees if not _children(p, "dmsc.type")]
    assert parts and all("completed in a later frame" in p.get("showname", "") for p in parts)
    for proto, msg in zip(protos, expected, strict=True):
        check_pdu(proto, msg, encode(msg))
    assert not any(error_experts(p) for p in packets)
    # The large answer spans QUIC packets; it is shown whole, in the packet that ends it.
    (last,) = [p for p in packets for t in p.iter("field")
               if t.get("name") == "dmsc.type" and int(t.get("value", ""), 16) == large.TYPE]
    frame_len = int(next(f for f in last.iter("field") if f.get("name") == "frame.len")
                    .get("show", ""))
    assert frame_len < len(encode(large)) == int(protos[-1].get("size", ""))
    alpn = {f.get("show") for packet in packets for f in packet.iter("field")
            if f.get("name") == "tls.handshake.extensions_alpn_str"}
    assert alpn == {"dmsc/1"}
    encrypted = pdml(tshark, QUIC)
    assert not [p for packet in encrypted for p in packet.findall("proto[@name='dmsc']")]
