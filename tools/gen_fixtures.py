#!/usr/bin/env python3
"""Record the reference captures in ``pcap-fixtures/`` and write their README.

Lab UDP captures (draft-dmsc-protocol-00, Section 9.4) are recorded from real lab-mode
gateways: :func:`record_lab` runs two :class:`~dmscproto.runtime.gateway.GatewayRuntime`
(a.example and b.example, peered over cleartext UDP) and their agents on loopback, plays
every flow of :data:`FLOWS`, and cuts the recording into one capture per flow, with the
loopback addresses replaced by documentation ones.  Each recording differs (keys, nonces,
times, transaction ids); ``tests/test_fixtures.py`` checks every capture against the
draft's rules rather than against a regeneration.

QUIC captures (Section 9.1) are recorded from real DMSC-over-QUIC sessions on loopback
(:mod:`dmscproto.transport.quic`) with their TLS key logs.

Usage:
  tools/gen_fixtures.py            rewrite README.md from the committed captures
  tools/gen_fixtures.py --record   record the lab captures again (and README.md)
  tools/gen_fixtures.py --quic     also record the QUIC captures and key logs again
  tools/gen_fixtures.py --check    exit 1 if a capture is missing or README.md is stale
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
from typing import Any

from dmscproto.analysis.pcap import PcapWriter
from dmscproto.codec import (
    Deregister,
    Discover,
    DiscoverReply,
    DiscoveryQuery,
    ErrorCode,
    Message,
    MessageType,
    Open,
    RawTlv,
    Refresh,
    Register,
    Result,
    RouteRequest,
    Scope,
    SignedRecord,
    encode,
)
from dmscproto.codec.registry import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    SESSION_MESSAGES,
    UDP_PORT,
    VERSION,
    Flags,
    TlvType,
)
from dmscproto.codec.wire import HEADER_STRUCT
from dmscproto.testing.examples import (
    NOW_S,
    examples,
    translator_signed,
    weather_signed,
)

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
TESTER_A: Address = ("192.0.2.99", 40099)     # one-shot client of a.example's gateway
TESTER_B: Address = ("198.51.100.99", 40199)  # one-shot client of b.example's gateway
DAMAGED: Address = ("192.0.2.98", 40098)      # sends the damaged PDUs
PLANNER_2: Address = ("192.0.2.12", 40012)    # the planner again, on a new association
IMPOSTOR_2: Address = ("192.0.2.67", 40067)   # a forged record, then a stray OPEN


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


#: Session messages between the two gateways go to the peering capture, whenever sent.
#: The messages of a peer session, all of which go to lab-peering.pcap.
SESSION_TYPES = SESSION_MESSAGES


@dataclass(frozen=True, slots=True)
class Flow:
    """One lab capture: a window of the recording (or, for peering, every session
    message between the gateways)."""

    name: str
    title: str
    description: str


FLOWS = (
    Flow("lab-registration.pcap", "Registration (Section 5.1)",
         "The weather agent registers its signed capability record and is granted a "
         "lease; a second key claiming the same agent name, from another address, is "
         "refused with NAME_CONFLICT."),
    Flow("lab-refresh.pcap", "Lease refresh (Section 5.1)",
         "The planner agent registers and refreshes its lease."),
    Flow("lab-deregistration.pcap", "Deregistration (Section 5.1)",
         "The planner agent deregisters; a REFRESH after that is answered "
         "UNKNOWN_AGENT."),
    Flow("lab-discovery-local.pcap", "Local discovery (Section 5.2)",
         "The planner agent asks its own gateway, scope LOCAL, for agents with the skill "
         "'forecast' and gets the weather agent's signed record back, with the score of "
         "the default ranking."),
    Flow("lab-discovery-federated.pcap", "Federated discovery (Section 5.2)",
         "The translator agent of b.example discovers, scope FEDERATED, by skill, tag and "
         "intent; its gateway answers from the record it learned from a.example's "
         "gateway (it holds a record of that domain, so it does not relay the DISCOVER, "
         "Section 5.2.1)."),
    Flow("lab-route-local.pcap", "Routed call within a domain (Section 5.3)",
         "The planner agent calls the weather agent of its domain through their gateway: "
         "ROUTE_REQUEST in, delivered to the target (hop limit and path unchanged: local "
         "delivery consumes no hop), ROUTE_REPLY back. Each hop is its own transaction."),
    Flow("lab-route-cross-domain.pcap", "Routed call across domains (Section 5.3)",
         "The translator agent of b.example calls the weather agent of a.example: its "
         "gateway forwards to a.example's gateway (hop limit decremented, its id appended "
         "to the path), which delivers to the agent; the reply returns along the path."),
    Flow("lab-route-errors.pcap", "Routing errors (Section 5.3)",
         "A one-shot client (never registered: an unregistered lab sender, Section 9.4) "
         "sends a request by capability query that matches nothing (NO_ROUTE), then the "
         "same PDU again with the RETRANSMISSION flag, answered from the gateway's "
         "duplicate cache; a request with hop limit 0 for an agent of the other domain "
         "(HOP_LIMIT_EXCEEDED); one whose path vector already holds the gateway "
         "(LOOP_DETECTED); and at a.example's gateway, a request with hop limit 0 for "
         "an agent registered there, which is delivered."),
    Flow("lab-peering.pcap", "Gateway peering and sync (Section 6)",
         "Every session message between the two gateways during the whole recording: "
         "OPEN both ways (the answering OPEN has the same transaction id), each "
         "gateway's table transfer closed by a DIGEST, UPDATEs (numbered by SEQUENCE) "
         "advertising the records registered in the other captures and purging those "
         "deregistered, SYNC_ACKs, periodic DIGESTs of the digest tree root, KEEPALIVEs "
         "(hold time 3 s), each gateway's SUMMARY of its domain's capabilities (Section "
         "6.9) after each change, and the NOTIFY CEASE that closes the session when the "
         "gateways stop."),
    Flow("lab-echo-trace.pcap", "Echo and trace (Section 6.8)",
         "The weather agent pings its gateway, then traces the route to the translator "
         "agent of the other domain: each gateway on the path adds its hop record."),
    Flow("lab-errors.pcap", "Malformed PDUs and refusals (Sections 4.4, 5, 5.4)",
         "A client sends one damaged request per decoding error; the gateway answers each "
         "with an ERROR naming the error code and the request's type (a PDU too short to "
         "carry a transaction id gets no answer). Then refusals of requests that decoded, "
         "each in the request's answer message with STATUS: a REFRESH with a stale "
         "TIMESTAMP, a DISCOVER whose SOURCE_AGENT is not the sender's (DISCOVER_REPLY "
         "IDENTITY_MISMATCH, not ERROR), a REGISTER with a forged signature; and an OPEN "
         "naming a domain that is not configured, refused with NOTIFY."),
)


@dataclass
class Recording:
    """What the recording learned: when each flow ran, and which client address stands
    for which documentation address (clients are created, and first send, in order)."""

    windows: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    clients: list[Address] = dataclasses.field(default_factory=list)


def _damaged_requests() -> list[bytes]:
    """One damaged request per decoding error a receiver reports (each checked against
    the codec), as the errors capture sends them."""
    ex = examples()
    echo, refresh = ex["echo-request"], ex["refresh"]
    out: list[bytes] = [_damaged(struct.pack("!BBHIQ", VERSION, 0x66, 0, HEADER_SIZE, 16),
                                 ErrorCode.UNKNOWN_MESSAGE_TYPE, lambda d: d)]

    def bad(txid: int, request: Message, code: ErrorCode,
            edit: Callable[[bytearray], bytes | bytearray]) -> None:
        pdu = encode(dataclasses.replace(request, transaction_id=txid))
        out.append(_damaged(pdu, code, edit))

    bad(90, echo, ErrorCode.TRUNCATED, lambda d: d[:10])
    bad(91, echo, ErrorCode.TRUNCATED, lambda d: d[:-3])
    bad(92, echo, ErrorCode.TRAILING_DATA, lambda d: d + b"\0\0")
    bad(93, echo, ErrorCode.UNSUPPORTED_VERSION, lambda d: b"\x02" + d[1:])
    bad(94, echo, ErrorCode.LENGTH_MISMATCH,
        lambda d: d[:HEADER_SIZE + 2] + b"\x00\xff" + d[HEADER_SIZE + 4:])
    bad(95, echo, ErrorCode.LENGTH_MISMATCH, lambda d: _set_length(d, 12))
    bad(96, dataclasses.replace(echo, unknown_tlvs=(RawTlv(0x8042, b"\x01"),)),
        ErrorCode.UNKNOWN_CRITICAL_TLV, lambda d: d)
    bad(97, echo, ErrorCode.DUPLICATE_TLV, lambda d: _retlv(d, lambda t: [t[0], *t]))
    bad(98, echo, ErrorCode.TLV_ORDER, lambda d: _retlv(d, lambda t: [t[1], t[0], *t[2:]]))
    bad(99, refresh, ErrorCode.INVALID_TLV_LENGTH, lambda d: _retlv(d, _short_lease))
    bad(100, echo, ErrorCode.MISSING_TLV,
        lambda d: _retlv(d, lambda t: [x for x in t if x[:2] != _code(TlvType.SEQUENCE)]))
    bad(104, echo, ErrorCode.PDU_TOO_LARGE, lambda d: _set_length(d, MAX_PDU_SIZE + 1))
    bad(105, ex["discover"], ErrorCode.INVALID_TLV_VALUE,
        lambda d: _retlv(d, lambda t: [x[:4] + b"\x03" if x[:2] == _code(TlvType.SCOPE) else x
                                       for x in t]))
    bad(106, ex["open"], ErrorCode.INVALID_TLV_VALUE,
        lambda d: _retlv(d, lambda t: [x[:2] + struct.pack("!H", 11) + b"a.\xc0\xafexample"
                                       if x[:2] == _code(TlvType.DOMAIN) else x for x in t]))
    return out


async def _record(root: Path, pcap: PcapWriter, rec: Recording) -> dict[str, Address]:
    """Run two lab-mode gateways (a.example, b.example) and their agents on loopback and
    play every flow of :data:`FLOWS`; returns the gateways' addresses by role."""
    import os
    import socket
    import time

    from dmscproto.agent import Agent, AgentError
    from dmscproto.host.config import GatewayConfig
    from dmscproto.runtime.gateway import GatewayRuntime
    from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
    from dmscproto.transport import udp

    dom_a, dom_b = Domain.create(root, "a.example"), Domain.create(root, "b.example")
    gw_b = GatewayRuntime(GatewayConfig.load(write_gateway_config(
        dom_b, "gw-b", transport="udp", lab=True, hold_time=3,
        peers=[PeerSpec(dom_a)])), pcap=pcap)
    await gw_b.start()
    b_addr = gw_b.addresses["udp"]
    gw_a = GatewayRuntime(GatewayConfig.load(write_gateway_config(
        dom_a, "gw-a", transport="udp", lab=True, hold_time=3,
        peers=[PeerSpec(dom_b, address=b_addr)])), pcap=pcap)
    agents: list[Agent] = []
    raws: list[Any] = []

    def flow(name: str) -> Any:
        class Window:
            def __enter__(self) -> None:
                self.start = time.time()

            def __exit__(self, *exc: object) -> None:
                rec.windows.setdefault(name, []).append((self.start, time.time()))
        return Window()

    def agent(dom: Domain, name: str, gateway: Address, role: Address) -> Agent:
        ag = dom.agent(name, gateway, transport="udp", lab=True, reconnect=False)
        agents.append(ag)
        rec.clients.append(role)
        return ag

    async def raw(gateway: Address, role: Address, handler: Any = None) -> Any:
        conn = await udp.connect(*gateway, lab=True, handler=handler)
        raws.append(conn)
        rec.clients.append(role)
        return conn

    def now_ms() -> int:
        return int(time.time() * 1000)

    async def settle(seconds: float = 0.3) -> None:
        await asyncio.sleep(seconds)

    try:
        # the translator registers before the session, so the first DIGEST shows it
        translator = agent(dom_b, "translate", b_addr, TRANSLATOR)
        translator.serve(lambda payload, _request: b"translated: " + payload)
        await translator.register(["translate"])
        await gw_a.start()
        a_addr = gw_a.addresses["udp"]
        for _ in range(100):
            if gw_a.node is not None and gw_a.node.peers:
                break
            await asyncio.sleep(0.05)
        await settle(1.0)

        weather = agent(dom_a, "weather", a_addr, WEATHER)
        weather.serve(lambda payload, _request: b'{"temp_c":18,"sky":"clear"} for ' + payload)
        with flow("lab-registration.pcap"):
            await weather.register(["forecast", "alerts"], attributes={"region": "eu"})
            impostor = agent(dom_a, "weather", a_addr, IMPOSTOR)
            try:
                await impostor.register(["forecast"])
            except AgentError as exc:
                assert exc.status is ErrorCode.NAME_CONFLICT, exc
            else:
                raise AssertionError("the second key was not refused")
            await settle()

        planner = dom_a.agent("planner", a_addr, transport="udp", lab=True)
        signed = planner.record(["plan"])
        p = await raw(a_addr, PLANNER)
        with flow("lab-refresh.pcap"):
            for msg in (Register(transaction_id=20, record=signed, lease=60,
                                 nonce=os.urandom(16), timestamp=now_ms()),
                        Refresh(transaction_id=21, agent_id=planner.agent_id, lease=60,
                                nonce=os.urandom(16), timestamp=now_ms())):
                answer = await p.request(msg)
                assert getattr(answer, "status", None) is ErrorCode.SUCCESS, answer
            await settle()
        with flow("lab-discovery-local.pcap"):
            answer = await p.request(Discover(
                transaction_id=30, query=DiscoveryQuery(skills=("forecast",)),
                scope=Scope.LOCAL, max_results=3, source_agent=planner.agent_id))
            assert isinstance(answer, DiscoverReply) and answer.results, answer
            await settle()
        with flow("lab-route-local.pcap"):
            answer = await p.request(RouteRequest(
                transaction_id=40, source_agent=planner.agent_id, target_agent=weather.agent_id,
                hop_limit=8, path=(), payload=b"Paris", timeout_ms=5000))
            assert getattr(answer, "status", None) is ErrorCode.SUCCESS, answer
            await settle()
        with flow("lab-deregistration.pcap"):
            for msg, code in ((Deregister(transaction_id=22, agent_id=planner.agent_id,
                                          nonce=os.urandom(16), timestamp=now_ms()),
                               ErrorCode.SUCCESS),
                              (Refresh(transaction_id=23, agent_id=planner.agent_id, lease=60,
                                       nonce=os.urandom(16), timestamp=now_ms()),
                               ErrorCode.UNKNOWN_AGENT)):
                answer = await p.request(msg)
                assert getattr(answer, "status", None) is code, answer
            await settle()

        for _ in range(100):  # b has learned the weather record
            if gw_b.core is not None and weather.agent_id in gw_b.core:
                break
            await asyncio.sleep(0.05)
        with flow("lab-discovery-federated.pcap"):
            found = await translator.discover(skills=["forecast"], tags=["forecast"],
                                              intent="weather in Paris",
                                              scope=Scope.FEDERATED)
            assert [f.agent_id for f in found] == [weather.agent_id], found
            await settle()
        with flow("lab-route-cross-domain.pcap"):
            assert (await translator.call(weather.agent_id, b"Paris")).endswith(b"Paris")
            await settle()
        with flow("lab-echo-trace.pcap"):
            await weather.echo(b"ping")
            trace = await weather.trace(translator.agent_id)
            assert trace.status is ErrorCode.SUCCESS and len(trace.hops) == 2, trace
            await settle()

        one_shot = await raw(b_addr, TESTER_B)
        with flow("lab-route-errors.pcap"):
            query = RouteRequest(transaction_id=60, source_agent=translator.agent_id,
                                 query=DiscoveryQuery(skills=("teleport",)), hop_limit=8,
                                 path=(), payload=b"hello")
            assert _status_of(await one_shot.request(query)) is ErrorCode.NO_ROUTE
            again = bytearray(encode(query))
            again[2:4] = struct.pack("!H", Flags.RETRANSMISSION)
            assert _status_of(await one_shot.request_bytes(bytes(again))) \
                is ErrorCode.NO_ROUTE
            for txid, hop_limit, path, code in (
                    (61, 0, (), ErrorCode.HOP_LIMIT_EXCEEDED),
                    (62, 8, (gw_b.core.gateway_id,), ErrorCode.LOOP_DETECTED)):
                answer = await one_shot.request(RouteRequest(
                    transaction_id=txid, source_agent=translator.agent_id,
                    target_agent=weather.agent_id, hop_limit=hop_limit, path=path,
                    payload=b"hello"))
                assert _status_of(answer) is code, answer
            local = await raw(a_addr, TESTER_A)
            answer = await local.request(RouteRequest(
                transaction_id=63, source_agent=translator.agent_id,
                target_agent=weather.agent_id, hop_limit=0, path=(gw_b.core.gateway_id,),
                payload=b"Lyon"))
            assert _status_of(answer) is ErrorCode.SUCCESS, answer
            await settle()

        with flow("lab-errors.pcap"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            rec.clients.append(DAMAGED)
            try:
                for pdu in _damaged_requests():
                    sock.sendto(pdu, a_addr)
                    await asyncio.sleep(0.05)
            finally:
                await settle()
                sock.close()
            w2 = await raw(a_addr, PLANNER_2)
            w2_signed = planner.record(["plan"])
            assert _status_of(await w2.request(Register(
                transaction_id=101, record=w2_signed, lease=60, nonce=os.urandom(16),
                timestamp=now_ms()))) is ErrorCode.SUCCESS
            for msg, code in (
                    (Refresh(transaction_id=102, agent_id=planner.agent_id, lease=60,
                             nonce=os.urandom(16), timestamp=now_ms() - 3_600_000),
                     ErrorCode.STALE_TIMESTAMP),
                    (Discover(transaction_id=103, query=DiscoveryQuery(skills=("forecast",)),
                              scope=Scope.LOCAL, max_results=3,
                              source_agent=weather.agent_id), ErrorCode.IDENTITY_MISMATCH)):
                assert _status_of(await w2.request(msg)) is code
            forger = await raw(a_addr, IMPOSTOR_2)
            assert _status_of(await forger.request(Register(
                transaction_id=104, record=_forged(dom_a.agent(
                    "mallory", a_addr, transport="udp", lab=True).record(["x"])),
                lease=60, nonce=os.urandom(16), timestamp=now_ms()))) is ErrorCode.BAD_SIGNATURE
            forger.send(Open(transaction_id=105, gateway_id=bytes(range(16)),
                             domain="c.example", hold_time=90, capabilities=0))
            await settle()
    finally:
        for conn in raws:
            conn.close()
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)
        await gw_a.stop()
        await gw_b.stop()
    return {"gw-a": gw_a.addresses["udp"], "gw-b": b_addr}


