"""pcap-fixtures/: the lab UDP captures recorded from real lab-mode gateways
(tools/gen_fixtures.py --record) follow the draft's rules, cover every message type and
flow, and the README describes exactly what they hold."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from dmscproto.analysis.pcap import read_udp
from dmscproto.codec import (
    DecodeError,
    DiscoverReply,
    Error,
    ErrorCode,
    Message,
    MessageType,
    Open,
    RouteReply,
    RouteRequest,
    decode,
    encode,
)
from dmscproto.codec.messages import MESSAGE_CLASSES
from dmscproto.codec.registry import ANSWER_TO, HEADER_SIZE, UDP_PORT, Flags, TlvType
from dmscproto.codec.wire import HEADER_STRUCT

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "pcap-fixtures"
LAB = sorted(FIXTURES.glob("lab-*.pcap"))


@pytest.fixture(scope="module")
def gen() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_fixtures
        yield gen_fixtures
    finally:
        sys.path.remove(str(ROOT / "tools"))


@dataclass(frozen=True)
class Datagram:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    msg: Message | None
    error: DecodeError | None


def datagrams(path: Path) -> list[Datagram]:
    out = []
    for p in read_udp(path):
        try:
            msg, err = decode(p.payload), None
        except DecodeError as exc:
            msg, err = None, exc
        out.append(Datagram(p.src, p.dst, p.payload, msg, err))
    return out


def test_readme_is_what_the_captures_hold(gen: ModuleType) -> None:
    assert gen.check() == []
    text = (FIXTURES / "README.md").read_text()
    assert "recorded from real gateways" in text
    listed = set(re.findall(r"^### `([^`]+\.pcap)`", text, re.M))
    assert listed == {p.name for p in FIXTURES.glob("*.pcap")}
    assert {f.name for f in gen.FLOWS} == {p.name for p in LAB}


def test_captures_cover_every_message_type_and_flow() -> None:
    seen = {p.name: {d.msg.TYPE for d in datagrams(p) if d.msg is not None} for p in LAB}
    assert set().union(*seen.values()) >= MESSAGE_TYPES_RECORDED
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
                             MessageType.DIGEST, MessageType.SYNC_ACK, MessageType.NOTIFY,
                             MessageType.SUMMARY},
        "lab-echo-trace.pcap": {MessageType.ECHO_REQUEST, MessageType.ECHO_REPLY,
                                MessageType.TRACE_REQUEST, MessageType.TRACE_REPLY},
        "lab-errors.pcap": {MessageType.ERROR, MessageType.DISCOVER_REPLY,
                            MessageType.NOTIFY},
    }
    for name, types in flows.items():
        assert types <= seen[name], name
    assert set(seen) == set(flows)


#: The message types of the draft when the captures were recorded (a new type needs a
#: flow that shows it, and a new recording).  DIGEST_REQUEST and SYNC_REQUEST are sent
#: only when the digest trees of a session differ (a lost datagram, Section 6.6), which
#: a recording without loss does not show.
MESSAGE_TYPES_RECORDED = frozenset(MessageType[name] for name in (
    "REGISTER", "REGISTER_ACK", "REFRESH", "REFRESH_ACK", "DEREGISTER", "DEREGISTER_ACK",
    "DISCOVER", "DISCOVER_REPLY", "ROUTE_REQUEST", "ROUTE_REPLY", "OPEN", "KEEPALIVE",
    "UPDATE", "DIGEST", "SYNC_ACK", "NOTIFY", "ECHO_REQUEST", "ECHO_REPLY",
    "TRACE_REQUEST", "TRACE_REPLY", "ERROR", "SUMMARY"))


def _has_status(mtype: MessageType) -> bool:
    return any(s.tlv is TlvType.STATUS for s in MESSAGE_CLASSES[mtype].SPEC)


@pytest.mark.parametrize("path", LAB, ids=[p.name for p in LAB])
def test_capture_follows_the_draft(path: Path) -> None:
    """Each recorded datagram checked against the rules of the draft: it decodes and
    re-encodes octet for octet, or (only the damaged requests of lab-errors.pcap) is
    answered with ERROR carrying its decoding error (Section 4.4); every answer answers
    an earlier request sent the other way with its transaction id (Section 3.3); ERROR
    answers only what did not decode or has no answer message with STATUS (Section 5,
    issue 15 item 6); a forwarded ROUTE_REQUEST has one hop less and the forwarder's id
    appended, a delivered one arrives as it came (Section 5.3.1, item 7); results are
    best first within 0..10000 (5.2.2); a retransmission is the same request, answered
    the same (9.3)."""
    grams = datagrams(path)
    gateways = {("192.0.2.1", UDP_PORT), ("198.51.100.1", UDP_PORT)}
    ids = {d.src: d.msg.gateway_id for p in LAB for d in datagrams(p)
           if isinstance(d.msg, Open) and d.src in gateways}
    requests: dict[tuple[tuple[str, int], tuple[str, int], int], Datagram] = {}
    answered: dict[tuple[tuple[str, int], tuple[str, int], int], bytes] = {}
    damaged: set[tuple[tuple[str, int], tuple[str, int], int]] = set()
    for i, d in enumerate(grams):
        assert UDP_PORT in (d.src[1], d.dst[1])
        if d.msg is None:
            assert path.name == "lab-errors.pcap" and d.src not in gateways
            if len(d.payload) < HEADER_SIZE:
                assert all(g.dst != d.src for g in grams[i + 1:i + 2]), "answered"
                continue
            _v, mtype, _f, _l, txid = HEADER_STRUCT.unpack_from(d.payload)
            (answer,) = [g for g in grams[i + 1:i + 2] if g.dst == d.src]
            assert isinstance(answer.msg, Error) and answer.msg.transaction_id == txid
            assert answer.msg.status is d.error.code and answer.msg.offending_type == mtype
            damaged.add((d.src, d.dst, txid))
            continue
        msg = d.msg
        assert encode(msg) == d.payload  # byte-exact
        key = (d.src, d.dst, msg.transaction_id)
        if msg.TYPE in ANSWER_TO or msg.TYPE is MessageType.OPEN:
            earlier = requests.get(key)
            if earlier is not None and msg.flags & Flags.RETRANSMISSION:
                assert earlier.payload[4:] == d.payload[4:]  # the same request again
                assert earlier.payload[:2] == d.payload[:2]
            requests.setdefault(key, d)
        reply_to = requests.get((d.dst, d.src, msg.transaction_id))
        if isinstance(msg, Error) and (d.dst, d.src, msg.transaction_id) not in damaged:
            assert reply_to is not None and reply_to.msg is not None
            assert not _has_status(ANSWER_TO[reply_to.msg.TYPE])  # item 6
        elif msg.TYPE in ANSWER_TO.values() and msg.TYPE not in (
                MessageType.OPEN, MessageType.UPDATE, MessageType.DIGEST):  # also one-way
            assert reply_to is not None and reply_to.msg is not None, msg
            assert ANSWER_TO[reply_to.msg.TYPE] is msg.TYPE
            previous = answered.setdefault((d.src, d.dst, msg.transaction_id), d.payload)
            assert previous == d.payload  # a retransmission gets the same answer
        if isinstance(msg, DiscoverReply):
            scores = [r.score for r in msg.results]
            assert scores == sorted(scores, reverse=True) and all(s <= 10000 for s in scores)
        if isinstance(msg, RouteRequest) and d.src in gateways:
            (incoming,) = [g.msg for g in grams[:i] if isinstance(g.msg, RouteRequest)
                           and g.dst == d.src and g.msg.payload == msg.payload
                           and g.msg.source_agent == msg.source_agent][-1:]
            if d.dst in gateways:  # forwarded to the next gateway
                assert (msg.hop_limit, msg.path) == (incoming.hop_limit - 1,
                                                     (*incoming.path, ids[d.src]))
            else:  # delivered: local delivery consumes no hop
                assert (msg.hop_limit, msg.path) == (incoming.hop_limit, incoming.path)
    if path.name == "lab-route-errors.pcap":  # item 7: hop limit 0, still delivered
        delivered = [d.msg for d in grams if isinstance(d.msg, RouteRequest)
                     and d.src in gateways and d.dst not in gateways]
        assert any(m.hop_limit == 0 for m in delivered)
        replies = {d.msg.status for d in grams if isinstance(d.msg, RouteReply)}
        assert {ErrorCode.NO_ROUTE, ErrorCode.HOP_LIMIT_EXCEEDED,
                ErrorCode.LOOP_DETECTED, ErrorCode.SUCCESS} <= replies


def test_quic_capture_has_its_key_log() -> None:
    lines = (FIXTURES / "quic-session.keylog").read_text().splitlines()
    labels = {line.split()[0] for line in lines}
    assert labels == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                      "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    packets = list(read_udp(FIXTURES / "quic-session.pcap"))
    assert packets and packets[0].payload[0] & 0xC0 == 0xC0  # QUIC long header first
    assert all(p.payload[0] & 0x40 for p in packets)  # QUIC fixed bit: no cleartext DMSC


@pytest.mark.parametrize("path", LAB, ids=[p.name for p in LAB])
def test_dmsc_decode_lists_every_datagram(path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``dmsc decode --pcap`` shows each datagram as the message or decoding error the
    codec gives for it."""
    from dmscproto.cli import main
    grams = datagrams(path)
    status = main(["decode", "--pcap", str(path), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == (1 if any(d.error for d in grams) else 0)
    assert len(lines) == len(grams)
    for line, d in zip(lines, grams, strict=True):
        if d.msg is not None:
            header = line["message"]["header"]
            assert (header["type"], header["transaction_id"]) == \
                (d.msg.TYPE.name, d.msg.transaction_id)
        else:
            assert d.error is not None and line["error"]["error"] == d.error.code.name
