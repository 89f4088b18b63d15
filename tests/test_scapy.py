"""The scapy layer (dmscproto.analysis.scapy_dmsc) against the codec: every example
message, every lab fixture datagram and every valid draft test vector dissects to the
field values dmscproto.codec.decode gives, and rebuilds to the same octets."""

from __future__ import annotations

import dataclasses
import importlib.util
import struct
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, UDP
from scapy.packet import Padding, Raw
from scapy.utils import rdpcap

from dmscproto.analysis.scapy_dmsc import (
    DMSC,
    MESSAGE_PACKETS,
    RESPONSES,
    TLV_CLASSES,
    DMSCTlv,
    dissect_stream,
)
from dmscproto.codec import (
    DecodeError,
    ErrorCode,
    Message,
    MessageType,
    RouteRequest,
    TlvType,
    decode,
    encode,
)
from dmscproto.codec.registry import HEADER_SIZE, UDP_PORT, Flags
from dmscproto.codec.values import DiscoveryQuery
from dmscproto.testing.examples import AGENT2_ID, AGENT_ID, GATEWAY_B_ID, TRACE, examples

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "pcap-fixtures"
DRAFT = ROOT / "drafts" / "draft-dmsc-protocol-00.md"
EXAMPLES = examples()


def norm(value: Any) -> Any:
    """Codec values and scapy's to_data() in one comparable shape (enums as ints,
    dataclasses as dicts, sequences as lists)."""
    if isinstance(value, Enum):
        return int(value.value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: norm(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [norm(v) for v in value]
    return value


def check_same(pkt: DMSC, msg: Message, data: bytes) -> None:
    """``pkt`` (scapy) shows what ``msg`` (the codec's decode of ``data``) holds."""
    assert pkt.version == 1
    assert pkt.type == msg.TYPE
    assert pkt.sprintf("%DMSC.type%") == msg.TYPE.name
    assert int(pkt.flags) == msg.flags
    assert pkt.length == len(data)
    assert pkt.txid == msg.transaction_id
    body = pkt.payload
    assert type(body) is MESSAGE_PACKETS[msg.TYPE]
    for spec in msg.SPEC:
        assert norm(body.value_of(spec.name)) == norm(getattr(msg, spec.name)), spec.name
    unknown = [(int(t.type), bytes(t.value)) for t in body.tlvs if type(t) is DMSCTlv]
    assert unknown == [(t.type, t.value) for t in msg.unknown_tlvs]
    for tlv in body.tlvs:
        if int(tlv.type) == TlvType.STATUS:  # an unregistered code shows as its number
            status = msg.status  # type: ignore[attr-defined]
            assert tlv.sprintf("%status%") == (status.name if status.registered
                                               else hex(status))
    assert raw(pkt) == data


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_dissects_like_the_codec(name: str) -> None:
    data = encode(EXAMPLES[name])
    check_same(DMSC(data), decode(data), data)


def _fixture_packets() -> list[tuple[str, int, bytes]]:
    out = []
    for path in sorted(FIXTURES.glob("lab-*.pcap")):
        for i, pkt in enumerate(rdpcap(str(path)), 1):
            out.append((path.name, i, raw(pkt)))
    return out


FIXTURE_PACKETS = _fixture_packets()


def test_fixtures_exist() -> None:
    assert len({name for name, _, _ in FIXTURE_PACKETS}) >= 10


@pytest.mark.parametrize(("name", "frame", "ip"), FIXTURE_PACKETS,
                         ids=[f"{n}#{i}" for n, i, _ in FIXTURE_PACKETS])
def test_fixture_packet_dissects_like_the_codec(name: str, frame: int, ip: bytes) -> None:
    pkt = IP(ip)
    assert UDP_PORT in (pkt[UDP].sport, pkt[UDP].dport)
    payload = bytes(pkt[UDP].payload)
    assert raw(pkt) == ip
    if len(payload) < HEADER_SIZE:  # too short for a header: left as Raw
        assert not pkt.haslayer(DMSC)
        return
    assert pkt.haslayer(DMSC)  # bound to the lab port, either direction
    try:
        msg = decode(payload)
    except DecodeError:
        return  # a deliberately damaged request (lab-errors.pcap): dissected, not checked
    check_same(pkt[DMSC], msg, payload)


def _draft_vectors() -> list[tuple[str, str, bytes]]:
    """The draft's Appendix A vectors, by its own extraction rule (tools/draft_vectors.py)."""
    if not DRAFT.exists():
        return []
    spec = importlib.util.spec_from_file_location("draft_vectors",
                                                  ROOT / "tools" / "draft_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: list[tuple[str, str, bytes]] = module.vectors(DRAFT.read_text(encoding="utf-8"))
    return found


DRAFT_VECTORS = _draft_vectors()
VALID_VECTORS = [(n, d) for n, e, d in DRAFT_VECTORS if e == "valid"]
INVALID_VECTORS = [(n, d) for n, e, d in DRAFT_VECTORS if e != "valid"]


@pytest.mark.parametrize(("name", "data"), VALID_VECTORS, ids=[n for n, _ in VALID_VECTORS])
def test_draft_vector_dissects_like_the_codec(name: str, data: bytes) -> None:
    check_same(DMSC(data), decode(data), data)


@pytest.mark.parametrize(("name", "data"), INVALID_VECTORS,
                         ids=[n for n, _ in INVALID_VECTORS])
def test_invalid_draft_vector_is_shown_as_is(name: str, data: bytes) -> None:
    """A malformed PDU still dissects and rebuilds to its octets; like scapy's own
    layers (IP), DMSC(data) refuses data too short for its fixed header."""
    if len(data) < HEADER_SIZE:
        with pytest.raises(struct.error):
            DMSC(data)
        return
    pkt = DMSC(data)
    assert raw(pkt) == data
    pkt.show(dump=True)


def test_request_and_response_pairs() -> None:
    """answers()/hashret() pair each response with its request (same txid and the
    matching type), ERROR with any request, and nothing else."""
    pairs = [("register", "register-ack"), ("refresh", "refresh-ack"),
             ("deregister", "deregister-ack"), ("discover", "discover-reply"),
             ("route-request", "route-reply"), ("echo-request", "echo-reply"),
             ("trace-request", "trace-reply"), ("open", "open"), ("sync-request", "update"),
             ("digest-request", "digest-entries"), ("certificate", "certificate-ack")]
    assert {EXAMPLES[q].TYPE for q, _ in pairs} == set(RESPONSES)
    for req_name, resp_name in pairs:
        req = DMSC(encode(EXAMPLES[req_name]))
        resp = DMSC(encode(dataclasses.replace(EXAMPLES[resp_name], transaction_id=req.txid)))
        assert resp.hashret() == req.hashret()
        assert resp.answers(req)
        assert req.answers(resp) == (req_name == resp_name)  # OPEN answers OPEN
        err = DMSC(encode(dataclasses.replace(EXAMPLES["error"],
                                              transaction_id=req.txid)))
        assert err.answers(req) and err.hashret() == req.hashret()
        other = DMSC(encode(dataclasses.replace(EXAMPLES[resp_name],
                                                transaction_id=req.txid + 1)))
        assert not other.answers(req) and other.hashret() != req.hashret()
    register, echo_reply = DMSC(encode(EXAMPLES["register"])), DMSC(encode(EXAMPLES["echo-reply"]))
    assert not DMSC(encode(dataclasses.replace(EXAMPLES["echo-reply"], transaction_id=1))
                    ).answers(register)
    assert not echo_reply.answers(echo_reply)
    keepalive = DMSC(encode(EXAMPLES["keepalive"]))
    assert not DMSC(encode(dataclasses.replace(EXAMPLES["error"], transaction_id=9))
                    ).answers(keepalive)  # peering messages are not requests


def test_fixture_responses_answer_their_requests() -> None:
    """In every lab capture, answers() pairs a packet only with one sent the other way
    with the same transaction id (earlier, except for the OPEN pair); every ACK and
    REPLY answers its request (a retransmitted request is answered once, and both copies
    match); requests answer nothing; the answering OPEN is matched (the recorded session
    has no loss, so no SYNC-REQUEST or DIGEST-REQUEST: test_request_and_response_pairs
    pairs those)."""
    acks = set(RESPONSES.values()) - set(RESPONSES) - {MessageType.UPDATE, MessageType.DIGEST}
    requests = set(RESPONSES) - set(RESPONSES.values())
    matched: set[tuple[int, int]] = set()
    for path in sorted(FIXTURES.glob("lab-*.pcap")):
        packets = [ip for ip in (IP(raw(p)) for p in rdpcap(str(path))) if ip.haslayer(DMSC)]
        for i, ip in enumerate(packets):
            dmsc = ip[DMSC]
            answered = [q for q in packets if ip.answers(q)]  # type: ignore[no-untyped-call]
            for q in answered:
                assert q[DMSC].txid == dmsc.txid
                # OPEN answers OPEN both ways; everything else answers only earlier packets,
                # or a later retransmission of a request it answered (recorded captures)
                assert packets.index(q) < i or dmsc.type == q[DMSC].type == MessageType.OPEN \
                    or (q[DMSC].flags & Flags.RETRANSMISSION and any(
                        p[DMSC].txid == q[DMSC].txid and p[DMSC].type == q[DMSC].type
                        for p in packets[:i]))
                assert (q[IP].src, q[UDP].sport) == (ip[IP].dst, ip[UDP].dport)
                matched.add((int(q[DMSC].type), int(dmsc.type)))
            if dmsc.type in acks:
                assert answered, (path.name, dmsc.summary())
            if dmsc.type in requests:
                assert not answered, (path.name, dmsc.summary())
    assert (MessageType.OPEN, MessageType.OPEN) in matched


def test_build_from_fields_matches_the_codec() -> None:
    """A message built field by field in scapy encodes like the codec's message."""
    query = DiscoveryQuery(skills=("forecast",))
    msg = RouteRequest(transaction_id=77, flags=Flags.RETRANSMISSION, source_agent=AGENT2_ID,
                       target_agent=AGENT_ID, query=query, hop_limit=7, path=(GATEWAY_B_ID,),
                       payload=b"hi", trace=TRACE)
    tlv = TLV_CLASSES
    pkt = DMSC(txid=77, flags="RETRANSMISSION") / MESSAGE_PACKETS[MessageType.ROUTE_REQUEST](tlvs=[
        tlv[TlvType.TRACE_CONTEXT](trace_context=TRACE),
        tlv[TlvType.QUERY](query=query),
        tlv[TlvType.SOURCE_AGENT](source_agent=AGENT2_ID),
        tlv[TlvType.TARGET_AGENT](target_agent=AGENT_ID),
        tlv[TlvType.HOP_LIMIT](hop_limit=7),
        tlv[TlvType.PATH_VECTOR](path_vector=[GATEWAY_B_ID]),
        tlv[TlvType.PAYLOAD](payload_value=b"hi"),
    ])
    assert raw(pkt) == encode(msg)
    udp = IP(raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=40000) / pkt))
    assert udp[UDP].dport == UDP_PORT
    assert udp[DMSC].payload.hop_limit == 7


def test_unknown_and_malformed_tlvs_fall_back_to_the_generic_view() -> None:
    data = encode(EXAMPLES["route-reply-with-extension"])
    pkt = DMSC(data)
    generic = pkt[DMSCTlv]
    assert type(generic) is DMSCTlv and not generic.critical
    assert "skippable" in generic.sprintf("%type%")
    # A LEASE of 3 octets (INVALID_TLV_LENGTH for the codec) stays visible, raw.
    lease = TLV_CLASSES[TlvType.LEASE](lease=1)
    bad = raw(lease)[:2] + b"\x00\x03" + raw(lease)[4:7]
    shown = DMSCTlv(bad + raw(lease))
    assert type(shown) is DMSCTlv and bytes(shown.value) == raw(lease)[4:7]
    assert type(shown.payload) is not Raw or not shown.payload  # next TLV is padding
    critical = DMSCTlv(b"\x80\x42\x00\x01\x01")
    assert critical.critical and "critical" in critical.sprintf("%type%")


def test_stream_payload_with_several_pdus() -> None:
    """QUIC stream payloads: PDUs back to back (Section 9.1)."""
    names = ["register", "echo-request", "route-reply-no-route"]
    stream = b"".join(encode(EXAMPLES[n]) for n in names)
    pdus = dissect_stream(stream)
    assert [MessageType(p.type) for p in pdus] == [EXAMPLES[n].TYPE for n in names]
    assert b"".join(raw(p) for p in pdus) == stream
    cut = dissect_stream(stream[:-5])  # the last PDU is still arriving
    assert [type(p) for p in cut] == [DMSC, DMSC, Raw] and b"".join(map(raw, cut)) == stream[:-5]
    first = DMSC(stream)  # DMSC(data) takes the first PDU, the rest is padding
    size = len(encode(EXAMPLES["register"]))
    assert first.length == size and first[Padding].load == stream[size:]


def test_cbor_values_shown_decoded() -> None:
    def shown(name: str) -> str:
        text = DMSC(encode(EXAMPLES[name])).show(dump=True)
        assert isinstance(text, str)
        return text

    discover = shown("discover")
    assert "DiscoveryQuery(skills=('forecast',)" in discover
    assert "TraceContext(traceparent='00-4bf92f" in discover
    record = shown("register")
    assert "COSE_Sign1(alg=EDDSA" in record and "agent_uri='dmsc://a.example/weather'" in record
    assert ErrorCode.NAME_CONFLICT.name in shown("register-ack-conflict")
