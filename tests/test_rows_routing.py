"""Every row of the routing and trace relays, one test each (draft-dmsc-protocol-00
Sections 5.3, 6.8, 6.10; :mod:`row_cases`): one transaction at a gateway node whose
registry (real SQLite) holds alice, registered here, and bob, learned from a peer;
answers fed through the codec."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from row_cases import ME, PEER, RowCases, row_tests, wire

from dmscproto.codec.messages import (
    Certificate,
    CertificateAck,
    Error,
    Message,
    Register,
    RouteReply,
    RouteRequest,
    TraceReply,
    TraceRequest,
)
from dmscproto.codec.registry import ErrorCode, MessageType, timer
from dmscproto.codec.values import HopRecord
from dmscproto.codec.wire import Advertisement
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.certificates import thumbprint
from dmscproto.protocol.events import ProtocolEvent, TransactionEnded
from dmscproto.protocol.machine import timestamp_ms
from dmscproto.protocol.oam import TraceRelay, TraceState
from dmscproto.protocol.routing import (
    Outbound,
    RelayInput,
    RouteInput,
    RouteRelay,
    RouteState,
)
from dmscproto.testing.examples import gateway_certificate
from dmscproto.testing.harness import T0, make_record

ROUTE = RowCases(RouteRelay)
TRACE = RowCases(TraceRelay)
RS, RI = RouteState, RouteInput
TS, TI = TraceState, RelayInput
T1 = T0 + 1
ROUTE_TIMEOUT = timer("ROUTE_TIMEOUT")
ALICE, BOB = make_record(30, "alice", "a.example"), make_record(31, "bob", "b.example")
A, B, NOBODY = ALICE.record.agent_id, BOB.record.agent_id, bytes([0x77]) * 16
DER = gateway_certificate()  # what the origin assertion of a forwarded request names


@dataclass
class Relay:
    """One relayed transaction at a node; what it sent and reported since last asked."""

    m: RouteRelay | TraceRelay
    node: GatewayNode

    def sent(self) -> list[tuple[object, Message]]:
        return [(d, wire(m)) for d, m in self.m.outbox.messages_to_send()]

    def answer(self, msg: Message, at: float = T1) -> None:
        """``msg`` from downstream, on the transaction the relay has there."""
        assert self.m.downstream is not None
        dest, txid = self.m.downstream
        self.m.receive(dest, wire(replace(msg, transaction_id=txid)), at)

    def ended(self, status: ErrorCode) -> Message:
        """The one answer sent upstream (incoming transaction id 5), reported."""
        [(dest, reply)] = self.sent()
        assert dest == "up" and reply.transaction_id == 5 and reply.status is status
        events = list(self.m.outbox.events)
        assert events == [TransactionEnded(self.m.request.TYPE, "up", 5, status)]
        assert self.m.done and self.m.get_timer() is None
        return reply


def node(tmp_path: Path, transaction_events: bool = True) -> GatewayNode:
    """A gateway holding alice (her association "alice") and bob through PEER ("peer");
    a forwarded ROUTE_REQUEST names DER (the outgoing hook)."""
    core = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    n = GatewayNode(core, outgoing=lambda _up, req, _txid, _now: Outbound(req, DER),
                    transaction_events=transaction_events)
    n.receive("alice", wire(Register(transaction_id=1, record=ALICE, lease=600,
                                     nonce=bytes(16), timestamp=0)), T0)
    n.messages_to_send()
    while n.next_event() is not None:
        pass
    assert core.learn(Advertisement(1, (PEER,), BOB), PEER, T0)
    n.peers[PEER] = "peer"  # as an established session with PEER sets it
    return n


def route(tmp_path: Path, target: bytes, state: RouteState = RS.IDLE) -> Relay:
    """A ROUTE_REQUEST (incoming transaction 5) to ``target``, in ``state``: started
    (DELIVERED or FORWARDED), the certificate sent on CERTIFICATE_UNKNOWN (CERTIFYING)."""
    n = node(tmp_path)
    req = RouteRequest(transaction_id=5, source_agent=bytes(16), target_agent=target,
                       hop_limit=8, path=(), payload=b"where?")
    r = Relay(RouteRelay(n._out, n.ctx, "up", wire(req)), n)
    if state is not RS.IDLE:
        r.m.start(T0)
    if state is RS.CERTIFYING:
        r.answer(RouteReply(status=ErrorCode.CERTIFICATE_UNKNOWN), T0)
    r.sent()
    assert r.m.state is state
    return r


def route_reply(status: ErrorCode = ErrorCode.SUCCESS) -> RouteReply:
    return RouteReply(status=status, target_agent=A, payload=b"here")


def error() -> Error:
    return Error(status=ErrorCode.RATE_LIMITED, offending_type=int(MessageType.ROUTE_REQUEST),
                 diagnostic="slow down")


# --- ROUTE_REQUEST -----------------------------------------------------------------------------
@ROUTE.row(RS.IDLE, RI.REQUEST_LOCAL)
def _deliver(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, A)
    r.m.start(T1)
    [(dest, fwd)] = r.sent()
    assert dest == "alice" and isinstance(fwd, RouteRequest)
    assert (fwd.target_agent, fwd.payload, fwd.hop_limit) == (A, b"where?", 8)
    assert r.m.downstream == ("alice", fwd.transaction_id) and fwd.transaction_id != 5
    assert r.m.state is RS.DELIVERED and r.m.get_timer() == T1 + ROUTE_TIMEOUT


@ROUTE.row(RS.IDLE, RI.REQUEST_FORWARD)
def _forward(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, B)
    r.m.start(T1)
    [(dest, fwd)] = r.sent()
    assert dest == "peer" and isinstance(fwd, RouteRequest)
    assert (fwd.hop_limit, fwd.path) == (7, (ME,))
    assert fwd.timeout_ms == int(ROUTE_TIMEOUT * timer("FORWARD_FRACTION") * 1000)
    assert r.m.certificate == DER
    assert r.m.state is RS.FORWARDED and r.m.get_timer() == T1 + ROUTE_TIMEOUT


@ROUTE.row(RS.IDLE, RI.REQUEST_REFUSED)
def _reject(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, NOBODY)
    r.m.start(T1)
    assert r.m.state is RS.DONE
    r.ended(ErrorCode.NO_ROUTE)


@ROUTE.row((RS.DELIVERED, RS.FORWARDED), RI.REPLY)
def _relay_reply(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, A if state is RS.DELIVERED else B, state)
    r.answer(route_reply())
    reply = r.ended(ErrorCode.SUCCESS)
    assert isinstance(reply, RouteReply) and reply.payload == b"here"
    assert r.m.state is RS.DONE


@ROUTE.row((RS.DELIVERED, RS.FORWARDED, RS.CERTIFYING), RI.ERROR)
def _relay_error(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, A if state is RS.DELIVERED else B, state)
    r.answer(error())
    reply = r.ended(ErrorCode.RATE_LIMITED)
    assert isinstance(reply, RouteReply) and reply.diagnostic == "slow down"
    assert r.m.state is RS.DONE


@ROUTE.row(RS.DELIVERED, RI.TIMEOUT)
def _unreachable(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, A, state)
    r.m.handle_timer(T0 + ROUTE_TIMEOUT)
    r.ended(ErrorCode.TARGET_UNREACHABLE)
    assert r.m.state is RS.DONE


@ROUTE.row((RS.FORWARDED, RS.CERTIFYING), RI.TIMEOUT)
def _timed_out(state: RouteState, tmp_path: Path) -> None:
    r = route(tmp_path, B, state)
    r.m.handle_timer(T0 + ROUTE_TIMEOUT)
    r.ended(ErrorCode.TRANSACTION_TIMEOUT)
    assert r.m.state is RS.DONE


@ROUTE.row(RS.FORWARDED, RI.CERTIFICATE_UNKNOWN)
def _send_certificate(state: RouteState, tmp_path: Path) -> None:
    """The next hop does not hold the certificate the request names: sent in
    CERTIFICATE on a transaction of its own; once a transaction."""
    r = route(tmp_path, B, state)
    before = r.m.downstream
    r.answer(RouteReply(status=ErrorCode.CERTIFICATE_UNKNOWN))
    [(dest, cert)] = r.sent()
    assert dest == "peer" and cert == Certificate(transaction_id=cert.transaction_id,
                                                  certificate=DER)
    assert r.m.downstream == ("peer", cert.transaction_id) != before
    assert r.m.state is RS.CERTIFYING and r.m.get_timer() == T0 + ROUTE_TIMEOUT


@ROUTE.row(RS.CERTIFYING, RI.CERTIFIED)
def _retry(state: RouteState, tmp_path: Path) -> None:
    """Acknowledged: the request again, its TIMEOUT cut to what is left; a second
    CERTIFICATE_UNKNOWN is then an answer like any."""
    r = route(tmp_path, B, state)
    r.answer(CertificateAck(status=ErrorCode.SUCCESS, thumbprint=thumbprint(DER)), T0 + 10)
    [(dest, again)] = r.sent()
    assert dest == "peer" and isinstance(again, RouteRequest)
    assert again.timeout_ms == int((ROUTE_TIMEOUT - 10) * timer("FORWARD_FRACTION") * 1000)
    assert r.m.downstream == ("peer", again.transaction_id)
    assert r.m.state is RS.FORWARDED and r.m.get_timer() == T0 + ROUTE_TIMEOUT
    r.answer(RouteReply(status=ErrorCode.CERTIFICATE_UNKNOWN))
    r.ended(ErrorCode.CERTIFICATE_UNKNOWN)


@ROUTE.row(RS.CERTIFYING, RI.CERTIFICATE_REFUSED)
def _certificate_refused(state: RouteState, tmp_path: Path) -> None:
    """Refused, or acknowledged with another THUMBPRINT (INVALID_TLV_VALUE)."""
    for ack, status in ((CertificateAck(status=ErrorCode.UNTRUSTED_CERTIFICATE),
                         ErrorCode.UNTRUSTED_CERTIFICATE),
                        (CertificateAck(status=ErrorCode.SUCCESS, thumbprint=bytes(32)),
                         ErrorCode.INVALID_TLV_VALUE)):
        sub = tmp_path / status.name
        sub.mkdir()
        r = route(sub, B, state)
        r.answer(ack)
        r.ended(status)
        assert r.m.state is RS.DONE


# --- TRACE_REQUEST -------------------------------------------------------------------------------
def trace(tmp_path: Path, target: bytes, state: TraceState = TS.IDLE) -> Relay:
    n = node(tmp_path)
    r = Relay(TraceRelay(n._out, n.ctx, "up", wire(TraceRequest(
        transaction_id=5, target_agent=target, hop_limit=8, path=()))), n)
    if state is not TS.IDLE:
        r.m.start(T0)
    r.sent()
    assert r.m.state is state
    return r


def own_hop(at: float) -> HopRecord:
    return HopRecord(ME, "a.example", timestamp_ms(at))


@TRACE.row(TS.IDLE, TI.REQUEST_LOCAL)
def _answer_trace(state: TraceState, tmp_path: Path) -> None:
    """The target is registered here: this gateway answers (no agent is asked)."""
    r = trace(tmp_path, A)
    r.m.start(T1)
    reply = r.ended(ErrorCode.SUCCESS)
    assert isinstance(reply, TraceReply) and reply.hops == (own_hop(T1),)
    assert reply.target_agent == A and r.m.state is TS.DONE


@TRACE.row(TS.IDLE, TI.REQUEST_FORWARD)
def _forward_trace(state: TraceState, tmp_path: Path) -> None:
    r = trace(tmp_path, B)
    r.m.start(T1)
    [(dest, fwd)] = r.sent()
    assert dest == "peer" and isinstance(fwd, TraceRequest)
    assert (fwd.hop_limit, fwd.path, fwd.hops) == (7, (ME,), (own_hop(T1),))
    assert r.m.state is TS.FORWARDED and r.m.get_timer() == T1 + ROUTE_TIMEOUT


@TRACE.row(TS.IDLE, TI.REQUEST_REFUSED)
def _reject_trace(state: TraceState, tmp_path: Path) -> None:
    r = trace(tmp_path, NOBODY)
    r.m.start(T1)
    reply = r.ended(ErrorCode.NO_ROUTE)
    assert isinstance(reply, TraceReply) and reply.hops == (own_hop(T1),)
    assert r.m.state is TS.DONE


@TRACE.row(TS.FORWARDED, TI.REPLY)
@TRACE.row(TS.FORWARDED, TI.ERROR)
@TRACE.row(TS.FORWARDED, TI.TIMEOUT)
def _trace_ends(state: TraceState, tmp_path: Path) -> None:
    """The next hop's TRACE_REPLY passed up; its ERROR or silence answered here."""
    hops = (own_hop(T0), HopRecord(PEER, "b.example", timestamp_ms(T1)))
    for end, status in (("reply", ErrorCode.SUCCESS), ("error", ErrorCode.RATE_LIMITED),
                        ("timer", ErrorCode.TRANSACTION_TIMEOUT)):
        sub = tmp_path / end
        sub.mkdir()
        r = trace(sub, B, state)
        if end == "reply":
            r.answer(TraceReply(status=ErrorCode.SUCCESS, target_agent=B, hops=hops))
        elif end == "error":
            r.answer(error())
        else:
            r.m.handle_timer(T0 + ROUTE_TIMEOUT)
        reply = r.ended(status)
        assert isinstance(reply, TraceReply)
        assert reply.hops == (hops if end == "reply" else hops[:1])
        assert r.m.state is TS.DONE


