"""Every row of the discovery and echo responders and of relayed (federated) discovery,
one test each (draft-dmsc-protocol-00 Sections 5.2, 5.2.1, 6.8, 6.9, 10.7;
:mod:`row_cases`): a gateway's real SQLite registry holds alice (skill "greet"); the
capability summaries of b.example (through PEER) and c.example (through PEER2) offer
"forecast"; requests and answers go through the codec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from row_cases import ME, PEER, RowCases, row_tests, wire

from dmscproto.codec.messages import (
    Discover,
    DiscoverReply,
    EchoReply,
    EchoRequest,
    Error,
    Message,
    Summary,
)
from dmscproto.codec.registry import ErrorCode, MessageType, Scope, timer
from dmscproto.codec.values import DiscoveryQuery, Skill
from dmscproto.codec.wire import Result
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.limits import Budget
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.bloom import Bloom
from dmscproto.protocol.discovery import DiscoveryResponder, ResponderInput, ResponderState
from dmscproto.protocol.federated import DiscoveryContext, FederatedDiscovery, FedInput, FedState
from dmscproto.protocol.machine import Outbox, TransactionIds
from dmscproto.protocol.oam import EchoInput, EchoResponder, EchoState
from dmscproto.protocol.registration import verify_signature
from dmscproto.protocol.summary import SummaryTable
from dmscproto.testing.harness import T0, make_record

FED = RowCases(FederatedDiscovery)
RESPONDER = RowCases(DiscoveryResponder)
ECHO = RowCases(EchoResponder)
FS, FI = FedState, FedInput
T1 = T0 + 1
PEER2 = bytes([0x02]) * 16
ALICE = make_record(30, "alice", "a.example", skills=(Skill("greet", "Greet"),))
BOB, CAROL = make_record(31, "bob", "b.example"), make_record(32, "carol", "c.example")
#: Where each peer's domain is reached, and the record it answers with.
PEERS = {PEER: ("peer", "b.example", BOB), PEER2: ("peer2", "c.example", CAROL)}
WAIT = timer("REQUEST_TIMEOUT") * timer("FORWARD_FRACTION")  # one relay on the path


def over_budget() -> Budget:
    """A budget used up at the first look at the index (a clock a second a reading)."""
    ticks = iter(range(10**6))
    return Budget(0.0, clock=lambda: float(next(ticks)))


def core(tmp_path: Path) -> GatewayCore:
    c = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    assert c.register(ALICE, 600, T0).status is ErrorCode.SUCCESS
    return c


def discover(skill: str | None = None, intent: str | None = None) -> Discover:
    query = DiscoveryQuery(skills=(skill,)) if skill else DiscoveryQuery(intent=intent)
    return wire(Discover(transaction_id=5, query=query, scope=Scope.FEDERATED,
                         max_results=5))


def sent(out: Outbox) -> list[tuple[object, Message]]:
    return [(d, wire(m)) for d, m in out.messages_to_send()]


# --- the responders -----------------------------------------------------------------------------
@RESPONDER.row(ResponderState.READY, ResponderInput.DISCOVER)
def _answer(state: ResponderState, tmp_path: Path) -> None:
    d = DiscoveryResponder(Outbox(), core(tmp_path))
    d.receive("agent", discover("greet"), T1)
    [(dest, reply)] = sent(d.outbox)
    assert dest == "agent" and isinstance(reply, DiscoverReply)
    assert (reply.transaction_id, reply.status) == (5, ErrorCode.SUCCESS)
    assert [r.record for r in reply.results] == [ALICE] and d.state is ResponderState.READY


@RESPONDER.row(ResponderState.READY, ResponderInput.DISCOVER_TOO_LARGE)
def _refuse(state: ResponderState, tmp_path: Path) -> None:
    """An evaluation (ranking by intent) that uses up DISCOVER_BUDGET."""
    d = DiscoveryResponder(Outbox(), core(tmp_path), budget=over_budget().start)
    d.receive("agent", discover(intent="greet"), T1)
    [(_, reply)] = sent(d.outbox)
    assert isinstance(reply, DiscoverReply) and reply.results == ()
    assert (reply.transaction_id, reply.status) == (5, ErrorCode.QUERY_TOO_LARGE)
    assert d.state is ResponderState.READY


@ECHO.row(EchoState.READY, EchoInput.ECHO_REQUEST)
def _echo(state: EchoState, tmp_path: Path) -> None:
    e = EchoResponder(Outbox(), ME)
    e.receive("agent", wire(EchoRequest(transaction_id=3, sequence=4, timestamp=5,
                                        payload=b"p")), T1)
    assert sent(e.outbox) == [("agent", EchoReply(transaction_id=3, sequence=4, timestamp=5,
                                                  gateway_id=ME, payload=b"p"))]
    assert e.state is EchoState.READY


# --- relayed discovery ----------------------------------------------------------------------
@dataclass
class Relayed:
    m: FederatedDiscovery
    ctx: DiscoveryContext

    def reply(self, gid: bytes, at: float = T1) -> None:
        """The DISCOVER_REPLY of the peer ``gid`` (its domain's record)."""
        handle, _, signed = PEERS[gid]
        [txid] = [t for (h, t) in self.m.pending if h == handle]
        self.m.receive(handle, wire(DiscoverReply(transaction_id=txid, status=ErrorCode.SUCCESS,
                                                  results=(Result(90, signed),))), at)


def federated(tmp_path: Path, skill: str, state: FedState = FS.IDLE, *,
              budget: Budget | None = None) -> Relayed:
    c = core(tmp_path)
    table = SummaryTable(ME)
    for gid, (_, domain, signed) in PEERS.items():
        assert table.learn(Summary(gateway_id=gid, timestamp=1, path=(gid,), domain=domain,
                                   summary=Bloom.of([signed.record]).value), gid)
    handles = {gid: h for gid, (h, _, _) in PEERS.items()}
    ctx = DiscoveryContext(c, c.remote, table, TransactionIds(), handles.get,
                           verify_signature, lambda _h: None, lambda _p, _d: True,
                           budget=None if budget is None else budget.start)
    r = Relayed(FederatedDiscovery(Outbox(), ctx, "agent", discover(skill), None), ctx)
    if state is FS.RELAYED:
        r.m.start(T0)
        sent(r.m.outbox)
    assert r.m.state is state
    return r


def answered(r: Relayed, *records: object) -> None:
    """The requester got the merged answer: ``records``, in order."""
    [(dest, reply)] = sent(r.m.outbox)
    assert dest == "agent" and isinstance(reply, DiscoverReply)
    assert (reply.transaction_id, reply.status) == (5, ErrorCode.SUCCESS)
    assert [x.record for x in reply.results] == list(records)
    assert r.m.state is FS.DONE and r.m.get_timer() is None


@FED.row(FS.IDLE, FI.LOCAL)
def _answer_held(state: FedState, tmp_path: Path) -> None:
    """No summary offers "greet": answered from the records held."""
    r = federated(tmp_path, "greet")
    r.m.start(T1)
    answered(r, ALICE)


@FED.row(FS.IDLE, FI.RELAY)
def _relay(state: FedState, tmp_path: Path) -> None:
    r = federated(tmp_path, "forecast")
    r.m.start(T1)
    out = sent(r.m.outbox)
    assert sorted(d for d, _ in out) == ["peer", "peer2"]  # type: ignore[type-var]
    for _, fwd in out:
        assert isinstance(fwd, Discover) and fwd.transaction_id != 5
        assert (fwd.scope, fwd.path) == (Scope.FEDERATED, (ME,))
        assert fwd.query == DiscoveryQuery(skills=("forecast",))
    assert r.m.state is FS.RELAYED and r.m.get_timer() == T1 + WAIT


@FED.row(FS.IDLE, FI.OVER_BUDGET)
def _refuse_federated(state: FedState, tmp_path: Path) -> None:
    r = federated(tmp_path, "forecast", budget=over_budget())
    r.m.start(T1)
    [(_, reply)] = sent(r.m.outbox)
    assert isinstance(reply, DiscoverReply) and reply.status is ErrorCode.QUERY_TOO_LARGE
    assert reply.transaction_id == 5 and r.m.state is FS.DONE


@FED.row(FS.RELAYED, FI.REPLY)
def _collect(state: FedState, tmp_path: Path) -> None:
    """One answer of two: kept, nothing answered yet; an ERROR counts as an answer."""
    r = federated(tmp_path, "forecast", state)
    r.reply(PEER)
    assert sent(r.m.outbox) == [] and r.m.state is FS.RELAYED and len(r.m.pending) == 1
    [(handle, txid)] = r.m.pending
    r.m.receive(handle, wire(Error(transaction_id=txid, status=ErrorCode.RATE_LIMITED,
                                   offending_type=int(MessageType.DISCOVER))), T1)
    answered(r, BOB)


@FED.row(FS.RELAYED, FI.LAST_REPLY)
def _merge(state: FedState, tmp_path: Path) -> None:
    """Both answers merged, and kept: the same query is then answered at once."""
    r = federated(tmp_path, "forecast", state)
    r.reply(PEER)
    r.reply(PEER2)
    answered(r, *sorted((BOB, CAROL), key=lambda s: s.record.agent_id))
    again = FederatedDiscovery(Outbox(), r.ctx, "agent", discover("forecast"), None)
    again.start(T1)
    [(_, reply)] = sent(again.outbox)
    assert isinstance(reply, DiscoverReply) and len(reply.results) == 2
    assert again.state is FS.DONE


@FED.row(FS.RELAYED, FI.TIMEOUT)
def _merge_on_timeout(state: FedState, tmp_path: Path) -> None:
    """The other peer never answers: what came is answered at the transaction time."""
    r = federated(tmp_path, "forecast", state)
    r.reply(PEER2)
    r.m.handle_timer(T0 + WAIT)
    answered(r, CAROL)


test_row, test_every_row_has_a_case = row_tests(FED, RESPONDER, ECHO)