def _decoded(payload: bytes) -> Message | None:
    from dmscproto.codec import DecodeError, decode
    try:
        return decode(payload)
    except DecodeError:
        return None


def _status_of(msg: Message) -> ErrorCode | None:
    status = getattr(msg, "status", None)
    return status if isinstance(status, ErrorCode) else None


def record_lab(directory: Path) -> None:
    """Record every lab capture of :data:`FLOWS` from real lab-mode gateways, and
    rewrite the loopback addresses to the documentation ones (module docstring)."""
    from dmscproto.analysis.pcap import read_udp
    rec = Recording()
    with tempfile.TemporaryDirectory() as tmp:
        raw_pcap = Path(tmp) / "all.pcap"
        with PcapWriter(raw_pcap) as pcap:
            gateways = asyncio.run(_record(Path(tmp), pcap, rec))
        packets = list(read_udp(raw_pcap))
    roles = {gateways["gw-a"]: GW_A, gateways["gw-b"]: GW_B}
    for pkt in packets:  # a gateway dials its peer from a socket of its own
        msg = _decoded(pkt.payload)
        if isinstance(msg, Open) and msg.domain in ("a.example", "b.example"):
            roles.setdefault((pkt.src[0], pkt.src[1]),
                             GW_A if msg.domain == "a.example" else GW_B)
    gateway_ends = set(roles)
    clients = iter(rec.clients)
    kept: list[tuple[float, Address, Address, bytes]] = []
    for pkt in packets:
        src, dst = (pkt.src[0], pkt.src[1]), (pkt.dst[0], pkt.dst[1])
        for end in (src, dst):
            if end not in roles:
                roles[end] = next(clients)
        both = src in gateway_ends and dst in gateway_ends
        if both and any(k[1:] == (roles[src], roles[dst], pkt.payload)
                        and pkt.time - k[0] < 0.05 for k in kept[-8:]):
            continue  # the same datagram, written by the sender and by the receiver
        kept.append((pkt.time, roles[src], roles[dst], pkt.payload))
    t0 = kept[0][0]
    for f in FLOWS:
        with PcapWriter(directory / f.name) as out:
            for when, src, dst, payload in kept:
                if _in_flow(f.name, rec, when, src, dst, payload):
                    out.write_udp(src, dst, payload, NOW_S + round(when - t0, 6))


