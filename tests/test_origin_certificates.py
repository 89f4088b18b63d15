"""Origin assertions name their certificate; CERTIFICATE passes it once per peer session
(draft-dmsc-protocol-00, Section 6.10): the relay's exchange step by step, and the size
of a transit ROUTE_REQUEST against the DTLS PDU limit (Section 9.2)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from security_support import NOW, Domain

from dmscproto.codec import encode
from dmscproto.codec.messages import (
    Certificate,
    CertificateAck,
    Error,
    Message,
    RouteReply,
    RouteRequest,
)
from dmscproto.codec.registry import DEFAULT_MAX_DATAGRAM, ErrorCode, MessageType, timer
from dmscproto.codec.wire import Advertisement
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.certificates import thumbprint
from dmscproto.protocol.machine import Outbox
from dmscproto.protocol.routing import Outbound, RouteRelay
from dmscproto.security.ca import Kind
from dmscproto.security.origin import X5T, sign_origin
from dmscproto.security.tokens import ScopeSet
from dmscproto.testing.examples import TRACE
from dmscproto.testing.harness import T0, make_record
from dmscproto.transport.dtls import RECORD_OVERHEAD

ME, PEER = bytes([0xEE]) * 16, bytes([0x01]) * 16
CERT = b"0\x82 gw-origin certificate"  # the relay keeps octets; the guard checks them
ROUTE_TIMEOUT = timer("ROUTE_TIMEOUT")
FRACTION = timer("FORWARD_FRACTION")


def _relay(tmp_path: Path) -> tuple[RouteRelay, Outbox]:
    """A relay that forwarded a request (with CERT, as the guard's outgoing hook gives it)
    to the peer "down", at T0."""
    core = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    remote = make_record(31, "bob", "b.example")
    assert core.learn(Advertisement(1, (PEER,), remote), PEER, T0)
    node = GatewayNode(core)
    node.peers[PEER] = "down"
    node.ctx.outgoing = lambda _up, req, _txid, _now: Outbound(req, CERT)
    out = Outbox()
    relay = RouteRelay(out, node.ctx, "up", RouteRequest(
        transaction_id=5, source_agent=PEER, target_agent=remote.record.agent_id,
        hop_limit=8, path=(), payload=b"x", token=b"origin assertion"))
    relay.start(T0)
    assert relay.state is RouteRelay.State.FORWARDED
    return relay, out


def _sent(out: Outbox) -> list[tuple[object, Message]]:
    return out.messages_to_send()


def _unknown(relay: RouteRelay, now: float) -> None:
    assert relay.downstream is not None
    relay.receive("down", RouteReply(transaction_id=relay.downstream[1],
                                     status=ErrorCode.CERTIFICATE_UNKNOWN), now)


def test_relay_sends_the_certificate_then_the_request_within_its_time(tmp_path: Path) -> None:
    """CERTIFICATE_UNKNOWN: CERTIFICATE to the same next hop (new transaction id), then,
    on its ACK, the request again (new transaction id, TIMEOUT from the time left); the
    transaction timer is not restarted; a second CERTIFICATE_UNKNOWN goes upstream."""
    relay, out = _relay(tmp_path)
    [(_, first)] = _sent(out)
    assert isinstance(first, RouteRequest)
    assert first.timeout_ms == int(ROUTE_TIMEOUT * FRACTION * 1000)
    deadline = relay.deadline
    _unknown(relay, T0 + 1)
    [(dest, cert)] = _sent(out)
    assert dest == "down" and isinstance(cert, Certificate) and cert.certificate == CERT
    assert cert.transaction_id != first.transaction_id
    assert relay.state is RouteRelay.State.CERTIFYING and relay.deadline == deadline
    relay.receive("down", CertificateAck(transaction_id=cert.transaction_id,
                                         status=ErrorCode.SUCCESS,
                                         thumbprint=thumbprint(CERT)), T0 + 11)
    [(dest, again)] = _sent(out)
    assert dest == "down" and isinstance(again, RouteRequest)
    assert again.transaction_id not in (first.transaction_id, cert.transaction_id)
    assert again.timeout_ms == int((ROUTE_TIMEOUT - 11) * FRACTION * 1000)
    assert replace(again, transaction_id=0, timeout_ms=0, trace=None) == \
        replace(first, transaction_id=0, timeout_ms=0, trace=None)
    assert relay.downstream == ("down", again.transaction_id)
    _unknown(relay, T0 + 12)  # once per transaction
    [(dest, reply)] = _sent(out)
    assert dest == "up" and isinstance(reply, RouteReply) and reply.transaction_id == 5
    assert reply.status is ErrorCode.CERTIFICATE_UNKNOWN and relay.done


ENDINGS: dict[str, tuple[Callable[[int], Message | None], ErrorCode]] = {
    "refused": (lambda txid: CertificateAck(transaction_id=txid,
                                            status=ErrorCode.UNTRUSTED_CERTIFICATE,
                                            diagnostic="not ours"),
                ErrorCode.UNTRUSTED_CERTIFICATE),
    "other thumbprint": (lambda txid: CertificateAck(transaction_id=txid,
                                                     status=ErrorCode.SUCCESS,
                                                     thumbprint=bytes(32)),
                         ErrorCode.INVALID_TLV_VALUE),
    "transport failed": (lambda txid: Error(transaction_id=txid,
                                            status=ErrorCode.TARGET_UNREACHABLE,
                                            offending_type=int(MessageType.CERTIFICATE)),
                         ErrorCode.TARGET_UNREACHABLE),
    "timer": (lambda _txid: None, ErrorCode.TRANSACTION_TIMEOUT),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_failed_certificate_exchange_answers_upstream(tmp_path: Path, ending: str) -> None:
    """No call is left waiting: a refused CERTIFICATE, a wrong THUMBPRINT, an ERROR (the
    transport gave up) or the transaction timer answer the caller with their code."""
    make, code = ENDINGS[ending]
    relay, out = _relay(tmp_path)
    _sent(out)  # the request
    _unknown(relay, T0 + 1)
    [(_, cert)] = _sent(out)
    answer = make(cert.transaction_id)
    if answer is None:
        assert relay.get_timer() == T0 + ROUTE_TIMEOUT
        relay.handle_timer(T0 + ROUTE_TIMEOUT)
    else:
        relay.receive("down", answer, T0 + 2)
    [(dest, reply)] = _sent(out)
    assert dest == "up" and isinstance(reply, RouteReply) and reply.status is code
    assert relay.done


def test_transit_route_request_fits_a_dtls_pdu_with_trace_context() -> None:
    """The ROUTE_REQUEST the last transit gateway of a five-domain chain sends (four
    Gateway IDs in PATH_VECTOR, TIMEOUT, TRACE_CONTEXT, the origin assertion of a P-256
    gateway certificate) leaves room for 300 octets of PAYLOAD within the DTLS PDU limit;
    with the certificate in x5c it would not fit even without PAYLOAD."""
    domain = Domain.create("a.example")
    gateway, alice = domain.issue("gw-a", Kind.GATEWAY), domain.issue("alice")
    msg = RouteRequest(transaction_id=2**64 - 1, source_agent=alice.identity.entity_id,
                       target_agent=bytes(16), hop_limit=4,
                       path=tuple(bytes([i]) * 16 for i in range(4)), payload=bytes(300),
                       timeout_ms=24300, trace=TRACE)
    token = sign_origin(gateway, msg, source_uri=alice.identity.uri, target_agent=bytes(16),
                        target_domain="e.example", scope=ScopeSet.parse("route"), now=NOW)
    limit = DEFAULT_MAX_DATAGRAM - RECORD_OVERHEAD
    assert len(encode(replace(msg, token=token))) <= limit == 1163
    header, rest = token.split(b".", 1)
    fields = json.loads(base64.urlsafe_b64decode(header + b"=="))
    der = gateway.certificate.public_bytes(Encoding.DER)
    del fields[X5T]
    fields["x5c"] = [base64.b64encode(der).decode()]
    x5c = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=") + b"." + rest
    assert len(encode(replace(msg, payload=b"", token=x5c))) > limit
