"""pcap-fixtures/: the lab UDP captures and README are exactly what tools/gen_fixtures.py
generates, every datagram is the PDU (or the deliberately damaged PDU) it claims to be,
and together the captures cover every message type and flow."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dmscproto.analysis.pcap import read_udp
from dmscproto.codec import DecodeError, MessageType, decode
from dmscproto.codec.registry import UDP_PORT

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "pcap-fixtures"


@pytest.fixture(scope="module")
def gen() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_fixtures
        yield gen_fixtures
    finally:
        sys.path.remove(str(ROOT / "tools"))


def test_regeneration_gives_identical_files(gen: ModuleType) -> None:
    assert gen.check() == []


def test_datagrams_are_what_the_generator_says(gen: ModuleType) -> None:
    for capture in gen.lab_captures():
        packets = list(read_udp(FIXTURES / capture.name))
        assert [(p.src, p.dst, p.payload) for p in packets] == \
            [(d.src, d.dst, d.pdu) for d in capture.datagrams]
        for packet, dgram in zip(packets, capture.datagrams, strict=True):
            assert UDP_PORT in (packet.src[1], packet.dst[1])
            if dgram.error is None:
                decode(packet.payload)
            else:
                with pytest.raises(DecodeError) as info:
                    decode(packet.payload)
                assert info.value.code is dgram.error


def test_captures_cover_every_message_type_and_flow(gen: ModuleType) -> None:
    seen: dict[str, set[MessageType]] = {}
    for capture in gen.lab_captures():
        types = set()
        for dgram in capture.datagrams:
            if dgram.error is None:
                types.add(decode(dgram.pdu).TYPE)
        seen[capture.name] = types
    assert set().union(*seen.values()) == set(MessageType)
    flows = {
        "lab-registration.pcap": {MessageType.REGISTER, MessageType.REGISTER_ACK},
        "lab-refresh.pcap": {MessageType.REFRESH, MessageType.REFRESH_ACK},
        "lab-deregistration.pcap": {MessageType.DEREGISTER, MessageType.DEREGISTER_ACK},
        "lab-discovery-local.pcap": {MessageType.DISCOVER, MessageType.DISCOVER_REPLY},
        "lab-discovery-federated.pcap": {MessageType.DISCOVER, MessageType.DISCOVER_REPLY},
        "lab-route-local.pcap": {MessageType.ROUTE_REQUEST, MessageType.ROUTE_REPLY},
        "lab-route-cross-domain.pcap": {MessageType.ROUTE_REQUEST, MessageType.ROUTE_REPLY},
        "lab-route-errors.pcap": {MessageType.ROUTE_REQUEST, MessageType.ROUTE_REPLY},
        "lab-peering.pcap": {MessageType.OPEN, MessageType.KEEPALIVE, MessageType.UPDATE,
                             MessageType.DIGEST, MessageType.SYNC_REQUEST, MessageType.NOTIFY},
        "lab-echo-trace.pcap": {MessageType.ECHO_REQUEST, MessageType.ECHO_REPLY,
                                MessageType.TRACE_REQUEST, MessageType.TRACE_REPLY},
        "lab-errors.pcap": {MessageType.ERROR},
    }
    for name, types in flows.items():
        assert types <= seen[name], name
    assert set(seen) == set(flows)


def test_readme_lists_every_capture(gen: ModuleType) -> None:
    text = (FIXTURES / "README.md").read_text()
    assert "synthesized from the codec, not recorded from a" in text
    listed = set(re.findall(r"^### `([^`]+\.pcap)`", text, re.M))
    on_disk = {p.name for p in FIXTURES.glob("*.pcap")}
    assert listed == on_disk
    assert "tshark -X lua_script:tools/wireshark/dmsc.lua -r pcap-fixtures/" in text


def test_quic_capture_has_its_key_log() -> None:
    lines = (FIXTURES / "quic-session.keylog").read_text().splitlines()
    labels = {line.split()[0] for line in lines}
    assert labels == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                      "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    packets = list(read_udp(FIXTURES / "quic-session.pcap"))
    assert packets and packets[0].payload[0] & 0xC0 == 0xC0  # QUIC long header first
    assert all(p.payload[0] & 0x40 for p in packets)  # QUIC fixed bit: no cleartext DMSC


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("lab-*.pcap")))
def test_dmsc_decode_lists_every_datagram(name: str, gen: ModuleType,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``dmsc decode --pcap`` shows each datagram as the message or decoding error the
    codec gives for it."""
    from dmscproto.cli import main
    (capture,) = [c for c in gen.lab_captures() if c.name == name]
    status = main(["decode", "--pcap", str(FIXTURES / name), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == (1 if any(d.error for d in capture.datagrams) else 0)
    assert len(lines) == len(capture.datagrams)
    for line, dgram in zip(lines, capture.datagrams, strict=True):
        if dgram.error is None:
            msg = decode(dgram.pdu)
            header = line["message"]["header"]
            assert (header["type"], header["transaction_id"]) == \
                (msg.TYPE.name, msg.transaction_id)
        else:
            assert line["error"]["error"] == dgram.error.name
