"""DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1): real handshakes on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import re
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from conftest import require_tool
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from transport_support import Pki, loop_turns

from dmscproto.analysis.pcap import PcapWriter, read_udp
from dmscproto.codec.errors import DecodeError
from dmscproto.codec.messages import EchoReply, EchoRequest, Error, Message, RouteReply, Update
from dmscproto.codec.pdu import encode
from dmscproto.codec.registry import ALPN, ErrorCode, MessageType
from dmscproto.codec.signing import entity_id
from dmscproto.codec.wire import Advertisement
from dmscproto.runtime import loop as loops
from dmscproto.security.ca import Kind, TrustStore
from dmscproto.testing import examples, flood
from dmscproto.testing.harness import make_record
from dmscproto.transport import (
    ConnectionClosed,
    ConnectionPool,
    DmscConnection,
    PeerInfo,
    QuicServer,
    TlsIdentity,
    TransportError,
    connect,
    serve,
)
from dmscproto.transport.driver import turn_budget
from dmscproto.transport.framing import StreamAssembler, header_of, whole
from dmscproto.transport.quic import QuicLimits, streams
from dmscproto.transport.tls import DmscQuicConnection

LOOPBACK = "127.0.0.1"


class Recorder:
    """A request handler that echoes requests and remembers who sent what."""

    def __init__(self, respond: Callable[[Message], Awaitable[Message | None]] | None = None):
        self.calls: list[tuple[Message, PeerInfo]] = []
        self._respond = respond

    async def __call__(self, msg: Message, peer: PeerInfo) -> Message | None:
        self.calls.append((msg, peer))
        return await self._respond(msg) if self._respond else msg


@asynccontextmanager
async def server(tls: TlsIdentity, handler: Any, **kw: Any) -> AsyncIterator[QuicServer]:
    srv = await serve(LOOPBACK, 0, tls, handler, **kw)
    try:
        yield srv
    finally:
        srv.close()


@asynccontextmanager
async def client(srv: QuicServer, tls: TlsIdentity,
                 **kw: Any) -> AsyncIterator[DmscConnection]:
    conn = await connect(LOOPBACK, srv.address[1], tls, **kw)
    try:
        yield conn
    finally:
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 2)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 15))


def test_examples_round_trip(pki: Pki) -> None:
    names = ["register", "discover", "route-request", "open", "update", "digest",
             "trace-request", "route-reply-with-extension", "discover-reply-translator"]
    ex = examples.examples()

    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv, client(srv, pki.agent) as conn:
            for name in names:
                assert await conn.request(ex[name]) == ex[name], name
        assert [m for m, _ in handler.calls] == [ex[n] for n in names]
    run(main())


def test_concurrent_requests_on_one_connection(pki: Pki) -> None:
    async def reply(msg: Message) -> Message:
        assert isinstance(msg, EchoRequest)
        await asyncio.sleep(0.01 * (msg.sequence % 3))  # answers complete out of order
        return EchoReply(transaction_id=msg.transaction_id, sequence=msg.sequence,
                         timestamp=msg.timestamp, gateway_id=bytes(16),
                         payload=msg.payload)

    async def main() -> None:
        handler = Recorder(reply)
        async with server(pki.gateway, handler) as srv, client(srv, pki.agent) as conn:
            requests = [EchoRequest(transaction_id=1000 + i, sequence=i, timestamp=i,
                                    payload=bytes([i]) * 100) for i in range(32)]
            replies = await asyncio.gather(*(conn.request(r) for r in requests))
        for req, rep in zip(requests, replies, strict=True):
            assert isinstance(rep, EchoReply)
            assert (rep.transaction_id, rep.sequence, rep.payload) == (
                req.transaction_id, req.sequence, req.payload)
        assert len(handler.calls) == 32
        assert len({id(peer.connection) for _, peer in handler.calls}) == 1
    run(main())


def test_requests_on_uvloop(pki: Pki) -> None:
    """On uvloop too (runtime.loop.run): a client sends on its connected socket without
    an address (uvloop refuses a send with one, EISCONN: no handshake completed, where
    asyncio allows it)."""
    async def main() -> None:
        async with server(pki.gateway, Recorder()) as srv, client(srv, pki.agent) as conn:
            request = EchoRequest(transaction_id=1, sequence=1, timestamp=0, payload=b"x")
            assert await conn.request(request) == request
    loops.run(asyncio.wait_for(main(), 15), "uvloop")


def test_a_servers_answer_leaves_in_the_turn_its_request_was_read_in(pki: Pki) -> None:
    """The server's reader (its drain, on asyncio's loop) holds the end of turn while a
    connection processes a datagram: the transmit a handler's immediate answer asks for
    runs when the connection is done with it, in that event-loop turn, not in a loop
    callback of its own one turn later."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        now = loop_turns(loop)
        handled: list[int] = []
        sent: list[int] = []

        def answer(msg: Message, peer: PeerInfo) -> asyncio.Future[Message]:
            handled.append(now())
            done: asyncio.Future[Message] = loop.create_future()
            done.set_result(msg)
            return done

        async with server(pki.gateway, answer) as srv, client(srv, pki.agent) as conn:
            drain = srv._drain  # the loop's reader of the server's socket (Drain.install)
            assert drain is not None
            key = loop._selector.get_key(drain._fd)  # type: ignore[attr-defined]
            assert key.data[0]._callback == drain.read
            request = EchoRequest(transaction_id=1, sequence=1, timestamp=0, payload=b"x")
            assert await conn.request(request) == request
            [served] = srv.peers.values()
            transmit = served.transmit

            def counted() -> None:
                sent.append(now())
                transmit()
            served.transmit = counted  # type: ignore[method-assign]
            for i in range(3):
                handled[:], sent[:] = [], []
                assert await conn.request(replace(request, sequence=i)) == replace(
                    request, sequence=i)
                assert handled and sent and sent[0] == handled[0], (i, handled, sent)
    run(main())


