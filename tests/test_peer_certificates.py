"""The certificate exchange of a peer session (draft-dmsc-protocol-00, Section 6.10): a
certificate offered once per session before the first relayed request that needs it,
CERTIFICATE taken in OPEN_CONFIRM, and the size and rate limits a gateway puts on a
peer's CERTIFICATEs (Section 10.7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmscproto.codec.messages import Certificate, CertificateAck, Keepalive, Message, Open
from dmscproto.codec.registry import ErrorCode, limit
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.limits import RequestLimits
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.certificates import thumbprint
from dmscproto.protocol.machine import Handle, Outbox, Refusal, TransactionIds
from dmscproto.protocol.peering import LocalGateway, PeerSession, PeerState
from dmscproto.testing.harness import T0

ME, PEER = bytes([0xEE]) * 16, bytes([0x01]) * 16
DER = b"0\x82 a gateway certificate"  # the session keeps octets; the port checks them


@pytest.fixture
def node(tmp_path: Path) -> Iterator[GatewayNode]:
    core = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    yield GatewayNode(core, accept_certificate=lambda _h, der, _t: None if der == DER
                      else Refusal(ErrorCode.UNTRUSTED_CERTIFICATE, "not ours"))
    core.store.close()


def _session(node: GatewayNode, *, established: bool) -> tuple[PeerSession, Outbox]:
    """A session that answered the peer's OPEN (OPEN_CONFIRM), or was answered
    (ESTABLISHED)."""
    out = Outbox()
    node._out = out
    s = PeerSession(out, "peer", LocalGateway(ME, "a.example"), node, TransactionIds())
    if established:
        s.start(T0)
        [(_, mine)] = out.messages_to_send()
        s.receive(Open(transaction_id=mine.transaction_id, gateway_id=PEER,
                       domain="a.example", hold_time=90, capabilities=0), T0)
    else:
        s.receive(Open(transaction_id=9, gateway_id=PEER, domain="a.example",
                       hold_time=90, capabilities=0), T0)
    out.messages_to_send()
    return s, out


def _sent(out: Outbox, kind: type[Message]) -> list[Message]:
    return [m for _, m in out.messages_to_send() if isinstance(m, kind)]


def test_certificate_taken_in_open_confirm(node: GatewayNode) -> None:
    """The peer, established already, passes a certificate before its KEEPALIVE
    arrives: kept and acknowledged (a refused one answered with its code), the session
    stays in OPEN_CONFIRM and is established by the KEEPALIVE."""
    s, out = _session(node, established=False)
    assert s.state is PeerState.OPEN_CONFIRM
    s.receive(Certificate(transaction_id=5, certificate=DER), T0)
    s.receive(Certificate(transaction_id=6, certificate=b"0\x03bad"), T0)
    ok, refused = _sent(out, CertificateAck)
    assert isinstance(ok, CertificateAck) and ok.status is ErrorCode.SUCCESS
    assert ok.thumbprint == thumbprint(DER) and node.certificates.get("peer", ok.thumbprint)
    assert isinstance(refused, CertificateAck)
    assert refused.status is ErrorCode.UNTRUSTED_CERTIFICATE
    assert s.state is PeerState.OPEN_CONFIRM
    s.receive(Keepalive(transaction_id=7), T0)
    assert s.state is PeerState.ESTABLISHED


def test_certificate_offered_once_per_session(node: GatewayNode) -> None:
    """An offered certificate is sent once per session (not before the session is
    established); its CERTIFICATE_ACK is the session's; a refused offer is forgotten and
    offered again next time."""
    s, out = _session(node, established=False)
    s.offer(DER, T0)
    assert _sent(out, Certificate) == []
    s, out = _session(node, established=True)
    s.offer(DER, T0)
    s.offer(DER, T0)
    [cert] = _sent(out, Certificate)
    assert isinstance(cert, Certificate) and cert.certificate == DER
    stray = CertificateAck(transaction_id=cert.transaction_id + 1, status=ErrorCode.SUCCESS)
    ack = CertificateAck(transaction_id=cert.transaction_id, status=ErrorCode.SUCCESS,
                         thumbprint=thumbprint(DER))
    assert s.awaits(ack) and not s.awaits(stray)
    s.receive(ack, T0)
    assert not s.awaits(ack) and s.offered(DER)
    s.offer(DER, T0)
    assert _sent(out, Certificate) == []
    other = b"0\x82 another gateway certificate"
    s.offer(other, T0)
    [cert] = _sent(out, Certificate)
    s.receive(CertificateAck(transaction_id=cert.transaction_id,
                             status=ErrorCode.UNTRUSTED_CERTIFICATE), T0)
    assert not s.offered(other) and s.state is PeerState.ESTABLISHED
    s.offer(other, T0)
    assert len(_sent(out, Certificate)) == 1


def test_offers_remembered_are_bounded(node: GatewayNode) -> None:
    """At most SESSION_MAX_CERTIFICATES offers are remembered, the oldest forgotten."""
    s, out = _session(node, established=True)
    ders = [b"0\x82 certificate %d" % i for i in range(s.max_offers + 1)]
    for der in ders:
        s.offer(der, T0)
    assert len(_sent(out, Certificate)) == len(ders)
    assert not s.offered(ders[0]) and s.offered(ders[-1])


def test_certificate_size_and_rate_limited_before_the_check(node: GatewayNode) -> None:
    """A CERTIFICATE longer than CERTIFICATE_MAX_SIZE is answered INVALID_TLV_LENGTH, one
    beyond the association's CERTIFICATE_BURST RATE_LIMITED with RETRY_AFTER, before the
    certificate check runs; the bucket refills at CERTIFICATE_RATE (Section 10.7)."""
    checked: list[bytes] = []
    node.accept_certificate = lambda _h, der, _t: checked.append(der)
    node.limits = RequestLimits(lambda name: {"CERTIFICATE_BURST": 2}.get(name, limit(name)))
    peer: Handle = "peer"

    def send(der: bytes, now: float) -> CertificateAck:
        node.receive(peer, Certificate(transaction_id=1, certificate=der), now)
        [(_, ack)] = node.messages_to_send()
        assert isinstance(ack, CertificateAck)
        return ack

    big = send(b"0" * (int(limit("CERTIFICATE_MAX_SIZE")) + 1), T0)
    assert big.status is ErrorCode.INVALID_TLV_LENGTH
    assert [send(DER, T0).status for _ in range(2)] == [ErrorCode.UNEXPECTED_MESSAGE] * 2
    limited = send(DER, T0)
    assert limited.status is ErrorCode.RATE_LIMITED
    assert limited.retry_after == 1000 / limit("CERTIFICATE_RATE")
    assert checked == [] and send(DER, T0 + 0.2).status is ErrorCode.UNEXPECTED_MESSAGE