def _in_flow(name: str, rec: Recording, when: float, src: Address, dst: Address,
             payload: bytes) -> bool:
    gateways = (GW_A, GW_B)
    session = src in gateways and dst in gateways and len(payload) >= HEADER_SIZE \
        and payload[1] in {int(t) for t in SESSION_TYPES}
    if name == "lab-peering.pcap":
        return session
    return not session and any(a <= when <= b for a, b in rec.windows.get(name, []))


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


# --- README -----------------------------------------------------------------------------
README_HEAD = """\
# pcap-fixtures: reference captures of DMSC

Generated by `tools/gen_fixtures.py` (do not edit by hand; `--check` verifies this
README against the captures).

**Lab UDP captures (`lab-*.pcap`) are recorded from real gateways**: `tools/gen_fixtures.py
--record` runs two lab-mode gateways (`dmscproto.runtime.gateway.GatewayRuntime`, domains
`a.example` and `b.example`, peered over cleartext UDP, draft Section 9.4) and their agents
(the SDK, and raw lab clients for one-shot requests, refusals and damaged PDUs) on
loopback, with the gateways writing every datagram they send and receive.  Each capture
is the part of that recording in which its flow ran (session messages between the
gateways all go to `lab-peering.pcap`), with two changes: the loopback addresses and
ephemeral ports are replaced by documentation ones (RFC 5737), and times start at
2026-09-21T12:26:40Z, keeping the recorded intervals.  The PDUs are the octets the
gateways and agents sent, so every recording differs (keys, nonces, timestamps,
transaction ids); `tests/test_fixtures.py` checks each capture against the draft's rules.

Addresses: domain `a.example` is `192.0.2.0/24` (gateway `192.0.2.1`, weather agent `.10`,
planner agent `.11` and `.12`, an impostor `.66` and `.67`, a one-shot client `.99`, the
sender of damaged PDUs `.98`), domain `b.example` is `198.51.100.0/24` (gateway
`198.51.100.1`, translator agent `.20`, a one-shot client `.99`).  Gateways use UDP port
{port}, agents ephemeral ports.

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


def readme(directory: Path, quic: list[QuicCapture]) -> str:
    """README.md for the lab captures in ``directory`` (each datagram decoded) and the
    QUIC captures present."""
    from dmscproto.analysis.pcap import read_udp
    from dmscproto.codec import DecodeError, decode
    parts = [README_HEAD.format(port=UDP_PORT)]
    for flow in FLOWS:
        parts.append(f"\n### `{flow.name}`: {flow.title}\n\n{flow.description}\n\n")
        parts.append("| # | from | to | message |\n|---|---|---|---|\n")
        for i, pkt in enumerate(read_udp(directory / flow.name), 1):
            try:
                msg = decode(pkt.payload)
            except DecodeError as exc:
                what = f"damaged {_header_text(pkt.payload)}: {exc.code.name}"
            else:
                what = f"{msg.TYPE.name} txid={msg.transaction_id}" + _status(msg)
                if msg.flags & Flags.RETRANSMISSION:
                    what += " (RETRANSMISSION)"
            parts.append(f"| {i} | {pkt.src[0]}:{pkt.src[1]} | {pkt.dst[0]}:{pkt.dst[1]} "
                         f"| {what} |\n")
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
def check() -> list[str]:
    """Names of the files that are missing or stale: README.md must be what the
    committed captures give."""
    missing = [f.name for f in FLOWS if not (FIXTURES / f.name).exists()]
    if missing:
        return missing
    fresh = readme(FIXTURES, quic_captures_present(FIXTURES))
    readme_path = FIXTURES / "README.md"
    return [] if readme_path.exists() and readme_path.read_text() == fresh else ["README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a capture is missing or README.md is stale")
    parser.add_argument("--record", action="store_true",
                        help="record the lab captures again from real lab-mode gateways")
    parser.add_argument("--quic", action="store_true",
                        help="also record the QUIC captures and key logs again")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for name in stale:
            print(f"stale: pcap-fixtures/{name} (run tools/gen_fixtures.py)", file=sys.stderr)
        return 1 if stale else 0
    if args.record:
        record_lab(FIXTURES)
    if args.quic:
        record_quic(FIXTURES)
    (FIXTURES / "README.md").write_text(readme(FIXTURES, quic_captures_present(FIXTURES)))
    print("pcap-fixtures/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