def test_both_ends_see_verified_identities(pki: Pki) -> None:
    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv, \
                client(srv, pki.agent, server_name="localhost", expect_domain="a.example") as conn:
            await conn.request(examples.examples()["keepalive"])
            assert conn.peer is not None
            assert conn.peer.identity.uri == "dmsc://a.example/gw1"
            assert conn.peer.identity.kind is Kind.GATEWAY
            peer = handler.calls[0][1]
            agent_key = pki.agent.credential.private_key
            assert agent_key is not None
            assert peer.identity.uri == "dmsc://a.example/agent1"
            assert peer.identity.kind is Kind.AGENT
            assert peer.identity.entity_id == entity_id(agent_key.public_key())
            assert peer.certificate == pki.agent.credential.certificate
            assert peer.address[0].endswith(LOOPBACK)
            assert srv.peers == {peer.identity.entity_id: peer.connection}
            # TLS 1.3 really runs with an Ed25519 agent key and a P-256 gateway key.
            assert isinstance(agent_key, ed25519.Ed25519PrivateKey)
            assert isinstance(conn.peer.certificate.public_key(), ec.EllipticCurvePublicKey)
    run(main())


def refused(srv: QuicServer, tls: TlsIdentity, **kw: Any) -> Awaitable[DmscConnection]:
    return connect(LOOPBACK, srv.address[1], tls, timeout=3, **kw)


def test_client_from_untrusted_ca_refused(pki: Pki) -> None:
    intruder = TlsIdentity(pki.other_ca.issue("intruder", Kind.AGENT), pki.ca.trust_store)

    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv:
            with pytest.raises(ConnectionClosed) as info:
                await refused(srv, intruder)
            assert info.value.code is ErrorCode.UNTRUSTED_CERTIFICATE
            assert info.value.quic_error == 0x100 + 48  # CRYPTO_ERROR + unknown_ca
            assert not srv.peers
            async with client(srv, pki.agent) as conn:  # still serving
                await conn.request(examples.examples()["keepalive"])
        assert len(handler.calls) == 1
    run(main())


def test_expired_client_certificate_refused(pki: Pki) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    old = TlsIdentity(pki.ca.issue("old", Kind.AGENT, validity=dt.timedelta(days=1), now=past),
                      pki.ca.trust_store)

    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv:
            with pytest.raises(ConnectionClosed) as info:
                await refused(srv, old)
            assert info.value.code is ErrorCode.CERTIFICATE_EXPIRED
            assert info.value.quic_error == 0x100 + 45  # certificate_expired
        assert not handler.calls
    run(main())