test_row, test_every_row_has_a_case = row_tests(ROUTE, TRACE)


@pytest.mark.parametrize("events", [True, False])
def test_a_transactions_end_is_reported_only_when_asked_for(tmp_path: Path,
                                                            events: bool) -> None:
    """A relayed call through the node: its end is reported (TransactionEnded) by
    default; with ``transaction_events=False`` no event is made at all, and the call is
    relayed alike."""
    n = node(tmp_path, events)
    made: list[ProtocolEvent] = []
    emit = n._out.emit

    def emitted(event: ProtocolEvent) -> None:  # every event made, then emitted
        made.append(event)
        emit(event)

    n._out.emit = emitted  # type: ignore[method-assign]
    n.receive("up", wire(RouteRequest(transaction_id=5, source_agent=bytes(16),
                                      target_agent=A, hop_limit=8, path=(),
                                      payload=b"where?")), T1)
    [(dest, fwd)] = n.messages_to_send()
    assert dest == "alice" and n.next_event() is None
    n.receive("alice", wire(replace(route_reply(), transaction_id=fwd.transaction_id)), T1)
    [(dest, reply)] = n.messages_to_send()
    assert dest == "up" and reply.transaction_id == 5 and reply.payload == b"here"
    ended = TransactionEnded(MessageType.ROUTE_REQUEST, "up", 5, ErrorCode.SUCCESS)
    assert made == ([ended] if events else [])
    assert n.next_event() == (ended if events else None) and n.next_event() is None


def test_a_reply_input_made_without_its_frozen_init(tmp_path: Path) -> None:
    """The input of a reply from downstream, made slot by slot, is the frozen
    RouteAnswered its ``__init__`` makes (fails with the reply left out or misplaced)."""
    from dataclasses import FrozenInstanceError

    from dmscproto.protocol.routing import RouteAnswered

    r = route(tmp_path, A, RS.DELIVERED)
    msg = wire(route_reply())
    inp = r.m.answer_input(msg)
    assert type(inp) is RouteAnswered and inp == RouteAnswered(msg) and inp.reply is msg
    with pytest.raises(FrozenInstanceError):
        inp.reply = msg  # type: ignore[misc]


def test_a_machine_starts_as_the_table_machine_does(tmp_path: Path) -> None:
    """Machine's ``__init__`` does TableMachine's itself (a frame less per relayed call):
    a relay made has every attribute TableMachine's ``__init__`` would give it."""
    from dmscproto.fsm import TableMachine

    made = route(tmp_path, A).m
    probe = object.__new__(RouteRelay)
    TableMachine.__init__(probe)
    assert TableMachine.__slots__ == ("state",) and made.state is probe.state is RS.IDLE
    assert vars(probe).items() <= vars(made).items()
