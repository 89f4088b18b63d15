"""DMSC over DTLS 1.2 (draft-dmsc-protocol-00, Section 9.2): real handshakes on loopback
and in memory, mutual authentication, stateless cookies, loss through the relay."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from OpenSSL import SSL
from transport_support import Pki, echo, fast_retransmission, reply_to, run

from dmscproto.analysis.pcap import PcapWriter, read_udp
from dmscproto.codec.messages import EchoReply, EchoRequest, Error, Message
from dmscproto.codec.registry import ANSWER_TO, ErrorCode, MessageType
from dmscproto.security.ca import Credential, Kind
from dmscproto.testing.examples import by_type, examples
from dmscproto.transport import dtls
from dmscproto.transport.channel import ChannelEvent, PeerClosed, PeerConnected
from dmscproto.transport.datagram import PeerInfo
from dmscproto.transport.dtls import _RECORD_HEADER, DtlsEndpoint, p256_identity
from dmscproto.transport.errors import TransportError
from dmscproto.transport.reliability import PduTooLarge
from dmscproto.transport.tls import TlsIdentity
from interop.relay import Impairment, Relay

LOOPBACK = "127.0.0.1"
EX = examples()


@pytest.fixture(scope="module")
def pki(pki: Pki) -> Pki:
    """The shared PKI with an ECDSA P-256 gateway: a DTLS server needs one (Section 9.2)."""
    return replace(pki, gateway=p256_identity(pki.ca, "gw1", Kind.GATEWAY))


async def echo_handler(msg: Message, peer: PeerInfo) -> Message:
    assert isinstance(msg, EchoRequest)
    return reply_to(msg)


# --- in memory: the sans-I/O endpoint ----------------------------------------------------
def pump(a: DtlsEndpoint, a_addr: tuple[str, int], b: DtlsEndpoint, b_addr: tuple[str, int],
         now: float = 0.0) -> tuple[list[Any], list[Any]]:
    """Exchange datagrams until both ends are quiet; the events of each end."""
    ev_a: list[Any] = []
    ev_b: list[Any] = []
    for _ in range(20):
        moved = False
        for src, src_addr, dst in ((a, a_addr, b), (b, b_addr, a)):
            for data, _to in src.datagrams_to_send(now):
                dst.receive_datagram(data, src_addr, now)
                moved = True
        for ep, evs in ((a, ev_a), (b, ev_b)):
            while (ev := ep.next_event()) is not None:
                evs.append(ev)
        if not moved:
            break
    return ev_a, ev_b


CLIENT, SERVER = ("192.0.2.1", 5000), ("192.0.2.2", 4760)


def drain(endpoint: DtlsEndpoint) -> list[ChannelEvent]:
    return list(iter(endpoint.next_event, None))


def test_sans_io_handshake_and_one_pdu_per_record(pki: Pki) -> None:
    server = DtlsEndpoint(pki.gateway, is_client=False)
    client = DtlsEndpoint(pki.agent, is_client=True)
    client.connect(SERVER, 0.0)
    ev_c, ev_s = pump(client, CLIENT, server, SERVER)
    assert [type(e) for e in ev_c] == [PeerConnected]
    assert [type(e) for e in ev_s] == [PeerConnected]
    assert ev_c[0].identity.uri == "dmsc://a.example/gw1"
    assert ev_s[0].identity.uri == "dmsc://a.example/agent1"
    assert ev_s[0].identity.entity_id == pki.agent.identity.entity_id
    assert server.hello_verify_requests == 1  # the cookie exchange happened first
    client.send(SERVER, b"one")
    client.send(SERVER, b"two")
    out = client.datagrams_to_send(0.0)
    assert len(out) == 2  # one record, one datagram each
    for data, _ in out:
        server.receive_datagram(data, CLIENT, 0.0)
    assert [getattr(e, "data", None) for e in drain(server)] == [b"one", b"two"]
    with pytest.raises(PduTooLarge):
        client.send(SERVER, bytes(client.max_pdu + 1))
    assert client.max_pdu == 1200 - dtls.RECORD_OVERHEAD
    client.send(SERVER, bytes(client.max_pdu))
    [(data, _)] = client.datagrams_to_send(0.0)
    assert len(data) <= 1200
    # handshake datagrams stayed within the limit too (checked on a fresh pair)
    c2, s2 = DtlsEndpoint(pki.agent, is_client=True), DtlsEndpoint(pki.gateway, is_client=False)
    c2.connect(SERVER, 0.0)
    sizes = []
    for _ in range(6):
        for src, src_addr, dst in ((c2, CLIENT, s2), (s2, SERVER, c2)):
            for d, _to in src.datagrams_to_send(0.0):
                sizes.append(len(d))
                dst.receive_datagram(d, src_addr, 0.0)
    assert c2.sessions[SERVER].established and max(sizes) <= 1200


def test_late_copy_of_client_hello_keeps_the_association(pki: Pki) -> None:
    server = DtlsEndpoint(pki.gateway, is_client=False)
    client = DtlsEndpoint(pki.agent, is_client=True)
    client.connect(SERVER, 0.0)
    [(hello, _)] = client.datagrams_to_send(0.0)
    server.receive_datagram(hello, CLIENT, 0.0)
    [(hvr, _)] = server.datagrams_to_send(0.0)
    client.receive_datagram(hvr, SERVER, 0.0)
    [(hello_with_cookie, _)] = client.datagrams_to_send(0.0)
    server.receive_datagram(hello_with_cookie, CLIENT, 0.0)
    pump(client, CLIENT, server, SERVER)
    session = server.sessions[CLIENT]
    assert session.established
    for late in (hello, hello_with_cookie):  # duplicated and delayed by the network
        server.receive_datagram(late, CLIENT, 1.0)
    assert server.sessions[CLIENT] is session and drain(server) == []
    for data, _ in server.datagrams_to_send(1.0):  # at most a stateless HelloVerifyRequest
        client.receive_datagram(data, SERVER, 1.0)
    assert drain(client) == []
    client.send(SERVER, b"still here")
    for data, _ in client.datagrams_to_send(1.0):
        server.receive_datagram(data, CLIENT, 1.0)
    assert [getattr(e, "data", None) for e in drain(server)] == [b"still here"]
    # a new handshake from the same address (the client restarted) replaces it
    restarted = DtlsEndpoint(pki.agent, is_client=True)
    restarted.connect(SERVER, 2.0)
    _ev_c, ev_s = pump(restarted, CLIENT, server, SERVER, now=2.0)
    assert [type(e) for e in ev_s] == [PeerClosed, PeerConnected]
    assert server.sessions[CLIENT] is not session


def test_spoofed_client_hello_flood_creates_no_state(pki: Pki) -> None:
    server = DtlsEndpoint(pki.gateway, is_client=False)
    client = DtlsEndpoint(pki.agent, is_client=True)
    client.connect(SERVER, 0.0)
    [(hello, _)] = client.datagrams_to_send(0.0)
    n = 500
    for i in range(n):
        spoofed = (f"198.51.{i // 250}.{i % 250}", 1024 + i)
        server.receive_datagram(hello, spoofed, 0.0)
    assert len(server.sessions) == 0
    assert server.next_event() is None
    assert server.get_timer() is None
    out = server.datagrams_to_send(0.0)
    assert len(out) == n and server.hello_verify_requests == n  # one HelloVerifyRequest each
    assert all(len(d) < 2 * len(hello) for d, _ in out)  # no amplification
    # a cookie for one address is worthless from another
    hvr = next(d for d, to in out if to == ("198.51.0.0", 1024))
    client.receive_datagram(hvr, SERVER, 0.0)
    [(hello2, _)] = client.datagrams_to_send(0.0)
    server.receive_datagram(hello2, ("198.51.0.1", 1025), 0.0)
    assert len(server.sessions) == 0
    # the genuine client still gets in
    server.receive_datagram(hello2, ("198.51.0.0", 1024), 0.0)
    assert len(server.sessions) == 1


def test_lost_client_hello_is_sent_again_on_openssl_timer(pki: Pki) -> None:
    """OpenSSL's DTLS timer reads the real clock (module docstring): wait it out once.
    The new ClientHello comes from a fresh SSL object (record sequence 0), which avoids
    OpenSSL's replay-window stall after a retransmitted first ClientHello."""
    server = DtlsEndpoint(pki.gateway, is_client=False)
    client = DtlsEndpoint(pki.agent, is_client=True)
    client.connect(SERVER, 0.0)
    [(lost, _)] = client.datagrams_to_send(0.0)
    at = client.get_timer()
    assert at is not None and 0.0 < at <= 1.0  # OpenSSL's initial DTLS timeout
    time.sleep(at + 0.05)
    client.handle_timer(at)
    [(again, _)] = client.datagrams_to_send(at)
    assert again[_RECORD_HEADER] == 1 and again != lost  # a new ClientHello
    assert again[3:11] == bytes(8)  # epoch 0, record sequence 0
    server.receive_datagram(again, CLIENT, at)
    ev_c, ev_s = pump(client, CLIENT, server, SERVER, now=at)
    assert [type(e) for e in ev_c] == [PeerConnected] == [type(e) for e in ev_s]


