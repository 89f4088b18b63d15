"""Every row of both registration tables, one test each (draft-dmsc-protocol-00 Section
5.1; :mod:`row_cases`): the agent's machine fed the gateway's answers, the gateway's
deciding and committing into a real SQLite registry, PDUs through the codec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from row_cases import ME, RowCases, row_tests, wire

from dmscproto.codec.messages import (
    Deregister,
    DeregisterAck,
    Error,
    Message,
    Refresh,
    RefreshAck,
    Register,
    RegisterAck,
)
from dmscproto.codec.registry import ErrorCode, timer
from dmscproto.codec.wire import VersionedId
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.agent_registration import AgentInput, AgentRegistration, AgentState
from dmscproto.protocol.events import (
    AgentRegistered,
    AgentRemoved,
    Deregistered,
    LeaseRefreshed,
    ProtocolEvent,
    Registered,
    RegistrationFailed,
    RegistrationLost,
)
from dmscproto.protocol.machine import Outbox, TransactionIds
from dmscproto.protocol.registration import GatewayInput, GatewayRegistration, GatewayState
from dmscproto.testing.harness import T0, make_record

AGENT = RowCases(AgentRegistration)
GATEWAY = RowCases(GatewayRegistration)
AS, AI = AgentState, AgentInput
GS, GI = GatewayState, GatewayInput
T1 = T0 + 1
LEASE = 100
WAIT = timer("REQUEST_TIMEOUT")
REFRESH_AT = T0 + timer("REFRESH_FRACTION") * LEASE  # the lease counts from T0
ALICE, ALICE2 = (make_record(30, "alice", "a.example", version=v) for v in (1, 2))
AID = ALICE.record.agent_id


def drain(out: Outbox) -> tuple[list[Message], list[ProtocolEvent]]:
    """What was sent (through the codec) and reported since last drained."""
    events = list(out.events)
    out.events.clear()
    return [wire(m) for _, m in out.messages_to_send()], events


# --- the agent ---------------------------------------------------------------------------------
@dataclass
class Agent:
    m: AgentRegistration
    out: Outbox

    def answer(self, msg: Message, at: float = T1) -> None:
        self.m.receive(wire(msg), at)

    def request(self) -> Message:
        """The one request sent since last asked."""
        [req], _ = drain(self.out)
        return req


def agent(state: AgentState) -> tuple[Agent, Message | None]:
    """The agent in ``state``, and its request outstanding (if any): registered at T0
    (lease LEASE), refreshing since REFRESH_AT, deregistering since T1."""
    m = AgentRegistration(Outbox(), "gw", TransactionIds(), nonce=lambda: bytes(16))
    a = Agent(m, m.outbox)
    req: Message | None = None
    if state is not AS.IDLE:
        a.m.register(ALICE, LEASE, T0)
        req = a.request()
    if state in (AS.REGISTERED, AS.REFRESHING, AS.DEREGISTERING):
        assert req is not None
        a.answer(RegisterAck(transaction_id=req.transaction_id, status=ErrorCode.SUCCESS,
                             agent_id=AID, lease=LEASE), T0)
        req = None
    if state is AS.REFRESHING:
        a.m.handle_timer(REFRESH_AT)
        req = a.request()
    elif state is AS.DEREGISTERING:
        a.m.deregister(T1)
        req = a.request()
    drain(a.out)
    assert a.m.state is state
    return a, req


def error(req: Message) -> Error:
    return Error(transaction_id=req.transaction_id, status=ErrorCode.RATE_LIMITED,
                 offending_type=int(req.TYPE), diagnostic="slow down", retry_after=3000)


#: How an agent's request ends in the cases below: its answer (a refusal), ERROR, or a
#: timer (the request's, or the lease's).
ENDS = ("answer", "error", "timer")


def end(a: Agent, req: Message, how: str, answer: Message, timer_at: float,
        timed_out: ErrorCode) -> tuple[ErrorCode, str | None, int | None]:
    """End ``req`` as ``how`` says; the STATUS, DIAGNOSTIC and RETRY_AFTER the agent
    reports for it."""
    if how == "answer":
        a.answer(answer)
        return answer.status, getattr(answer, "diagnostic", None), None  # type: ignore[attr-defined]
    if how == "error":
        a.answer(error(req))
        return ErrorCode.RATE_LIMITED, "slow down", 3000
    a.m.handle_timer(timer_at)
    return timed_out, None, None


@AGENT.row((AS.IDLE, AS.REGISTERING, AS.REGISTERED, AS.REFRESHING), AI.REGISTER_CALL)
def _send_register(state: AgentState, tmp_path: Path) -> None:
    """register() (again: a new record replaces the one registered or being sent)."""
    a, before = agent(state)
    a.m.register(ALICE2, 60, T0 + 60)
    req = a.request()
    assert isinstance(req, Register) and req.record == ALICE2 and req.lease == 60
    assert before is None or req.transaction_id != before.transaction_id
    assert a.m.state is AS.REGISTERING and a.m.get_timer() == T0 + 60 + WAIT


@AGENT.row(AS.REGISTERING, AI.REGISTER_ACK_OK)
def _granted(state: AgentState, tmp_path: Path) -> None:
    a, req = agent(state)
    assert req is not None
    a.answer(RegisterAck(transaction_id=req.transaction_id, status=ErrorCode.SUCCESS,
                         agent_id=AID, lease=LEASE))
    assert drain(a.out) == ([], [Registered(AID, LEASE, T0 + LEASE)])
    assert a.m.state is AS.REGISTERED and a.m.get_timer() == REFRESH_AT


@AGENT.row(AS.REGISTERING, AI.REGISTER_ACK_REFUSED)
@AGENT.row(AS.REGISTERING, AI.ERROR)
@AGENT.row(AS.REGISTERING, AI.REQUEST_TIMEOUT)
def _failed(state: AgentState, tmp_path: Path) -> None:
    """Refused, answered with ERROR, or unanswered: not registered."""
    for how in ENDS:
        a, req = agent(state)
        assert req is not None
        outcome = end(a, req, how, RegisterAck(transaction_id=req.transaction_id,
                                               status=ErrorCode.NAME_CONFLICT,
                                               diagnostic="taken"),
                      T0 + WAIT, ErrorCode.TRANSACTION_TIMEOUT)
        assert drain(a.out) == ([], [RegistrationFailed(*outcome)])
        assert a.m.state is AS.IDLE and a.m.get_timer() is None


@AGENT.row(AS.REGISTERED, AI.REFRESH_DUE)
@AGENT.row(AS.REFRESHING, AI.REQUEST_TIMEOUT)
def _send_refresh(state: AgentState, tmp_path: Path) -> None:
    """REFRESH at REFRESH_FRACTION of the lease, again when unanswered."""
    a, _ = agent(AS.REGISTERED)
    a.m.handle_timer(REFRESH_AT)
    first = a.request()
    assert isinstance(first, Refresh) and (first.agent_id, first.lease) == (AID, LEASE)
    assert a.m.state is AS.REFRESHING and a.m.get_timer() == REFRESH_AT + WAIT
    a.m.handle_timer(REFRESH_AT + WAIT)
    again = a.request()
    assert isinstance(again, Refresh) and again.transaction_id != first.transaction_id
    assert a.m.state is AS.REFRESHING and a.m.get_timer() == REFRESH_AT + 2 * WAIT


def test_refreshing_agent_timer_is_the_lease_end_before_the_request_timer() -> None:
    """Refreshing, the lease's end is the agent's timer when it comes before the
    request timer of a REFRESH sent again (LEASE_END's row), and then ends the lease."""
    a, _ = agent(AS.REFRESHING)
    a.m.handle_timer(T0 + LEASE - WAIT / 2)  # unanswered: sent again, timed past the lease
    assert isinstance(a.request(), Refresh) and a.m.state is AS.REFRESHING
    assert a.m.get_timer() == T0 + LEASE
    a.m.handle_timer(T0 + LEASE)
    assert a.m.state is AS.REGISTERING


@AGENT.row((AS.REGISTERED, AS.REFRESHING), AI.DEREGISTER_CALL)
def _send_deregister(state: AgentState, tmp_path: Path) -> None:
    a, _ = agent(state)
    a.m.deregister(T0 + 55)
    req = a.request()
    assert isinstance(req, Deregister) and req.agent_id == AID
    assert a.m.state is AS.DEREGISTERING and a.m.get_timer() == T0 + 55 + WAIT


@AGENT.row(AS.REFRESHING, AI.REFRESH_ACK_OK)
def _extended(state: AgentState, tmp_path: Path) -> None:
    a, req = agent(state)
    assert req is not None
    a.answer(RefreshAck(transaction_id=req.transaction_id, status=ErrorCode.SUCCESS,
                        lease=LEASE), REFRESH_AT + 1)
    assert drain(a.out) == ([], [LeaseRefreshed(LEASE, REFRESH_AT + LEASE)])
    assert a.m.state is AS.REGISTERED
    assert a.m.get_timer() == REFRESH_AT + timer("REFRESH_FRACTION") * LEASE


@AGENT.row(AS.REFRESHING, AI.REFRESH_ACK_REFUSED)
@AGENT.row(AS.REFRESHING, AI.ERROR)
@AGENT.row(AS.REFRESHING, AI.LEASE_END)
def _reregister(state: AgentState, tmp_path: Path) -> None:
    """The gateway no longer holds the registration (REFRESH refused, ERROR, the lease
    over): REGISTER again."""
    for how in ENDS:
        a, req = agent(state)
        assert req is not None
        status, _, _ = end(a, req, how, RefreshAck(transaction_id=req.transaction_id,
                                                   status=ErrorCode.UNKNOWN_AGENT),
                           T0 + LEASE, ErrorCode.LEASE_EXPIRED)
        [again], events = drain(a.out)
        assert events == [RegistrationLost(status)]
        assert isinstance(again, Register) and again.record == ALICE
        assert a.m.state is AS.REGISTERING


@AGENT.row(AS.DEREGISTERING, AI.DEREGISTER_ACK)
@AGENT.row(AS.DEREGISTERING, AI.ERROR)
@AGENT.row(AS.DEREGISTERING, AI.REQUEST_TIMEOUT)
def _deregistered(state: AgentState, tmp_path: Path) -> None:
    for how in ENDS:
        a, req = agent(state)
        assert req is not None
        status, _, _ = end(a, req, how, DeregisterAck(transaction_id=req.transaction_id,
                                                      status=ErrorCode.SUCCESS),
                           T1 + WAIT, ErrorCode.TRANSACTION_TIMEOUT)
        assert drain(a.out) == ([], [Deregistered(status)])
        assert a.m.state is AS.IDLE and a.m.get_timer() is None and a.m.agent_id is None


# --- the gateway -------------------------------------------------------------------------------
@dataclass
class Gateway:
    g: GatewayRegistration
    core: GatewayCore
    txid: int = 1

    def send(self, msg: Message, at: float = T1, source: str = "alice") -> Message:
        """``msg`` from ``source``; the gateway's one answer."""
        self.g.receive(source, wire(msg), at)
        [answer], _ = drain(self.g.outbox)
        return answer

    def register(self, signed: object = ALICE, at: float = T1, source: str = "alice") -> Message:
        self.txid += 1
        return self.send(Register(transaction_id=self.txid, record=signed, lease=60,
                                  nonce=bytes(16), timestamp=0), at, source)

    def refresh(self, at: float = T1) -> Message:
        self.txid += 1
        return self.send(Refresh(transaction_id=self.txid, agent_id=AID, lease=60,
                                 nonce=bytes(16), timestamp=0), at)

    def deregister(self, at: float = T1) -> Message:
        self.txid += 1
        return self.send(Deregister(transaction_id=self.txid, agent_id=AID, nonce=bytes(16),
                                    timestamp=0), at)

    @property
    def state(self) -> GatewayState:
        return self.g.state_of(AID)


def gateway(state: GatewayState, tmp_path: Path) -> Gateway:
    """A gateway's registration, alice registered at T0 (lease 60 s) if REGISTERED."""
    core = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    gw = Gateway(GatewayRegistration(Outbox(), core), core)
    if state is GS.REGISTERED:
        assert isinstance(ack := gw.register(ALICE2, T0), RegisterAck)
        assert ack.status is ErrorCode.SUCCESS
        drain(gw.g.outbox)
    assert gw.state is state
    return gw


@GATEWAY.row((GS.UNREGISTERED, GS.REGISTERED), GI.REGISTER)
def _ack_register(state: GatewayState, tmp_path: Path) -> None:
    """Answered SUCCESS once committed (a fresh reader of the file holds it); a
    registration bound to another association is reported replaced."""
    gw = gateway(state, tmp_path)
    signed = ALICE2 if state is GS.REGISTERED else ALICE
    gw.g.receive("alice-2", wire(Register(transaction_id=5, record=signed, lease=60,
                                          nonce=bytes(16), timestamp=0)), T1)
    [ack], events = drain(gw.g.outbox)
    assert ack == RegisterAck(transaction_id=5, status=ErrorCode.SUCCESS, agent_id=AID,
                              lease=60, diagnostic=ack.diagnostic)
    replaced = "alice" if state is GS.REGISTERED else None
    assert events == [AgentRegistered(AID, 60, "alice-2", replaced)]
    assert gw.state is GS.REGISTERED and gw.g.handles[AID] == "alice-2"
    reader = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    assert reader.get(AID) is not None


@GATEWAY.row((GS.UNREGISTERED, GS.REGISTERED), GI.REGISTER_REFUSED)
def _refuse_register(state: GatewayState, tmp_path: Path) -> None:
    """Refused by the registry: another domain's record, or an older version."""
    gw = gateway(state, tmp_path)
    if state is GS.UNREGISTERED:
        ack = gw.register(make_record(30, "alice", "b.example"))
        assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.POLICY_DENIED
    else:
        ack = gw.register(ALICE)
        assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.REPLAY
        assert gw.core.get(AID).version == 2  # type: ignore[union-attr]
    assert ack.transaction_id == gw.txid and gw.state is state


@GATEWAY.row(GS.REGISTERED, GI.REFRESH)
def _ack_refresh(state: GatewayState, tmp_path: Path) -> None:
    gw = gateway(state, tmp_path)
    ack = gw.refresh(T0 + 50)
    assert ack == RefreshAck(transaction_id=gw.txid, status=ErrorCode.SUCCESS, lease=60)
    assert gw.g.get_timer() == T0 + 110 and gw.state is GS.REGISTERED


@GATEWAY.row((GS.UNREGISTERED, GS.REGISTERED), GI.REFRESH_REFUSED)
def _refuse_refresh(state: GatewayState, tmp_path: Path) -> None:
    """Unknown here, or its lease over (not yet removed by the lease timer)."""
    gw = gateway(state, tmp_path)
    ack = gw.refresh(T0 + 600)
    expect = ErrorCode.UNKNOWN_AGENT if state is GS.UNREGISTERED else ErrorCode.LEASE_EXPIRED
    assert ack == RefreshAck(transaction_id=gw.txid, status=expect,
                             diagnostic=getattr(ack, "diagnostic", None))
    assert gw.state is state


@GATEWAY.row(GS.UNREGISTERED, GI.DEREGISTER_REFUSED)
def _refuse_deregister(state: GatewayState, tmp_path: Path) -> None:
    gw = gateway(state, tmp_path)
    assert gw.deregister() == DeregisterAck(transaction_id=gw.txid,
                                            status=ErrorCode.UNKNOWN_AGENT)
    assert gw.state is GS.UNREGISTERED


@GATEWAY.row(GS.REGISTERED, GI.DEREGISTER)
def _ack_deregister(state: GatewayState, tmp_path: Path) -> None:
    gw = gateway(state, tmp_path)
    gw.g.receive("alice", wire(Deregister(transaction_id=9, agent_id=AID, nonce=bytes(16),
                                          timestamp=0)), T1)
    sent, events = drain(gw.g.outbox)
    assert sent == [DeregisterAck(transaction_id=9, status=ErrorCode.SUCCESS)]
    assert events == [AgentRemoved(VersionedId(AID, 2), ErrorCode.SUCCESS)]
    assert gw.state is GS.UNREGISTERED and AID not in gw.g.handles


@GATEWAY.row(GS.REGISTERED, GI.LEASE_END)
def _expire(state: GatewayState, tmp_path: Path) -> None:
    gw = gateway(state, tmp_path)
    assert gw.g.get_timer() == T0 + 60
    gw.g.handle_timer(T0 + 60)
    assert drain(gw.g.outbox) == ([], [AgentRemoved(VersionedId(AID, 2),
                                                    ErrorCode.LEASE_EXPIRED)])
    assert gw.state is GS.UNREGISTERED and gw.g.get_timer() is None


test_row, test_every_row_has_a_case = row_tests(AGENT, GATEWAY)