async def raw_handshake(srv: QuicServer, configuration: QuicConfiguration,
                        tls: TlsIdentity) -> ConnectionClosed:
    """Handshake with a hand-made client configuration; return how it was refused."""
    loop = asyncio.get_running_loop()
    quic = DmscQuicConnection(configuration=configuration, verifier=tls.verifier())
    addr = (LOOPBACK, srv.address[1])
    transport, conn = await loop.create_datagram_endpoint(
        lambda: DmscConnection(quic, owns_transport=True), remote_addr=addr)
    conn.connect(addr)
    try:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(conn.wait_established(), 3)
    finally:
        transport.close()
    return info.value


def test_client_without_certificate_refused(pki: Pki) -> None:
    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv:
            no_cert = QuicConfiguration(alpn_protocols=[ALPN], is_client=True,
                                        verify_mode=ssl.CERT_NONE)
            refusal = await raw_handshake(srv, no_cert, pki.agent)
            assert refusal.quic_error == 0x100 + 116  # certificate_required
            assert not srv.peers
        assert not handler.calls
    run(main())


def test_client_with_other_alpn_refused(pki: Pki) -> None:
    async def main() -> None:
        async with server(pki.gateway, Recorder()) as srv:
            h3 = pki.agent.configuration(is_client=True)
            h3.alpn_protocols = ["h3"]
            refusal = await raw_handshake(srv, h3, pki.agent)
            assert refusal.quic_error == 0x100 + 120  # no_application_protocol
            async with client(srv, pki.agent) as conn:
                assert conn.quic.tls.alpn_negotiated == ALPN == "dmsc/1"
    run(main())


def test_keepalive_holds_idle_connection_open(pki: Pki) -> None:
    ka = examples.examples()["keepalive"]

    async def main() -> None:
        async with server(pki.gateway, Recorder(), idle_timeout=0.6) as srv, \
                client(srv, pki.agent, idle_timeout=0.6, keepalive=0.2) as kept, \
                client(srv, pki.agent, idle_timeout=0.6, keepalive=None) as idle:
            await asyncio.wait_for(idle.wait_closed(), 5)  # its idle timeout ran out
            assert not kept.closed  # kept alive through the same idle period
            assert await kept.request(ka) == ka
            with pytest.raises(ConnectionClosed):
                await idle.request(ka)
    run(main())


def test_client_refuses_server_of_unexpected_domain(pki: Pki) -> None:
    """A server with a valid certificate of another trusted domain is refused when the
    client expects its own domain (a gateway impersonating another domain's)."""
    federated = TrustStore([pki.ca.certificate, pki.other_ca.certificate])
    foreign_gw = TlsIdentity(pki.other_ca.issue("gw-b", Kind.GATEWAY), federated)
    agent = TlsIdentity(pki.agent.credential, federated)

    async def main() -> None:
        async with server(foreign_gw, Recorder()) as srv:
            with pytest.raises(ConnectionClosed) as info:
                await refused(srv, agent, expect_domain="a.example")
            assert info.value.quic_error == 0x100 + 42  # bad_certificate
            assert info.value.code is ErrorCode.IDENTITY_MISMATCH
            with pytest.raises(ConnectionClosed):
                await refused(srv, agent, server_name="gw1.a.example")
            async with client(srv, agent, expect_domain="b.example",
                              server_name="gw-b") as conn:
                assert conn.peer is not None and conn.peer.identity.domain == "b.example"
    run(main())


def header(mtype: int, length: int, txid: int, version: int = 1) -> bytes:
    return struct.pack(">BBHIQ", version, mtype, 0, length, txid)


def test_malformed_pdus_answered_with_error(pki: Pki) -> None:
    keepalive = encode(examples.examples()["keepalive"])
    cases = [
        (header(0x66, 16, 77), ErrorCode.UNKNOWN_MESSAGE_TYPE, 77, 0x66),
        (header(MessageType.KEEPALIVE, 16, 5, version=9), ErrorCode.UNSUPPORTED_VERSION, 5, None),
        (header(MessageType.KEEPALIVE, 40, 6) + bytes(4), ErrorCode.TRUNCATED, 6, None),
        (keepalive + b"junk", ErrorCode.TRAILING_DATA, 9, None),
        (header(MessageType.ERROR, 16, 8), ErrorCode.MISSING_TLV, 8, None),
        (header(MessageType.KEEPALIVE, 0x10000, 3), ErrorCode.PDU_TOO_LARGE, 3, None),
        (b"\x01\x31", ErrorCode.TRUNCATED, 0, None),
    ]

    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv, client(srv, pki.agent) as conn:
            for data, code, txid, offending in cases:
                answer = await conn.request_bytes(data, timeout=3)
                assert isinstance(answer, Error), data
                assert answer.status is code, (data, answer)
                if offending is not None:
                    assert answer.offending_type == offending
                if len(data) >= 16:
                    assert answer.transaction_id == txid
            assert await conn.request_bytes(keepalive) == examples.examples()["keepalive"]
        assert len(handler.calls) == 1  # only the well-formed request reached the handler
    run(main())