def test_handshake_timeout_idle_timeout_and_session_limit(pki: Pki) -> None:
    lonely = DtlsEndpoint(pki.agent, is_client=True, handshake_timeout=2.0)
    lonely.connect(SERVER, 0.0)
    lonely.datagrams_to_send(0.0)  # the ClientHello goes nowhere
    timer = lonely.get_timer()
    assert timer is not None and timer <= 2.0  # OpenSSL's retransmission timer or ours
    lonely.handle_timer(2.0)
    [event] = drain(lonely)
    assert isinstance(event, PeerClosed) and event.code is ErrorCode.TARGET_UNREACHABLE
    assert lonely.sessions == {}

    server = DtlsEndpoint(pki.gateway, is_client=False, idle_timeout=30.0, max_sessions=1)
    client = DtlsEndpoint(pki.agent, is_client=True, idle_timeout=1000.0)
    client.connect(SERVER, 0.0)
    pump(client, CLIENT, server, SERVER)
    other = DtlsEndpoint(pki.agent, is_client=True)
    other.connect(SERVER, 0.0)
    _, ev_s = pump(other, ("192.0.2.9", 9), server, SERVER)
    assert ev_s == [] and len(server.sessions) == 1  # over the limit: ignored
    assert server.get_timer() == pytest.approx(30.0)
    server.handle_timer(30.0)  # idle: close_notify to the client
    ev_c, ev_s = pump(client, CLIENT, server, SERVER, now=30.0)
    assert [type(e) for e in ev_s] == [PeerClosed] and server.sessions == {}
    assert [type(e) for e in ev_c] == [PeerClosed] and client.sessions == {}


