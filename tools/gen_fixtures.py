#!/usr/bin/env python3
"""Write the reference captures in ``pcap-fixtures/`` and their README.

Lab UDP captures (draft-dmsc-protocol-00, Section 9.4) are synthesized from the codec:
every PDU is a :mod:`dmscproto.codec.examples` message or one built here, encoded by
:func:`dmscproto.codec.encode` (or deliberately damaged, for the error capture), and
written by :class:`dmscproto.analysis.pcap.PcapWriter` with fixed addresses and
timestamps, so the files are byte-for-byte reproducible.

QUIC captures (Section 9.1) are recorded from real DMSC-over-QUIC sessions on loopback
(:mod:`dmscproto.transport.quic`) with their TLS key logs; they differ on every run
(fresh keys and connection ids), so they are written only with ``--quic``.

Usage:
  tools/gen_fixtures.py            rewrite the lab UDP captures and README.md
  tools/gen_fixtures.py --quic     also record the QUIC captures and key logs again
  tools/gen_fixtures.py --check    exit 1 if a committed lab capture or README differs
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmscproto.analysis.pcap import PcapWriter
from dmscproto.codec import (
    Discover,
    DiscoverReply,
    DiscoveryQuery,
    Error,
    ErrorCode,
    Keepalive,
    Message,
    MessageType,
    Open,
    RawTlv,
    Refresh,
    RefreshAck,
    Register,
    RegisterAck,
    Result,
    RouteReply,
    RouteRequest,
    Scope,
    SignedRecord,
    TraceReply,
    TraceRequest,
    Update,
    encode,
)
from dmscproto.codec.examples import (
    AGENT2_ID,
    AGENT2_KEY,
    AGENT_ID,
    GATEWAY_A_ID,
    GATEWAY_B_ID,
    NONCE,
    NOW_MS,
    NOW_S,
    TRACE,
    example_key,
    examples,
    translator_signed,
    weather_record,
    weather_signed,
)
from dmscproto.codec.registry import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    UDP_PORT,
    VERSION,
    GatewayCaps,
    TlvType,
)
from dmscproto.codec.values import ExportPolicy, HopRecord
from dmscproto.codec.wire import HEADER_STRUCT, Advertisement
from dmscproto.security.signing import entity_id, sign_record, spki

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "pcap-fixtures"

Address = tuple[str, int]
# Documentation addresses (RFC 5737): domain a.example in 192.0.2.0/24, b.example in
# 198.51.100.0/24.  Gateways use the lab port, agents an ephemeral one.
GW_A: Address = ("192.0.2.1", UDP_PORT)
GW_B: Address = ("198.51.100.1", UDP_PORT)
WEATHER: Address = ("192.0.2.10", 40001)      # dmsc://a.example/weather (AGENT_ID)
PLANNER: Address = ("192.0.2.11", 40003)      # dmsc://a.example/planner
IMPOSTOR: Address = ("192.0.2.66", 40066)     # claims dmsc://a.example/weather
TRANSLATOR: Address = ("198.51.100.20", 40002)  # dmsc://b.example/translate (AGENT2_ID)
PLANNER_ID = entity_id(example_key(3).public_key())


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP datagram of a capture; ``error`` is the decoding error a receiver must
    report for it (Section 4.4), None for a well-formed PDU."""

    src: Address
    dst: Address
    pdu: bytes
    error: ErrorCode | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture file: its name, what it shows, and its datagrams in order."""

    name: str
    title: str
    description: str
    datagrams: tuple[Datagram, ...]


def _send(src: Address, dst: Address, *msgs: Message) -> list[Datagram]:
    return [Datagram(src, dst, encode(m)) for m in msgs]


def _exchange(client: Address, server: Address, request: Message, response: Message
              ) -> list[Datagram]:
    return _send(client, server, request) + _send(server, client, response)


def _damaged(pdu: bytes, error: ErrorCode, edit: Callable[[bytearray], bytes | bytearray]
             ) -> bytes:
    """``pdu`` changed by ``edit``; checks the codec reports ``error`` for it."""
    from dmscproto.codec import DecodeError, decode
    data = bytes(edit(bytearray(pdu)))
    try:
        decode(data)
    except DecodeError as exc:
        if exc.code is not error:
            raise AssertionError(f"damaged PDU gives {exc.code.name}, not {error.name}") from None
        return data
    raise AssertionError(f"damaged PDU decodes; expected {error.name}")


def _set_length(data: bytearray, length: int) -> bytearray:
    data[4:8] = struct.pack("!I", length)
    return data


def lab_captures() -> list[Capture]:
    """Every lab UDP capture, in README order."""
    ex = examples()
    discover = ex["discover"]
    assert isinstance(discover, Discover)
    weather, translator = weather_signed(), translator_signed()
    query = DiscoveryQuery(skills=("forecast",))
    hop_a = HopRecord(GATEWAY_A_ID, "a.example", NOW_MS, "gw-a")
    hop_b = HopRecord(GATEWAY_B_ID, "b.example", NOW_MS + 2, "gw-b")
    impostor_record = dataclasses.replace(
        weather_record(), agent_id=AGENT2_ID, public_key=spki(AGENT2_KEY.public_key()))
    forecast = b'{"city":"Paris","date":"2026-09-22"}'
    answer = b'{"temp_c":18,"sky":"clear"}'

    captures = [
        Capture("lab-registration.pcap", "Registration (Section 5.1)",
                "An agent registers its signed capability record and is granted a lease; "
                "a second key claiming the same agent name is refused with NAME_CONFLICT.",
                tuple(_exchange(WEATHER, GW_A, ex["register"], ex["register-ack"])
                      + _exchange(IMPOSTOR, GW_A,
                                  Register(transaction_id=2,
                                           record=sign_record(impostor_record, AGENT2_KEY),
                                           lease=600, nonce=NONCE[::-1], timestamp=NOW_MS + 5),
                                  ex["register-ack-conflict"]))),
        Capture("lab-refresh.pcap", "Lease refresh (Section 5.1)",
                "The agent refreshes its lease halfway through; a refresh for an agent the "
                "gateway does not know is answered with UNKNOWN_AGENT.",
                tuple(_exchange(WEATHER, GW_A, ex["refresh"], ex["refresh-ack"])
                      + _exchange(PLANNER, GW_A,
                                  Refresh(transaction_id=20, agent_id=PLANNER_ID, lease=3600,
                                          nonce=NONCE, timestamp=NOW_MS + 1_800_100),
                                  RefreshAck(transaction_id=20, status=ErrorCode.UNKNOWN_AGENT,
                                             diagnostic="no registration for this agent")))),
        Capture("lab-deregistration.pcap", "Deregistration (Section 5.1)",
                "The agent withdraws its registration before the lease ends.",
                tuple(_exchange(WEATHER, GW_A, ex["deregister"], ex["deregister-ack"]))),
        Capture("lab-discovery-local.pcap", "Local discovery (Section 5.2)",
                "An agent asks its own gateway, scope LOCAL, for agents with the skill "
                "'forecast' and gets one ranked signed record back.",
                tuple(_exchange(PLANNER, GW_A,
                                Discover(transaction_id=30, query=query, scope=Scope.LOCAL,
                                         max_results=3, source_agent=PLANNER_ID),
                                DiscoverReply(transaction_id=30, status=ErrorCode.SUCCESS,
                                              results=(Result(9000, weather),))))),
        Capture("lab-discovery-federated.pcap", "Federated discovery (Section 5.2)",
                "An agent of b.example discovers, scope FEDERATED, by skills, tags, intent "
                "and constraints; its gateway forwards the query to the a.example gateway "
                "(hop limit decremented, its id in the path vector) and relays the answer.",
                tuple(_send(TRANSLATOR, GW_B, ex["discover"])
                      + _exchange(GW_B, GW_A,
                                  dataclasses.replace(discover, transaction_id=31,
                                                      hop_limit=7, path=(GATEWAY_B_ID,)),
                                  DiscoverReply(transaction_id=31, status=ErrorCode.SUCCESS,
                                                results=(Result(9500, weather),), trace=TRACE))
                      + _send(GW_B, TRANSLATOR, ex["discover-reply"]))),
        Capture("lab-route-local.pcap", "Routed call within a domain (Section 5.3)",
                "An agent calls another agent of its domain through their gateway: "
                "ROUTE-REQUEST in, forwarded to the target, ROUTE-REPLY back. Each hop is "
                "its own transaction.",
                tuple(_send(PLANNER, GW_A,
                            RouteRequest(transaction_id=40, source_agent=PLANNER_ID,
                                         target_agent=AGENT_ID, hop_limit=8, path=(),
                                         payload=forecast, timeout_ms=5000))
                      + _exchange(GW_A, WEATHER,
                                  RouteRequest(transaction_id=41, source_agent=PLANNER_ID,
                                               target_agent=AGENT_ID, hop_limit=7,
                                               path=(GATEWAY_A_ID,), payload=forecast,
                                               timeout_ms=4000),
                                  RouteReply(transaction_id=41, status=ErrorCode.SUCCESS,
                                             target_agent=AGENT_ID, payload=answer))
                      + _send(GW_A, PLANNER,
                              RouteReply(transaction_id=40, status=ErrorCode.SUCCESS,
                                         target_agent=AGENT_ID, payload=answer)))),
        Capture("lab-route-cross-domain.pcap", "Routed call across domains (Section 5.3)",
                "An agent of b.example calls the weather agent of a.example: its gateway "
                "forwards to the a.example gateway, which delivers to the agent; the reply "
                "returns along the path. Trace context travels on every hop.",
                tuple(_send(TRANSLATOR, GW_B,
                            RouteRequest(transaction_id=50, source_agent=AGENT2_ID,
                                         target_agent=AGENT_ID, hop_limit=8, path=(),
                                         payload=forecast, timeout_ms=5000, trace=TRACE))
                      + _send(GW_B, GW_A,
                              RouteRequest(transaction_id=51, source_agent=AGENT2_ID,
                                           target_agent=AGENT_ID, hop_limit=7,
                                           path=(GATEWAY_B_ID,), payload=forecast,
                                           timeout_ms=4500, trace=TRACE))
                      + _exchange(GW_A, WEATHER,
                                  RouteRequest(transaction_id=52, source_agent=AGENT2_ID,
                                               target_agent=AGENT_ID, hop_limit=6,
                                               path=(GATEWAY_B_ID, GATEWAY_A_ID),
                                               payload=forecast, timeout_ms=4000, trace=TRACE),
                                  RouteReply(transaction_id=52, status=ErrorCode.SUCCESS,
                                             target_agent=AGENT_ID, payload=answer, trace=TRACE))
                      + _send(GW_A, GW_B,
                              RouteReply(transaction_id=51, status=ErrorCode.SUCCESS,
                                         target_agent=AGENT_ID,
                                         path=(GATEWAY_B_ID, GATEWAY_A_ID), payload=answer,
                                         trace=TRACE))
                      + _send(GW_B, TRANSLATOR,
                              RouteReply(transaction_id=50, status=ErrorCode.SUCCESS,
                                         target_agent=AGENT_ID, payload=answer, trace=TRACE)))),
        Capture("lab-route-errors.pcap", "Routing errors (Section 5.3)",
                "A request by capability query is sent, retransmitted (RETRANSMISSION flag) "
                "and answered NO_ROUTE; a request with hop limit 0 gets HOP_LIMIT_EXCEEDED; "
                "one whose path vector already holds the gateway gets LOOP_DETECTED.",
                tuple(_send(TRANSLATOR, GW_B,
                            dataclasses.replace(ex["route-request-by-query"], flags=0),
                            ex["route-request-by-query"])
                      + _send(GW_B, TRANSLATOR, ex["route-reply-no-route"])
                      + _exchange(GW_B, GW_A,
                                  RouteRequest(transaction_id=60, source_agent=AGENT2_ID,
                                               target_agent=AGENT_ID, hop_limit=0,
                                               path=(GATEWAY_B_ID,), payload=b"hello"),
                                  RouteReply(transaction_id=60,
                                             status=ErrorCode.HOP_LIMIT_EXCEEDED))
                      + _exchange(GW_B, GW_A,
                                  RouteRequest(transaction_id=61, source_agent=AGENT2_ID,
                                               target_agent=AGENT_ID, hop_limit=6,
                                               path=(GATEWAY_A_ID, GATEWAY_B_ID),
                                               payload=b"hello"),
                                  RouteReply(transaction_id=61, status=ErrorCode.LOOP_DETECTED,
                                             diagnostic="gateway already in the path")))),
        Capture("lab-peering.pcap", "Gateway peering and sync (Section 6)",
                "Two gateways exchange OPEN (ids, domains, hold time, capabilities, export "
                "policy; the answering OPEN has the same transaction id) and KEEPALIVEs; one "
                "advertises a record and withdraws another in an UPDATE; the other sends a "
                "DIGEST, the first asks for a record it lacks with SYNC-REQUEST and receives "
                "it in the answering UPDATE; the session ends with a NOTIFY.",
                tuple(_send(GW_A, GW_B, ex["open"])
                      + _send(GW_B, GW_A,
                              Open(transaction_id=ex["open"].transaction_id,
                                   gateway_id=GATEWAY_B_ID, domain="b.example",
                                   hold_time=90,
                                   capabilities=GatewayCaps.ROUTING | GatewayCaps.DIGEST_SYNC
                                   | GatewayCaps.FEDERATION,
                                   export_policy=ExportPolicy(peer_domains=("a.example",))))
                      + _send(GW_A, GW_B, ex["keepalive"])
                      + _send(GW_B, GW_A, Keepalive(transaction_id=71))
                      + _send(GW_A, GW_B, ex["update"])
                      + _send(GW_B, GW_A, ex["digest"])
                      + _send(GW_A, GW_B, ex["sync-request"])
                      + _send(GW_B, GW_A,
                              Update(transaction_id=ex["sync-request"].transaction_id,
                                     advertise=(Advertisement(3, (GATEWAY_B_ID,), translator),)))
                      + _send(GW_A, GW_B, ex["notify"]))),
        Capture("lab-echo-trace.pcap", "Echo and trace (Section 6.8)",
                "An agent pings its gateway; then traces the route to an agent of the other "
                "domain: each gateway on the path adds its hop record.",
                tuple(_exchange(WEATHER, GW_A, ex["echo-request"], ex["echo-reply"])
                      + _send(WEATHER, GW_A,
                              TraceRequest(transaction_id=80, target_agent=AGENT2_ID,
                                           hop_limit=8, path=(), trace=TRACE))
                      + _exchange(GW_A, GW_B, ex["trace-request"], ex["trace-reply"])
                      + _send(GW_A, WEATHER,
                              TraceReply(transaction_id=80, status=ErrorCode.SUCCESS,
                                         target_agent=AGENT2_ID, hops=(hop_a, hop_b),
                                         trace=TRACE)))),
        Capture("lab-errors.pcap", "Malformed PDUs and ERROR answers (Sections 4.4, 5.4)",
                "One damaged request per decoding error, each answered by an ERROR naming "
                "the error code and the request's type (a PDU too short to carry a "
                "transaction id gets no answer), then status answers for refused requests.",
                tuple(_error_datagrams(ex))),
    ]
    return captures


def _error(txid: int, code: ErrorCode, offending: MessageType | int, text: str) -> Message:
    return Error(transaction_id=txid, status=code, offending_type=int(offending),
                 diagnostic=text)


def _error_datagrams(ex: dict[str, Message]) -> list[Datagram]:
    """Damaged requests (each checked against the codec) and the answers to them."""
    echo = ex["echo-request"]
    refresh = ex["refresh"]
    out: list[Datagram] = []

    def bad(txid: int, request: Message, code: ErrorCode,
            edit: Callable[[bytearray], bytes | bytearray], text: str,
            answer: bool = True) -> None:
        pdu = encode(dataclasses.replace(request, transaction_id=txid))
        out.append(Datagram(WEATHER, GW_A, _damaged(pdu, code, edit), code))
        if answer:
            out.extend(_send(GW_A, WEATHER, _error(txid, code, request.TYPE, text)))

    unknown_type = struct.pack("!BBHIQ", VERSION, 0x66, 0, HEADER_SIZE, 16)
    out.append(Datagram(WEATHER, GW_A, _damaged(unknown_type, ErrorCode.UNKNOWN_MESSAGE_TYPE,
                                                lambda d: d),
                        ErrorCode.UNKNOWN_MESSAGE_TYPE))
    out.extend(_send(GW_A, WEATHER, ex["error"]))
    bad(90, echo, ErrorCode.TRUNCATED, lambda d: d[:10], "", answer=False)
    bad(91, echo, ErrorCode.TRUNCATED, lambda d: d[:-3], "datagram shorter than its length")
    bad(92, echo, ErrorCode.TRAILING_DATA, lambda d: d + b"\0\0",
        "octets after the PDU")
    bad(93, echo, ErrorCode.UNSUPPORTED_VERSION, lambda d: b"\x02" + d[1:], "version 2")
    bad(94, echo, ErrorCode.LENGTH_MISMATCH,
        lambda d: d[:HEADER_SIZE + 2] + b"\x00\xff" + d[HEADER_SIZE + 4:],
        "TLV runs past the end of the PDU")
    bad(95, echo, ErrorCode.LENGTH_MISMATCH, lambda d: _set_length(d, 12),
        "PDU length below the header size")
    bad(96, dataclasses.replace(echo, unknown_tlvs=(RawTlv(0x8042, b"\x01"),)),
        ErrorCode.UNKNOWN_CRITICAL_TLV, lambda d: d,
        "critical TLV 0x8042 not understood in ECHO_REQUEST")
    bad(97, echo, ErrorCode.DUPLICATE_TLV, lambda d: _retlv(d, lambda t: [t[0], *t]),
        "TIMESTAMP repeated")
    bad(98, echo, ErrorCode.TLV_ORDER, lambda d: _retlv(d, lambda t: [t[1], t[0], *t[2:]]),
        "PAYLOAD before TIMESTAMP")
    bad(99, refresh, ErrorCode.INVALID_TLV_LENGTH, lambda d: _retlv(d, _short_lease),
        "LEASE of 3 octets")
    bad(100, echo, ErrorCode.MISSING_TLV,
        lambda d: _retlv(d, lambda t: [x for x in t if x[:2] != _code(TlvType.SEQUENCE)]),
        "ECHO_REQUEST lacks SEQUENCE")
    bad(104, echo, ErrorCode.PDU_TOO_LARGE, lambda d: _set_length(d, MAX_PDU_SIZE + 1),
        "PDU length 65536")
    discover = ex["discover"]
    bad(105, discover, ErrorCode.INVALID_TLV_VALUE,
        lambda d: _retlv(d, lambda t: [x[:4] + b"\x03" if x[:2] == _code(TlvType.SCOPE) else x
                                       for x in t]),
        "unregistered scope 3")
    bad(106, ex["open"], ErrorCode.INVALID_TLV_VALUE,
        lambda d: _retlv(d, lambda t: [x[:2] + struct.pack("!H", 11) + b"a.\xc0\xafexample"
                                       if x[:2] == _code(TlvType.DOMAIN) else x for x in t]),
        "invalid UTF-8 in DOMAIN")
    out.extend(_exchange(WEATHER, GW_A, dataclasses.replace(refresh, transaction_id=101),
                         RefreshAck(transaction_id=101, status=ErrorCode.STALE_TIMESTAMP,
                                    diagnostic="timestamp outside the freshness window")))
    out.extend(_exchange(PLANNER, GW_A,
                         Discover(transaction_id=102, query=DiscoveryQuery(tags=("weather",)),
                                  scope=Scope.DOMAIN, max_results=10, token=b"expired-token"),
                         _error(102, ErrorCode.TOKEN_EXPIRED, MessageType.DISCOVER,
                                "access token expired")))
    out.extend(_exchange(IMPOSTOR, GW_A,
                         Register(transaction_id=103, record=_forged(weather_signed()),
                                  lease=3600, nonce=NONCE, timestamp=NOW_MS + 9),
                         RegisterAck(transaction_id=103, status=ErrorCode.BAD_SIGNATURE,
                                     diagnostic="record signature does not verify")))
    return out


def _forged(record: SignedRecord) -> SignedRecord:
    """``record`` with its signature's first octet changed (BAD_SIGNATURE, Section 10)."""
    sig = record.signature
    return dataclasses.replace(record, signature=bytes([sig[0] ^ 0xFF]) + sig[1:])