def test_handler_failures(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that fails is INTERNAL_ERROR, one that gives no answer a bare FIN, one
    that never answers a TRANSACTION_TIMEOUT: after the timeout given, by default the
    request's transaction time (Section 9.3; shortened here)."""
    monkeypatch.setattr(streams, "transaction_time_of", lambda msg: 0.2)

    async def respond(msg: Message) -> Message | None:
        if isinstance(msg, EchoRequest):
            if msg.sequence == 1:
                raise RuntimeError("boom")
            if msg.sequence == 2:
                return None
            await asyncio.Event().wait()  # never answers
        return msg

    def echo(seq: int) -> EchoRequest:
        return EchoRequest(transaction_id=seq, sequence=seq, timestamp=0)

    async def main() -> None:
        handler = Recorder(respond)
        async with server(pki.gateway, handler) as srv, client(srv, pki.agent) as conn:
            answer = await conn.request(echo(1))
            assert isinstance(answer, Error) and answer.status is ErrorCode.INTERNAL_ERROR
            assert answer.transaction_id == 1
            with pytest.raises(TransportError) as info:
                await conn.request(echo(2))
            assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE
            with pytest.raises(TransportError) as info:
                await conn.request(echo(3), timeout=0.2)
            assert info.value.code is ErrorCode.TRANSACTION_TIMEOUT
            with pytest.raises(TransportError) as info:
                await asyncio.wait_for(conn.request(echo(4)), 5)  # its transaction time
            assert info.value.code is ErrorCode.TRANSACTION_TIMEOUT
            conn.send(echo(2))  # one-way: no answer expected
            ka = examples.examples()["keepalive"]
            assert await conn.request(ka) == ka
        sequences = [m.sequence for m, _ in handler.calls if isinstance(m, EchoRequest)]
        assert sequences == [1, 2, 3, 4, 2]
    run(main())


def test_server_initiated_request_over_client_connection(pki: Pki) -> None:
    """A gateway forwards a ROUTE-REQUEST to an agent over the agent's own connection."""
    ex = examples.examples()

    async def agent_reply(msg: Message) -> Message:
        return RouteReply(transaction_id=msg.transaction_id, status=ErrorCode.SUCCESS,
                          payload=b"from the agent")

    async def main() -> None:
        agent_handler = Recorder(agent_reply)
        async with server(pki.gateway, Recorder()) as srv, \
                client(srv, pki.agent, handler=agent_handler) as conn:
            await conn.request(ex["keepalive"])
            to_agent = srv.peers[pki.agent.identity.entity_id]
            answers = await asyncio.gather(*(to_agent.request(replace(ex["route-request"],
                                                                      transaction_id=i))
                                             for i in range(5)))
            assert all(isinstance(a, RouteReply) for a in answers)
            assert [(a.transaction_id, getattr(a, "payload", None)) for a in answers
                    ] == [(i, b"from the agent") for i in range(5)]
            assert agent_handler.calls[0][1].identity.uri == "dmsc://a.example/gw1"
            assert conn.peer is not None
        # A client without a handler answers the server's requests with ERROR.
        async with server(pki.gateway, Recorder()) as srv, client(srv, pki.agent) as conn:
            await conn.request(ex["keepalive"])
            answer = await next(iter(srv.peers.values())).request(ex["route-request"])
            assert isinstance(answer, Error) and answer.status is ErrorCode.UNEXPECTED_MESSAGE
    run(main())


def test_connection_pool_reuses_connections(pki: Pki) -> None:
    async def main() -> None:
        handler = Recorder()
        async with server(pki.gateway, handler) as srv:
            pool = ConnectionPool(pki.agent)
            ka = examples.examples()["keepalive"]
            first, second = await asyncio.gather(pool.get(LOOPBACK, srv.address[1]),
                                                 pool.get(LOOPBACK, srv.address[1]))
            assert first is second
            assert await pool.request(LOOPBACK, srv.address[1], ka) == ka
            assert len(srv.peers) == 1
            first.close()
            await first.wait_closed()
            third = await pool.get(LOOPBACK, srv.address[1])
            assert third is not first and not third.closed
            await pool.close()
            assert third.closed
    run(main())


KEYLOG_LINE = re.compile(r"^(CLIENT_HANDSHAKE_TRAFFIC_SECRET|SERVER_HANDSHAKE_TRAFFIC_SECRET|"
                         r"CLIENT_TRAFFIC_SECRET_0|SERVER_TRAFFIC_SECRET_0) "
                         r"([0-9a-f]{64}) ([0-9a-f]{64}|[0-9a-f]{96})$")


def capture_session(pki: Pki, tmp_path: Path, msg: Message) -> tuple[int, Path, Path, Path]:
    """One request over a connection recorded at both ends, with a key log."""
    keylog = tmp_path / "keys.log"
    server_pcap, client_pcap = tmp_path / "server.pcap", tmp_path / "client.pcap"

    async def main() -> int:
        with PcapWriter(server_pcap) as spcap, PcapWriter(client_pcap) as cpcap:
            async with server(pki.gateway, Recorder(), pcap=spcap, keylog=keylog) as srv, \
                    client(srv, pki.agent, pcap=cpcap) as conn:
                await conn.request(msg)
                return srv.address[1]

    return asyncio.run(main()), keylog, server_pcap, client_pcap


def test_keylog_and_pcap(pki: Pki, tmp_path: Path) -> None:
    port, keylog, server_pcap, client_pcap = capture_session(
        pki, tmp_path, examples.examples()["register"])
    lines = keylog.read_text().splitlines()
    matches = [KEYLOG_LINE.match(line) for line in lines]
    assert all(matches), lines
    labels = {m.group(1) for m in matches if m}
    assert labels == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                      "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    assert len({m.group(2) for m in matches if m}) == 1  # one connection, one client random

    for path in (server_pcap, client_pcap):
        packets = list(read_udp(path))
        to_server = [p for p in packets if p.dst == (LOOPBACK, port)]
        from_server = [p for p in packets if p.src == (LOOPBACK, port)]
        assert to_server and from_server
        assert len(to_server) + len(from_server) == len(packets)
        first = to_server[0].payload
        assert first[0] & 0xF0 == 0xC0  # long header, Initial packet
        assert struct.unpack_from(">I", first, 1)[0] == 1  # QUIC version 1
        assert len(first) >= 1200
        assert all(b >= a for a, b in zip([p.time for p in packets], [p.time for p in packets][1:],
                                          strict=False))
    server_side = {(p.src, p.dst, p.payload) for p in read_udp(server_pcap)}
    client_side = {(p.src, p.dst, p.payload) for p in read_udp(client_pcap)}
    assert server_side & client_side  # the same datagrams, seen from both ends


def test_stream_assembler_reassembles_byte_by_byte() -> None:
    pdu = encode(examples.examples()["register"])
    asm = StreamAssembler()
    for i in range(len(pdu) - 1):
        assert asm.feed(pdu[i:i + 1], False) is None
    assert asm.header() == (MessageType.REGISTER, 1)
    assert asm.feed(pdu[-1:], True) == pdu
    assert StreamAssembler().feed(b"", True) == b""  # bare FIN: no response


@pytest.mark.parametrize(("chunks", "code"), [
    ([header(MessageType.KEEPALIVE, 16, 1) + b"x"], ErrorCode.TRAILING_DATA),
    ([header(MessageType.KEEPALIVE, 20, 1), b"ab"], ErrorCode.TRUNCATED),
    ([b"\x02\x31\x00\x00\x00\x00\x00\x10"], ErrorCode.UNSUPPORTED_VERSION),
])
def test_stream_assembler_errors(chunks: list[bytes], code: ErrorCode) -> None:
    asm = StreamAssembler()
    with pytest.raises(DecodeError) as info:
        for i, chunk in enumerate(chunks):
            asm.feed(chunk, i == len(chunks) - 1)
    assert info.value.code is code


@pytest.mark.parametrize("octets", [
    b"", b"\x01", header(MessageType.KEEPALIVE, 16, 1), header(MessageType.KEEPALIVE, 16, 1) + b"x",
    header(MessageType.KEEPALIVE, 20, 1) + b"ab", header(MessageType.KEEPALIVE, 8, 1)[:12],
    b"\x02\x31\x00\x00\x00\x00\x00\x10", header(MessageType.KEEPALIVE, 2**20, 1),
    encode(examples.examples()["register"])])
def test_a_pdu_in_one_piece_is_taken_as_the_assembler_takes_it(octets: bytes) -> None:
    """:func:`whole` (a stream direction's octets all at once, with FIN) gives what a
    new assembler fed them gives, or raises the same error; :func:`header_of` is the
    assembler's header."""
    asm = StreamAssembler()
    try:
        expected: bytes | ErrorCode = asm.feed(octets, True) or b""
    except DecodeError as exc:
        expected = exc.code
    try:
        got: bytes | ErrorCode = whole(octets)
    except DecodeError as exc:
        got = exc.code
    assert got == expected
    assert header_of(octets) == asm.header()


def test_large_pdu_spans_many_stream_frames(pki: Pki) -> None:
    big = EchoRequest(transaction_id=1, sequence=1, timestamp=0, payload=bytes(range(256)) * 250)

    async def main() -> None:
        async with server(pki.gateway, Recorder()) as srv, client(srv, pki.agent) as conn:
            assert len(encode(big)) > 60_000
            assert await conn.request(big) == big
    run(main())


def test_large_requests_are_decoded_a_step_a_turn(pki: Pki) -> None:
    """A request larger than 16 KiB is decoded a step (about 4 KiB of TLVs) at a time
    within the event loop's turn budget (TurnBudget), the rest in later turns: with no
    budget, a step a turn, so UPDATEs of 40 KB each sent at once (a bulk transfer's)
    reach the handler whole, each many turns after the one before, not together in
    one turn."""
    ads = tuple(Advertisement(1, (bytes(16),), make_record(i, f"agent{i}", "b.example"))
                for i in range(100))
    updates = [Update(transaction_id=70 + i, sequence=i, advertise=ads) for i in range(3)]
    assert all(len(encode(u)) > 40_000 for u in updates)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        turn_budget(loop).seconds = 0.0  # a turn runs one piece of such work
        turns = [0]

        def tick() -> None:  # counts the loop's turns
            turns[0] += 1
            loop.call_soon(tick)

        tick()
        seen: list[tuple[Message, int]] = []

        async def took(msg: Message) -> None:
            seen.append((msg, turns[0]))

        async with server(pki.gateway, Recorder(took)) as srv, \
                client(srv, pki.agent) as conn:
            for update in updates:
                conn.send(update)
            while len(seen) < 3:
                await asyncio.sleep(0.01)
        assert sorted(m.transaction_id for m, _ in seen) == [70, 71, 72]
        assert all(m == updates[m.transaction_id - 70] for m, _ in seen)
        at = [turn for _, turn in seen]
        assert all(b - a >= 40_000 // 4096 for a, b in itertools.pairwise(at)), at
    run(main())


def test_retry_and_capture_on_wildcard_address(pki: Pki, tmp_path: Path) -> None:
    """With retry the server answers a first Initial with a Retry packet and handshakes
    only with a client that echoes the token; a server bound to 0.0.0.0 records its
    loopback traffic as 127.0.0.1."""
    capture = tmp_path / "retry.pcap"

    async def main() -> int:
        with PcapWriter(capture) as pcap:
            srv = await serve("0.0.0.0", 0, pki.gateway, Recorder(), pcap=pcap,
                              limits=QuicLimits(retry_threshold=0))
            try:
                async with client(srv, pki.agent) as conn:
                    ka = examples.examples()["keepalive"]
                    assert await conn.request(ka) == ka
            finally:
                srv.close()
            return srv.address[1]

    port = asyncio.run(main())
    packets = list(read_udp(capture))
    from_server = [p for p in packets if p.src[1] == port]
    assert {p.src[0] for p in from_server} == {LOOPBACK}
    assert from_server[0].payload[0] & 0xF0 == 0xF0  # long header, Retry
    initials = [p for p in packets if p.dst[1] == port and p.payload[0] & 0xF0 == 0xC0]
    assert len(initials) >= 2  # the first one again, now with the token


def test_tshark_decrypts_capture_with_keylog(pki: Pki, tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    msg = examples.examples()["route-request"]
    port, keylog, server_pcap, _ = capture_session(pki, tmp_path, msg)
    out = subprocess.run(
        [tshark, "-r", str(server_pcap), "-o", f"tls.keylog_file:{keylog}",
         "-d", f"udp.port=={port},quic", "-Y", "quic.stream_data",
         "-T", "fields", "-e", "quic.stream_data"],
        capture_output=True, text=True, check=True, timeout=30).stdout.split()
    assert encode(msg).hex() in out  # the request, decrypted from the capture


# --- address validation and connection limits (Section 10.7) ----------------------------------
async def _settle(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


def _send_initials(srv: QuicServer, n: int) -> list[bytes]:
    """``n`` Initials of clients that never complete their handshake; the datagrams the
    server answered with."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.2)
    made = flood.initials(LOOPBACK, srv.address[1])
    try:
        for _ in range(n):
            sock.sendto(next(made), srv.address)
        answers = []
        with suppress(TimeoutError):
            while True:
                answers.append(sock.recv(65536))
        return answers
    finally:
        sock.close()


def test_retry_beyond_the_pending_threshold_and_pending_handshakes_expire(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """One handshake may be pending without Retry; the next client without a token gets
    a Retry packet and no state.  A handshake not completed in time is closed (and the
    server forgets it without an error), and a real client still connects (echoing its
    Retry token) meanwhile."""
    async def main() -> None:
        limits = QuicLimits(retry_threshold=1, handshake_timeout=0.5)
        async with server(pki.gateway, Recorder(), limits=limits) as srv:
            answers = await asyncio.to_thread(_send_initials, srv, 3)
            assert (srv.counters.accepted, srv.counters.retries) == (1, 2)
            retries = [a for a in answers if a[0] & 0xF0 == 0xF0]  # long header, Retry
            assert len(retries) == 2 and srv.pending == 1
            async with client(srv, pki.agent) as conn:  # through a Retry
                ka = examples.examples()["keepalive"]
                assert await conn.request(ka) == ka
            assert srv.counters.retries == 3
            await _settle(lambda: srv.connections == 0)
            assert srv.counters.expired == 1 and srv.pending == 0
    run(main())
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_handshakes_and_connections_beyond_the_caps_are_dropped(pki: Pki) -> None:
    """Beyond QUIC_MAX_PENDING (or the per-address cap, or the Retry rate of an address)
    an Initial is dropped: no connection state, no answer; one identity keeps at most
    QUIC_MAX_PER_IDENTITY connections, the oldest is closed."""
    async def main() -> None:
        limits = QuicLimits(retry_threshold=100, max_pending=2, max_per_identity=1,
                            handshake_timeout=0.6)
        async with server(pki.gateway, Recorder(), limits=limits) as srv:
            await asyncio.to_thread(_send_initials, srv, 5)
            assert (srv.counters.accepted, srv.counters.dropped) == (2, 3)
            assert srv.pending == 2
            await _settle(lambda: srv.connections == 0)
            async with client(srv, pki.agent) as first, client(srv, pki.agent) as second:
                await _settle(lambda: first.closed)
                assert srv.counters.evicted == 1
                ka = examples.examples()["keepalive"]
                assert await second.request(ka) == ka
        limits = QuicLimits(max_per_address=1, handshake_timeout=0.3)
        async with server(pki.gateway, Recorder(), limits=limits) as srv:
            await asyncio.to_thread(_send_initials, srv, 3)
            assert (srv.counters.accepted, srv.counters.dropped) == (1, 2)
        # an address that does not echo its Retry tokens gets QUIC_RETRY_RATE a second
        limits = QuicLimits(retry_threshold=0, retry_rate=2)
        async with server(pki.gateway, Recorder(), limits=limits) as srv:
            await asyncio.to_thread(_send_initials, srv, 5)
            assert srv.counters.retries + srv.counters.dropped == 5
            assert 2 <= srv.counters.retries <= 4  # 2 a second; the sending may span 2 s
            assert srv.connections == 0
    run(main())