def test_client_without_certificate_refused(pki: Pki) -> None:
    server = DtlsEndpoint(pki.gateway, is_client=False)
    ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    bare = SSL.Connection(ctx, None)
    bare.set_connect_state()
    failed = False
    for _ in range(6):
        try:
            bare.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            failed = True
            break
        while True:
            try:
                server.receive_datagram(bare.bio_read(65536), CLIENT, 0.0)
            except SSL.WantReadError:
                break
        for data, _ in server.datagrams_to_send(0.0):
            bare.bio_write(data)
    [event] = drain(server)
    assert failed
    assert isinstance(event, PeerClosed) and event.code is ErrorCode.UNTRUSTED_CERTIFICATE
    assert server.sessions == {}


def test_peer_without_dmsc_alpn_refused(pki: Pki) -> None:
    server = DtlsEndpoint(pki.gateway, is_client=False)
    client = DtlsEndpoint(pki.agent, is_client=True)
    client._context.set_alpn_protos([b"h2"])  # not dmsc/1
    client.connect(SERVER, 0.0)
    ev_c, ev_s = pump(client, CLIENT, server, SERVER)
    assert [type(e) for e in ev_s] == [PeerClosed]
    assert ev_s[0].code is ErrorCode.UNEXPECTED_MESSAGE and server.sessions == {}
    assert not any(isinstance(e, PeerConnected) for e in ev_c) and client.sessions == {}