def _code(tlv: TlvType) -> bytes:
    return struct.pack("!H", tlv)


def _retlv(pdu: bytearray, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """``pdu`` with its list of whole TLVs changed by ``edit`` and the length fixed."""
    tlvs, offset = [], HEADER_SIZE
    while offset < len(pdu):
        (tlen,) = struct.unpack_from("!H", pdu, offset + 2)
        tlvs.append(bytes(pdu[offset:offset + 4 + tlen]))
        offset += 4 + tlen
    body = b"".join(edit(tlvs))
    return bytes(_set_length(pdu[:HEADER_SIZE], HEADER_SIZE + len(body))) + body


def _short_lease(tlvs: list[bytes]) -> list[bytes]:
    """The LEASE TLV cut to a 3-octet value."""
    return [t[:2] + struct.pack("!H", 3) + t[4:7] if t[:2] == _code(TlvType.LEASE) else t
            for t in tlvs]


def write_capture(capture: Capture, directory: Path) -> Path:
    """Write ``capture`` into ``directory``; datagram i is at NOW_S + i ms."""
    path = directory / capture.name
    with PcapWriter(path) as pcap:
        for i, dgram in enumerate(capture.datagrams):
            pcap.write_udp(dgram.src, dgram.dst, dgram.pdu, NOW_S + i / 1000)
    return path


# --- README -----------------------------------------------------------------------------
README_HEAD = """\
# pcap-fixtures: reference captures of DMSC

Generated by `tools/gen_fixtures.py` (do not edit by hand; `--check` verifies).

**Lab UDP captures (`lab-*.pcap`) are synthesized from the codec, not recorded from a
running gateway.** Every PDU is an example message of `dmscproto.codec.examples` or one
built by the generator, encoded by `dmscproto.codec.encode` (or deliberately damaged in
`lab-errors.pcap`), wrapped in synthetic IPv4/UDP headers by
`dmscproto.analysis.pcap.PcapWriter`, at fixed timestamps (2026-09-21T12:26:40Z plus one
millisecond per datagram), so regenerating gives identical files. They show what the
messages of each flow look like on the wire in cleartext lab mode (draft Section 9.4),
not the timing or behaviour of the gateway runtime. An answer carries its request's
transaction id; ids are per hop: a gateway that forwards a request starts a new
transaction with the next node.

Addresses are documentation ranges (RFC 5737): domain `a.example` is `192.0.2.0/24`
(gateway `192.0.2.1`, weather agent `.10`, planner agent `.11`, an impostor `.66`),
domain `b.example` is `198.51.100.0/24` (gateway `198.51.100.1`, translator agent `.20`).
Gateways use UDP port {port}, agents ephemeral ports.

## Viewing them

With the dissector generated from the codec registry (`tools/gen_wireshark.py`):

```sh
tshark -X lua_script:tools/wireshark/dmsc.lua -r pcap-fixtures/lab-registration.pcap
tshark -X lua_script:tools/wireshark/dmsc.lua -r pcap-fixtures/lab-registration.pcap -V -Y dmsc
wireshark -X lua_script:tools/wireshark/dmsc.lua pcap-fixtures/lab-registration.pcap
dmsc decode --pcap pcap-fixtures/lab-registration.pcap
```

or in scapy: `from dmscproto.analysis.scapy_dmsc import DMSC` (binds UDP port {port}),
then `rdpcap("pcap-fixtures/lab-registration.pcap")` (the link type is raw IPv4).

## Lab UDP captures
"""


def readme(captures: list[Capture], quic: list[QuicCapture]) -> str:
    from dmscproto.codec import decode
    parts = [README_HEAD.format(port=UDP_PORT)]
    for cap in captures:
        parts.append(f"\n### `{cap.name}`: {cap.title}\n\n{cap.description}\n\n")
        parts.append("| # | from | to | message |\n|---|---|---|---|\n")
        for i, d in enumerate(cap.datagrams, 1):
            if d.error is not None:
                what = f"damaged {_header_text(d.pdu)}: {d.error.name}"
            else:
                msg = decode(d.pdu)
                what = f"{msg.TYPE.name} txid={msg.transaction_id}" + _status(msg)
            parts.append(f"| {i} | {d.src[0]}:{d.src[1]} | {d.dst[0]}:{d.dst[1]} | {what} |\n")
    parts.append(QUIC_README)
    for q in quic:
        parts.append(f"\n### `{q.name}` (key log `{q.keylog}`)\n\n{q.description}\n")
    if not quic:
        parts.append("\nNone recorded yet.\n")
    return "".join(parts)


def _header_text(pdu: bytes) -> str:
    """What the header of a damaged PDU says (type and transaction id), if it is whole."""
    if len(pdu) < HEADER_SIZE:
        return f"PDU of {len(pdu)} octets"
    _version, mtype, _flags, _length, txid = HEADER_STRUCT.unpack_from(pdu)
    name = MessageType(mtype).name if mtype in MessageType._value2member_map_ \
        else f"type 0x{mtype:02x}"
    return f"{name} txid={txid}"


def _status(msg: Message) -> str:
    status = getattr(msg, "status", None)
    return f" {status.name}" if isinstance(status, ErrorCode) else ""


QUIC_README = """
## QUIC captures

Recorded, not synthesized: `tools/gen_fixtures.py --quic` runs real DMSC-over-QUIC
sessions (draft Section 9.1; `dmscproto.transport.quic`, mutual TLS 1.3 with
certificates from throwaway domain authorities, ALPN `dmsc/1`) on loopback, with the
transport writing every datagram to the capture and the TLS secrets to the key log
(SSLKEYLOGFILE format). They differ on every run (fresh keys, connection ids and
times). Decrypt them with the key log:

```sh
tshark -X lua_script:tools/wireshark/dmsc.lua \\
    -o tls.keylog_file:pcap-fixtures/quic-session.keylog \\
    -r pcap-fixtures/quic-session.pcap -Y dmsc
```

The dissector is registered for ALPN `dmsc/1` in Wireshark's QUIC ALPN table
(`quic.proto`). It joins a PDU that spans several STREAM frames itself, per
connection direction and stream id, and shows it in the frame that completes it:
Wireshark 4.0 (Debian 12's `tshark`) does not hand a STREAM continuation back to a
dissector that asks for more data with `desegment_len`. This needs the QUIC fields of
the protocol tree, so it does not work in tshark's two-pass mode (`-2`), whose first
pass builds no tree. Tested with tshark 4.0 only.
"""


# --- QUIC ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QuicCapture:
    name: str
    keylog: str
    description: str


QUIC_CAPTURES = [
    QuicCapture("quic-session.pcap", "quic-session.keylog",
                "An agent connects to a gateway over QUIC (mutual TLS 1.3, ALPN dmsc/1) and "
                "sends REGISTER, ECHO-REQUEST and DISCOVER, each on a new bidirectional "
                "stream; a stand-in for the gateway (the gateway runtime is not used) "
                "answers each on the same stream with the example REGISTER-ACK and "
                "ECHO-REPLY, and a DISCOVER-REPLY with four signed records that spans two "
                "QUIC packets (the dissector joins it, see above)."),
]


def quic_captures_present(directory: Path) -> list[QuicCapture]:
    return [q for q in QUIC_CAPTURES
            if (directory / q.name).exists() and (directory / q.keylog).exists()]


def quic_discover_reply() -> DiscoverReply:
    """The QUIC capture's DISCOVER-REPLY: four signed records, about 2 kB, so the PDU
    spans several QUIC packets."""
    records = (weather_signed(), translator_signed()) * 2
    return DiscoverReply(transaction_id=examples()["discover"].transaction_id,
                         status=ErrorCode.SUCCESS,
                         results=tuple(Result(10000 - 500 * i, r) for i, r in enumerate(records)))


async def record_session(pcap_path: Path, keylog_path: Path) -> None:
    """An agent and a gateway stand-in talk DMSC over QUIC on loopback; the server side
    writes the capture and the key log.  The stand-in answers with the example
    responses (the gateway runtime is not used here)."""
    from dmscproto.security.ca import DomainAuthority, Kind
    from dmscproto.transport.quic import PeerInfo, connect, serve
    from dmscproto.transport.tls import TlsIdentity

    authority = DomainAuthority.create("a.example")
    gateway = TlsIdentity.issue(authority, "gw1", Kind.GATEWAY)
    agent = TlsIdentity.issue(authority, "weather", Kind.AGENT)
    ex = examples()
    answers = {MessageType.REGISTER: ex["register-ack"],
               MessageType.ECHO_REQUEST: ex["echo-reply"],
               MessageType.DISCOVER: quic_discover_reply()}

    async def answer(msg: Message, peer: PeerInfo) -> Message | None:
        return dataclasses.replace(answers[msg.TYPE], transaction_id=msg.transaction_id)

    keylog_path.unlink(missing_ok=True)
    with PcapWriter(pcap_path) as pcap:
        server = await serve("127.0.0.1", 0, gateway, answer, pcap=pcap, keylog=keylog_path)
        try:
            conn = await connect("127.0.0.1", server.address[1], agent)
            try:
                for name in ("register", "echo-request", "discover"):
                    await conn.request(ex[name])
            finally:
                conn.close()
                await conn.wait_closed()
        finally:
            server.close()


def record_quic(directory: Path) -> None:
    """Record the QUIC captures (see :data:`QUIC_CAPTURES`)."""
    (capture,) = QUIC_CAPTURES
    asyncio.run(record_session(directory / capture.name, directory / capture.keylog))


# --- main -------------------------------------------------------------------------------
def generate(directory: Path) -> list[Path]:
    """Write every lab capture and README.md into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    captures = lab_captures()
    paths = [write_capture(cap, directory) for cap in captures]
    readme_path = directory / "README.md"
    readme_path.write_text(readme(captures, quic_captures_present(FIXTURES)))
    return [*paths, readme_path]


def check() -> list[str]:
    """Names of the committed files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [p.name for p in fresh
                if not (FIXTURES / p.name).exists()
                or (FIXTURES / p.name).read_bytes() != p.read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed lab captures or README are stale")
    parser.add_argument("--quic", action="store_true",
                        help="also record the QUIC captures and key logs again")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for name in stale:
            print(f"stale: pcap-fixtures/{name} (run tools/gen_fixtures.py)", file=sys.stderr)
        return 1 if stale else 0
    if args.quic:
        record_quic(FIXTURES)
    for path in generate(FIXTURES):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
