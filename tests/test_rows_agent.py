"""Every row of an agent's requester transactions and of its watch on its gateway, one
test each (draft-dmsc-protocol-00 Sections 5.2, 5.3, 6.8.3; :mod:`row_cases`): the
agent's client fed its gateway's messages through the codec."""

from __future__ import annotations

from pathlib import Path

import pytest
from row_cases import ME, RowCases, row_tests, wire

from dmscproto.codec.messages import EchoReply, EchoRequest, Error, Message, RouteRequest
from dmscproto.codec.registry import ErrorCode, MessageType, timer
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.events import GatewayLost, RequestCompleted, RequestFailed
from dmscproto.protocol.liveness import GatewayLiveness, LivenessInput, LivenessState
from dmscproto.protocol.machine import Outbox, ProtocolError, timestamp_ms
from dmscproto.protocol.requester import Requester, RequesterInput, RequesterState, Requests
from dmscproto.testing.harness import T0, make_record

REQUESTER = RowCases(Requester)
WATCH = RowCases(GatewayLiveness)
RS, RI = RequesterState, RequesterInput
LS, LI = LivenessState, LivenessInput
WAIT = timer("REQUEST_TIMEOUT")
ALICE = make_record(30, "alice", "a.example")


# --- requester transactions ------------------------------------------------------------------
def waiting() -> tuple[Requests, Requester]:
    """An ECHO_REQUEST sent to the gateway at T0, waiting."""
    reqs = Requests(Outbox())
    req = reqs.start("gw", EchoRequest(transaction_id=7, sequence=1,
                                       timestamp=timestamp_ms(T0)), T0)
    return reqs, req


@REQUESTER.row(RS.IDLE, RI.SEND)
def _send(state: RequesterState, tmp_path: Path) -> None:
    reqs, req = waiting()
    assert [(d, wire(m)) for d, m in reqs.outbox.messages_to_send()] == [("gw", req.request)]
    assert req.state is RS.WAITING and reqs.get_timer() == T0 + WAIT and 7 in reqs


@REQUESTER.row(RS.WAITING, RI.ANSWER)
def _complete(state: RequesterState, tmp_path: Path) -> None:
    reqs, req = waiting()
    answer = wire(EchoReply(transaction_id=7, sequence=1, timestamp=timestamp_ms(T0),
                            gateway_id=ME))
    reqs.receive(answer, T0 + 0.25)
    assert list(reqs.outbox.events) == [RequestCompleted(7, req.request, answer, 0.25)]
    assert req.state is RS.DONE and 7 not in reqs and reqs.get_timer() is None


def test_answer_not_classified_is_the_classified_step() -> None:
    """Requester.receive runs its answer's row without classifying it: the same event
    and state as the step of the classified input."""
    answer = wire(EchoReply(transaction_id=7, sequence=1, timestamp=timestamp_ms(T0),
                            gateway_id=ME))
    (fast_reqs, fast), (_, table) = waiting(), waiting()
    fast_reqs.receive(answer, T0 + 0.25)
    table.run(table.classify(answer), T0 + 0.25)
    assert list(fast.outbox.events) == list(table.outbox.events) == [
        RequestCompleted(7, fast.request, answer, 0.25)]
    assert fast.state is table.state is RS.DONE and fast.deadline is table.deadline is None
    with pytest.raises(ProtocolError):  # answered: the same answer again is refused
        fast.receive(answer, T0 + 0.5)


@REQUESTER.row(RS.WAITING, RI.ERROR)
@REQUESTER.row(RS.WAITING, RI.TIMEOUT)
def _fail(state: RequesterState, tmp_path: Path) -> None:
    for end in ("error", "timer"):
        reqs, req = waiting()
        if end == "error":
            reqs.receive(wire(Error(transaction_id=7, status=ErrorCode.RATE_LIMITED,
                                    offending_type=int(MessageType.ECHO_REQUEST),
                                    diagnostic="slow down", retry_after=3000)), T0 + 1)
            expect = RequestFailed(7, req.request, ErrorCode.RATE_LIMITED, "slow down", 3000)
        else:
            reqs.handle_timer(T0 + WAIT)
            expect = RequestFailed(7, req.request, ErrorCode.TRANSACTION_TIMEOUT)
        assert list(reqs.outbox.events) == [expect]
        assert req.state is RS.DONE and 7 not in reqs and reqs.get_timer() is None