def test_ed25519_server_certificate_is_refused_up_front(pki: Pki) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    gw = TlsIdentity(Credential(pki.ca.issue("gw-ed", Kind.GATEWAY,
                                             public_key=key.public_key()).certificate, key),
                     pki.ca.trust_store)
    with pytest.raises(ValueError, match="P-256"):
        DtlsEndpoint(gw, is_client=False)


# --- on loopback --------------------------------------------------------------------------
def test_handshake_with_mutual_authentication(pki: Pki) -> None:
    async def main() -> None:
        seen: list[PeerInfo] = []

        async def handler(msg: Message, peer: PeerInfo) -> Message:
            seen.append(peer)
            return await echo_handler(msg, peer)
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, handler)
        conn = await dtls.connect(LOOPBACK, server.address[1], pki.agent,
                                  expect_domain="a.example")
        try:
            assert conn.peer.identity is not None
            assert conn.peer.identity.uri == "dmsc://a.example/gw1"
            assert conn.peer.certificate == pki.gateway.credential.certificate
            answer = await conn.request(echo(1, payload=b"hi"))
            assert isinstance(answer, EchoReply) and answer.payload == b"hi"
            assert seen[0].identity is not None
            assert seen[0].identity.uri == "dmsc://a.example/agent1"
            assert server.peers[pki.agent.identity.entity_id] is seen[0].connection
        finally:
            conn.close()
            await asyncio.wait_for(seen[0].connection.wait_closed(), 2)  # close_notify
            assert server.connections == {}
            server.close()
    run(main())


@pytest.mark.security
def test_client_certificate_from_untrusted_authority_refused(pki: Pki) -> None:
    async def main() -> None:
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, echo_handler)
        try:
            with pytest.raises(TransportError) as info:
                await dtls.connect(LOOPBACK, server.address[1], pki.other_agent, timeout=3)
            assert info.value.code is ErrorCode.UNTRUSTED_CERTIFICATE
            assert isinstance(server.channel, DtlsEndpoint)
            assert server.connections == {} and server.channel.sessions == {}
        finally:
            server.close()
    run(main())


@pytest.mark.security
def test_client_refuses_server_of_unexpected_domain(pki: Pki) -> None:
    async def main() -> None:
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, echo_handler)
        try:
            with pytest.raises(TransportError) as info:
                await dtls.connect(LOOPBACK, server.address[1], pki.agent,
                                   expect_domain="b.example", timeout=3)
            assert info.value.code is ErrorCode.UNTRUSTED_CERTIFICATE
        finally:
            server.close()
    run(main())


def test_example_requests_answered_over_dtls(pki: Pki) -> None:
    types = by_type()

    async def handler(msg: Message, peer: PeerInfo) -> Message:
        return EX[types[ANSWER_TO[msg.TYPE]][0]]

    async def main() -> None:
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, handler)
        conn = await dtls.connect(LOOPBACK, server.address[1], pki.agent)
        try:
            for request_type in ANSWER_TO:
                for name in types[request_type]:
                    answer = await conn.request(EX[name])
                    assert answer.TYPE is ANSWER_TO[request_type]
                    assert answer.transaction_id == EX[name].transaction_id
            with pytest.raises(PduTooLarge):
                await conn.request(echo(1, payload=bytes(1500)))
        finally:
            conn.close()
            server.close()
    run(main())


