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

What each capture holds and the README text are in ``fixture_catalogue.py``; the damaged
PDUs of the errors capture in ``fixture_damage.py``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixture_catalogue import FLOWS, QUIC_CAPTURES, QuicCapture, readme
from fixture_damage import damaged_requests, forged

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
    Refresh,
    Register,
    Result,
    RouteRequest,
    Scope,
    encode,
)
from dmscproto.codec.registry import (
    HEADER_SIZE,
    SESSION_MESSAGES,
    UDP_PORT,
    Flags,
)
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


#: Session messages between the two gateways go to the peering capture, whenever sent.
#: The messages of a peer session, all of which go to lab-peering.pcap.
SESSION_TYPES = SESSION_MESSAGES


@dataclass
class Recording:
    """What the recording learned: when each flow ran, and which client address stands
    for which documentation address (clients are created, and first send, in order)."""

    windows: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    clients: list[Address] = dataclasses.field(default_factory=list)


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
                for pdu in damaged_requests():
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
                transaction_id=104, record=forged(dom_a.agent(
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