@REQUESTER.row(RS.WAITING, RI.CANCEL)
def _abandon(state: RequesterState, tmp_path: Path) -> None:
    """Given up: nothing reported, and a late answer matches no request."""
    reqs, req = waiting()
    reqs.outbox.messages_to_send()
    assert reqs.cancel(7, T0 + 1)
    assert req.state is RS.DONE and reqs.get_timer() is None and not reqs.outbox.events
    assert reqs.outbox.messages_to_send() == []
    with pytest.raises(ProtocolError) as err:
        reqs.receive(wire(EchoReply(transaction_id=7, sequence=1, timestamp=0,
                                    gateway_id=ME)), T0 + 2)
    assert err.value.code is ErrorCode.UNEXPECTED_MESSAGE


# --- the agent's watch on its gateway (keepalive 1 s: hold 3 s) --------------------------------
def client(state: LivenessState) -> AgentClient:
    """An agent's client in ``state``: watching since T0, probing since T0 + 1, lost at
    T0 + 3 (nothing heard)."""
    c = AgentClient(ALICE, "gw", keepalive=1.0)
    if state is not LS.IDLE:
        c.watch_gateway(T0)
    if state in (LS.PROBING, LS.LOST):
        c.handle_timer(T0 + 1)
    if state is LS.LOST:
        c.handle_timer(T0 + 3)
    c.messages_to_send()
    c.outbox.events.clear()
    assert c.liveness is not None and c.liveness.state is state
    return c


def watch_of(c: AgentClient) -> GatewayLiveness:
    assert c.liveness is not None
    return c.liveness


def route_request() -> RouteRequest:
    """Any message from the gateway: a call for the agent."""
    return wire(RouteRequest(transaction_id=3, source_agent=bytes(16),
                             target_agent=ALICE.record.agent_id, hop_limit=8, path=(),
                             payload=b"x"))


def sent(c: AgentClient) -> list[Message]:
    return [wire(m) for _, m in c.messages_to_send()]


@WATCH.row(LS.IDLE, LI.START)
def _watch(state: LivenessState, tmp_path: Path) -> None:
    c = client(state)
    c.watch_gateway(T0 + 5)
    assert watch_of(c).state is LS.WATCHING and watch_of(c).get_timer() == T0 + 6
    assert sent(c) == []
    c.handle_timer(T0 + 8)  # the hold timer started too: 3 s of silence, lost
    assert list(c.outbox.events) == [GatewayLost(3.0)]


@WATCH.row((LS.IDLE, LS.LOST), LI.HEARD)
def _ignore(state: LivenessState, tmp_path: Path) -> None:
    """Not watching (not yet, or no more): what is heard changes nothing."""
    c = client(state)
    c.receive(route_request(), T0 + 5)
    assert watch_of(c).state is state and watch_of(c).get_timer() is None
    assert sent(c) == [] and not any(isinstance(e, GatewayLost) for e in c.outbox.events)


@WATCH.row((LS.WATCHING, LS.PROBING), LI.HEARD)
def _restart(state: LivenessState, tmp_path: Path) -> None:
    c = client(state)
    c.receive(route_request(), T0 + 1.5)
    assert watch_of(c).state is LS.WATCHING and watch_of(c).get_timer() == T0 + 2.5
    assert sent(c) == []


@WATCH.row((LS.WATCHING, LS.PROBING), LI.QUIET)
def _probe(state: LivenessState, tmp_path: Path) -> None:
    """Silence for a keepalive interval: ECHO_REQUEST, again each interval."""
    c = client(state)
    at = T0 + (1 if state is LS.WATCHING else 2)
    c.handle_timer(at)
    [probe] = sent(c)
    assert isinstance(probe, EchoRequest) and probe.timestamp == timestamp_ms(at)
    assert watch_of(c).state is LS.PROBING and watch_of(c).get_timer() == at + 1


@WATCH.row((LS.WATCHING, LS.PROBING), LI.SILENT)
def _declare_lost(state: LivenessState, tmp_path: Path) -> None:
    """Silence for the hold time (in WATCHING: the timer ran late): the gateway is lost."""
    c = client(state)
    c.handle_timer(T0 + 3)
    assert list(c.outbox.events) == [GatewayLost(3.0)]
    assert watch_of(c).state is LS.LOST and watch_of(c).get_timer() is None


test_row, test_every_row_has_a_case = row_tests(REQUESTER, WATCH)