def test_too_large_answer_becomes_error(pki: Pki) -> None:
    async def handler(msg: Message, peer: PeerInfo) -> Message:
        return EchoReply(sequence=1, timestamp=0, gateway_id=bytes(16), payload=bytes(4000))

    async def main() -> None:
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, handler)
        conn = await dtls.connect(LOOPBACK, server.address[1], pki.agent)
        try:
            answer = await conn.request(echo(1))
            assert isinstance(answer, Error) and answer.status is ErrorCode.PDU_TOO_LARGE
            assert answer.offending_type == MessageType.ECHO_REPLY
        finally:
            conn.close()
            server.close()
    run(main())


def test_server_sends_request_over_client_association(pki: Pki) -> None:
    async def main() -> None:
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, echo_handler)
        conn = await dtls.connect(LOOPBACK, server.address[1], pki.agent, handler=echo_handler)
        try:
            back = server.peers[pki.agent.identity.entity_id]
            answer = await back.request(echo(7, payload=b"to the agent"))
            assert isinstance(answer, EchoReply) and answer.sequence == 7
        finally:
            conn.close()
            server.close()
    run(main())


def test_lossy_path_all_requests_complete_once(pki: Pki) -> None:
    """10 % loss, reordering and duplication in both directions, through the relay: the
    handshake and N concurrent requests complete, and the handler runs once per request.
    The requester's retransmission timers are shortened (and its limit raised) so that the
    test is fast and a run of unlucky losses cannot fail it; the schedule itself is
    tested with the registry values in test_transport_datagram.py."""
    n = 30

    async def main() -> None:
        calls: Counter[int] = Counter()

        async def handler(msg: Message, peer: PeerInfo) -> Message:
            calls[msg.transaction_id] += 1
            await asyncio.sleep(0.005)  # duplicates can arrive while this one is processed
            return await echo_handler(msg, peer)
        server = await dtls.serve(LOOPBACK, 0, pki.gateway, handler)
        relay = await Relay.start((LOOPBACK, 0), server.address, Impairment(
            loss=0.1, duplicate=0.1, reorder=0.1, delay_ms=1, jitter_ms=1, seed=11))
        conn = None
        for _attempt in range(3):  # OpenSSL's handshake timer starts at 1 s and doubles
            with contextlib.suppress(TransportError):
                conn = await dtls.connect(*relay.address, pki.agent, timeout=10,
                                          reliability=fast_retransmission())
                break
        assert conn is not None
        try:
            answers = await asyncio.gather(*(conn.request(echo(i, txid=i))
                                             for i in range(1, n + 1)))
        finally:
            conn.close()
            relay.close()
            server.close()
        assert [a.sequence for a in answers] == list(range(1, n + 1))  # type: ignore[attr-defined]
        assert sum(calls.values()) == n and set(calls) == set(range(1, n + 1))
        assert conn.node.reliability.counters.retransmissions > 0
        c = relay.counters
        assert c.up.dropped + c.down.dropped > 0
        assert c.up.duplicated + c.down.duplicated > 0
        assert c.up.reordered + c.down.reordered > 0
    asyncio.run(asyncio.wait_for(main(), 60))


def test_keylog_and_pcap(pki: Pki, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    pcap_path = tmp_path / "dtls.pcap"

    async def main() -> None:
        with PcapWriter(pcap_path) as pcap:
            server = await dtls.serve(LOOPBACK, 0, pki.gateway, echo_handler)
            conn = await dtls.connect(LOOPBACK, server.address[1], pki.agent, keylog=keylog,
                                      pcap=pcap)
            await conn.request(echo(1))
            conn.close()
            server.close()
    run(main())
    lines = keylog.read_text().splitlines()
    assert lines and all(line.startswith("CLIENT_RANDOM ") for line in lines)
    packets = list(read_udp(pcap_path))
    assert packets and packets[0].payload[0] == 22  # a DTLS handshake record first
    assert any(p.payload[0] == 23 for p in packets)  # application data
