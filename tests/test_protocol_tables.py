"""The transition tables: well-formed, and every unexpected message in every state is
refused with the right error on the wire while the machine stays consistent
(draft-dmsc-state-machines-00; draft-dmsc-protocol-00 Sections 5.4 and 6.1)."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import pytest

from dmscproto.codec.digest import DigestTree
from dmscproto.codec.messages import (
    Digest,
    Discover,
    Error,
    Message,
    Notify,
    Open,
    RegisterAck,
    RouteReply,
    RouteRequest,
    Summary,
    TraceRequest,
)
from dmscproto.codec.registry import ErrorCode, MessageType, Scope
from dmscproto.codec.values import DiscoveryQuery
from dmscproto.codec.wire import Advertisement
from dmscproto.fsm import TableMachine
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.agent_registration import AgentRegistration
from dmscproto.protocol.bloom import Bloom
from dmscproto.protocol.catalog import MACHINES
from dmscproto.protocol.discovery import DiscoveryResponder
from dmscproto.protocol.dispatch import starting_types
from dmscproto.protocol.events import ProtocolEvent
from dmscproto.protocol.federated import DiscoveryContext, FederatedDiscovery
from dmscproto.protocol.liveness import GatewayLiveness
from dmscproto.protocol.machine import Machine, Outbox, ProtocolError, TransactionIds
from dmscproto.protocol.oam import EchoResponder, TraceRelay
from dmscproto.protocol.peering import LocalGateway, PeerSession
from dmscproto.protocol.registration import GatewayRegistration
from dmscproto.protocol.requester import Requester
from dmscproto.protocol.routing import Outbound, RouteRelay
from dmscproto.protocol.summary import SummaryTable
from dmscproto.protocol.sync import SyncPeer
from dmscproto.protocol.sync_in import SyncIn
from dmscproto.protocol.sync_out import SyncOut
from dmscproto.protocol.sync_out_inputs import Start, TableSent
from dmscproto.testing.examples import by_type, examples
from dmscproto.testing.harness import T0, make_record
from dmscproto.transport.transactions import MACHINES as DATAGRAM_MACHINES

M = MessageType
#: Requests and their answers, as the draft's Section 3.3 table lists them.
REQUESTS = {M.REGISTER, M.REFRESH, M.DEREGISTER, M.DISCOVER, M.ROUTE_REQUEST, M.OPEN,
            M.SYNC_REQUEST, M.DIGEST_REQUEST, M.ECHO_REQUEST, M.TRACE_REQUEST, M.CERTIFICATE}
ME, PEER, PEER2 = bytes([0xEE]) * 16, bytes([0x01]) * 16, bytes([0x02]) * 16
EXAMPLE = {t: examples()[names[0]] for t, names in by_type().items()}


def test_examples_cover_every_message_type() -> None:
    assert set(EXAMPLE) == set(MessageType)


@pytest.mark.parametrize("cls", (*MACHINES, *DATAGRAM_MACHINES), ids=lambda c: c.NAME)
def test_table_is_well_formed(cls: type[TableMachine]) -> None:
    states, inputs, actions = set(cls.State), set(cls.Input), set(cls.Action)
    used_inputs = set()
    used_actions = set()
    for (state, inp), (action, nxt) in cls.TABLE.items():
        assert state in states and nxt in states and inp in inputs and action in actions
        used_inputs.add(inp)
        used_actions.add(action)
        assert callable(getattr(cls, "_" + action.name.lower(), None)), action
    assert used_inputs == inputs, "an input no transition uses"
    assert used_actions == actions, "an action no transition uses"
    # every state is reachable from the initial one
    seen, todo = {cls.INITIAL}, [cls.INITIAL]
    while todo:
        s = todo.pop()
        for (src, _), (_, nxt) in cls.TABLE.items():
            if src is s and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == states
    for t, inps in cls.MESSAGE_INPUTS.items():
        assert isinstance(t, MessageType) and set(inps) <= inputs


def _table_machines() -> set[str]:
    """The classes of the package that declare a ``TABLE`` (read from the source, so a
    machine no catalog lists is found too)."""
    package = Path(__file__).resolve().parent.parent / "dmscproto"
    return {node.name for f in package.rglob("*.py") if "TABLE = " in (text := f.read_text())
            for node in ast.parse(text).body
            if isinstance(node, ast.ClassDef) and any(
                isinstance(st, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TABLE"
                                                   for t in st.targets)
                for st in node.body)}


def test_every_table_row_has_a_test() -> None:
    """Every table machine is in a catalog (so the diagrams and these tests see it) and
    has row cases (``RowCases(M)`` in a ``tests/test_rows_*.py``: one test per row,
    and a check that every row has one).  A row added without a case fails that
    check; a machine added without row cases fails this."""
    machines = _table_machines()
    assert machines == {m.__name__ for m in (*MACHINES, *DATAGRAM_MACHINES)}
    covered = {name for f in Path(__file__).parent.glob("test_rows_*.py")
               for name in re.findall(r"\bRowCases\((\w+)\)", f.read_text())}
    assert machines - covered == set(), "table machines without row cases"


# --- machines driven into each of their states by real inputs -------------------------------
@dataclass
class Rig:
    """A machine in a state, how to feed it a message, and the txid it expects."""

    machine: Machine
    feed: Callable[[Message], None]
    outbox: Outbox
    txid: int = 7


def _core(tmp_path: Path) -> GatewayCore:
    return GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))


def _agent_registration(state: Enum, tmp_path: Path) -> Rig:
    out = Outbox()
    m = AgentRegistration(out, "gw", TransactionIds(), nonce=lambda: bytes(16))
    signed = make_record(30, "alice", "a.example")
    if state is not m.State.IDLE:
        m.register(signed, 600, T0)
        if state is not m.State.REGISTERING:
            [(_, reg)] = out.messages_to_send()
            m.receive(RegisterAck(transaction_id=reg.transaction_id, status=ErrorCode.SUCCESS,
                                  agent_id=signed.record.agent_id, lease=600), T0)
            if state is m.State.REFRESHING:
                m.handle_timer(T0 + 300)
            elif state is m.State.DEREGISTERING:
                m.deregister(T0 + 1)
    out.messages_to_send()
    assert m.state is state
    return Rig(m, lambda msg: m.receive(msg, T0 + 2), out, m._pending or 7)


def _gateway_registration(state: Enum, tmp_path: Path) -> Rig:
    out = Outbox()
    m = GatewayRegistration(out, _core(tmp_path))
    signed = make_record(30, "alice", "a.example")
    if state is m.State.REGISTERED:
        assert m.core.register(signed, 600, T0).status is ErrorCode.SUCCESS
    m.state = m.state_of(signed.record.agent_id)
    assert m.state is state
    return Rig(m, lambda msg: m.receive("alice", msg, T0 + 1), out)


def _requester(state: Enum, tmp_path: Path) -> Rig:
    out = Outbox()
    m = Requester(out, "gw", replace(EXAMPLE[M.DISCOVER], transaction_id=7))
    if state is not m.State.IDLE:
        m.send(T0)
        if state is m.State.DONE:
            m.receive(replace(EXAMPLE[M.DISCOVER_REPLY], transaction_id=7), T0 + 1)
    out.messages_to_send()
    assert m.state is state
    return Rig(m, lambda msg: m.receive(msg, T0 + 2), out)


def _responder(cls: type[DiscoveryResponder] | type[EchoResponder]) -> Callable[..., Rig]:
    def make(state: Enum, tmp_path: Path) -> Rig:
        out = Outbox()
        m = (DiscoveryResponder(out, _core(tmp_path)) if cls is DiscoveryResponder
             else EchoResponder(out, ME))
        return Rig(m, lambda msg: m.receive("agent", msg, T0), out)
    return make


def _relay(cls: type[RouteRelay] | type[TraceRelay]) -> Callable[..., Rig]:
    def make(state: Enum, tmp_path: Path) -> Rig:
        out = Outbox()
        core = _core(tmp_path)
        local, remote = make_record(30, "alice", "a.example"), make_record(31, "bob", "b.ex")
        core.register(local, 600, T0)
        assert core.learn(Advertisement(1, (PEER,), remote), PEER, T0)
        node = GatewayNode(core)  # the routing port: its peer and agent associations
        # the certificate an origin assertion would name goes with a forwarded request
        node.ctx.outgoing = lambda _up, req, _txid, _now: Outbound(req, b"certificate")
        node.peers[PEER] = "peer"
        node.registration.handles[local.record.agent_id] = "alice"
        ctx = node.ctx
        target = {"DELIVERED": local}.get(state.name, remote)
        if cls is TraceRelay and state.name == "DONE":
            target = local  # answered at once
        path = (ME,) if state.name == "DONE" and cls is RouteRelay else ()
        req: RouteRequest | TraceRequest
        if cls is RouteRelay:
            req = RouteRequest(transaction_id=5, source_agent=PEER,
                               target_agent=target.record.agent_id, hop_limit=8, path=path,
                               payload=b"x")
            m: RouteRelay | TraceRelay = RouteRelay(out, ctx, "up", req)
        else:
            req = TraceRequest(transaction_id=5, target_agent=target.record.agent_id,
                               hop_limit=8, path=())
            m = TraceRelay(out, ctx, "up", req)
        if state is not m.State.IDLE:
            m.start(T0)
        if state is RouteRelay.State.CERTIFYING:  # the next hop does not hold it
            assert m.downstream is not None
            m.receive("down", RouteReply(transaction_id=m.downstream[1],
                                         status=ErrorCode.CERTIFICATE_UNKNOWN), T0)
        out.messages_to_send()
        assert m.state is state
        txid = m.downstream[1] if m.downstream else 7
        return Rig(m, lambda msg: m.receive("down", msg, T0 + 1), out, txid)
    return make


def _session(state: Enum, tmp_path: Path) -> Rig:
    out = Outbox()
    node = GatewayNode(_core(tmp_path))
    node._out = out  # the session's sync machine writes where the test reads
    m = PeerSession(out, "peer", LocalGateway(ME, "a.example"), node, TransactionIds())
    peer_open = Open(transaction_id=99, gateway_id=PEER, domain="b.example", hold_time=90,
                     capabilities=0)
    if state is m.State.OPEN_SENT or state is m.State.ESTABLISHED:
        m.start(T0)
        if state is m.State.ESTABLISHED:
            [(_, mine)] = out.messages_to_send()
            m.receive(replace(peer_open, transaction_id=mine.transaction_id), T0)
    elif state is m.State.OPEN_CONFIRM:
        m.receive(peer_open, T0)
    out.messages_to_send()
    out.events.clear()
    assert m.state is state
    return Rig(m, lambda msg: m.receive(msg, T0 + 1), out)


def _sync_link() -> SyncPeer:
    return SyncPeer("peer", PEER, "b.example", lambda _msg, _now: None)


def _sync_out(state: Enum, tmp_path: Path) -> Rig:
    m = SyncOut(Outbox(), _core(tmp_path), _sync_link(), TransactionIds())
    if state is not m.State.NEW:
        m.run(Start(), T0)
        if state is m.State.READY:
            m.run(TableSent(), T0)
    assert m.state is state
    return Rig(m, lambda msg: m.receive(msg, T0 + 1), m.outbox)


def _sync_in(state: Enum, tmp_path: Path) -> Rig:
    m = SyncIn(Outbox(), _core(tmp_path), _sync_link(), TransactionIds(),
               lambda _h, _s, _t: None)
    if state is not m.State.AWAITING_TABLE:
        other = DigestTree()
        if state is m.State.RECONCILING:
            other.put(bytes([9]) * 16, 1)
        m.receive(Digest(sequence=0, summary=other.summary()), T0)
    assert m.state is state
    return Rig(m, lambda msg: m.receive(msg, T0 + 1), m.outbox)


def _federated(state: Enum, tmp_path: Path) -> Rig:
    """gw-a holds summaries of b.example (through PEER) and c.example (through PEER2)
    offering 'forecast'; a query for it is relayed to both (RELAYED), one for 'juggle'
    answered at once (DONE)."""
    out = Outbox()
    core = _core(tmp_path)
    table = SummaryTable(ME)
    peers = {PEER: "peer", PEER2: "peer2"}  # two domains offer it: two DISCOVERs relayed
    for n, (gid, domain) in enumerate(((PEER, "b.example"), (PEER2, "c.example"))):
        bloom = Bloom.of([make_record(31 + n, "bob", domain).record])
        assert table.learn(Summary(gateway_id=gid, timestamp=1, path=(gid,), domain=domain,
                                   summary=bloom.value), gid)
    ctx = DiscoveryContext(core, core.remote, table, TransactionIds(), peers.get,
                           lambda _h, _s, _t: None, lambda _h: None, lambda _p, _d: True)
    skill = "juggle" if state is FederatedDiscovery.State.DONE else "forecast"
    m = FederatedDiscovery(out, ctx, "agent", Discover(
        transaction_id=5, query=DiscoveryQuery(skills=(skill,)), scope=Scope.FEDERATED,
        max_results=5), None)
    if state is not m.State.IDLE:
        m.start(T0)
    out.messages_to_send()
    assert m.state is state
    txid = next(iter(m.pending))[1] if m.pending else 7
    return Rig(m, lambda msg: m.receive("peer", msg, T0 + 1), out, txid)


def _liveness(state: Enum, tmp_path: Path) -> Rig:
    """An agent's watch: every message is HEARD in every state (none is unexpected)."""
    out = Outbox()

    class Port:
        def probe(self, now: float) -> None:
            pass

    m = GatewayLiveness(out, Port(), keepalive=1.0)
    if state is not m.State.IDLE:
        m.watch(T0)
        m.handle_timer(T0 + {"WATCHING": 0.0, "PROBING": 1.0, "LOST": 3.0}[state.name])
    assert m.state is state
    return Rig(m, lambda msg: m.heard(T0 + 3), out)


RIGS: dict[type[Machine], Callable[[Enum, Path], Rig]] = {
    FederatedDiscovery: _federated,
    AgentRegistration: _agent_registration,
    GatewayRegistration: _gateway_registration,
    Requester: _requester,
    DiscoveryResponder: _responder(DiscoveryResponder),
    EchoResponder: _responder(EchoResponder),
    RouteRelay: _relay(RouteRelay),
    TraceRelay: _relay(TraceRelay),
    PeerSession: _session,
    SyncOut: _sync_out,
    SyncIn: _sync_in,
    GatewayLiveness: _liveness,
}


def test_every_machine_has_a_rig() -> None:
    assert set(RIGS) == set(MACHINES)


def _inputs(cls: type[Machine], t: MessageType) -> tuple[Enum, ...]:
    if cls is Requester:  # its answer type is DISCOVER's: DISCOVER_REPLY
        return {M.DISCOVER_REPLY: (Requester.Input.ANSWER,),
                M.ERROR: (Requester.Input.ERROR,)}.get(t, ())
    return cls.MESSAGE_INPUTS.get(t, ())


def unexpected_cases() -> Iterator[tuple[type[Machine], Enum, MessageType]]:
    """(machine, state, message type) with no table entry for any input the type maps to."""
    for cls in MACHINES:
        for state in cls.State:
            for t in MessageType:
                if not any((state, i) in cls.TABLE for i in _inputs(cls, t)):
                    yield cls, state, t


CASES = list(unexpected_cases())


def test_product_is_large() -> None:
    # all 21 message types in every state of every machine, less the expected ones
    total = sum(len(cls.State) for cls in MACHINES) * len(MessageType)
    assert 0.8 * total < len(CASES) < total


@pytest.mark.parametrize(("cls", "state", "mtype"), CASES,
                         ids=[f"{c.NAME}-{s.name}-{t.name}" for c, s, t in CASES])
def test_unexpected_message_is_refused(cls: type[Machine], state: Enum, mtype: MessageType,
                                       tmp_path: Path) -> None:
    rig = RIGS[cls](state, tmp_path)
    msg = replace(EXAMPLE[mtype], transaction_id=rig.txid)
    with pytest.raises(ProtocolError) as exc:
        rig.feed(msg)
    assert exc.value.code is ErrorCode.UNEXPECTED_MESSAGE
    assert exc.value.message_type is mtype
    sent = [m for _, m in rig.outbox.messages_to_send()]
    if cls is PeerSession:
        # a peer session answers NOTIFY (never to a NOTIFY) and closes (Section 6.1)
        if mtype is M.NOTIFY:
            assert sent == []
        else:
            assert [type(m) for m in sent] == [Notify]
            assert isinstance(sent[0], Notify)
            assert sent[0].status is ErrorCode.UNEXPECTED_MESSAGE
        assert rig.machine.state is PeerSession.State.IDLE
        return
    if cls in (SyncOut, SyncIn):
        assert sent == []  # the session owning it answers (previous branch)
    elif mtype in REQUESTS:
        assert len(sent) == 1 and isinstance(sent[0], Error)
        err = sent[0]
        assert (err.status, err.offending_type, err.transaction_id) == \
            (ErrorCode.UNEXPECTED_MESSAGE, int(mtype), rig.txid)
    else:
        assert sent == [], "answers, one-way messages and ERROR are never answered"
    assert rig.machine.state is state, "the machine must stay where it was"


# --- dispatch derived from the tables (dmscproto.protocol.dispatch) ---------------------------
def test_the_types_that_start_a_transaction_come_from_the_tables() -> None:
    assert {cls: starting_types(cls) for cls in (PeerSession, RouteRelay, TraceRelay,
                                                 FederatedDiscovery, Requester)} == {
        PeerSession: {M.OPEN}, RouteRelay: {M.ROUTE_REQUEST}, TraceRelay: {M.TRACE_REQUEST},
        FederatedDiscovery: {M.DISCOVER}, Requester: set()}


def test_node_dispatch_covers_its_machines_message_inputs(tmp_path: Path) -> None:
    """The node takes exactly the types its machines have inputs for (the sync machines'
    through the session's), each first by the transaction it may answer."""
    node = GatewayNode(_core(tmp_path))
    machines = {r.machine for r in node._receivers()}
    assert machines == {GatewayRegistration, DiscoveryResponder, FederatedDiscovery,
                        RouteRelay, PeerSession, EchoResponder, TraceRelay}
    assert set(node._takers) == {t for cls in machines for t in cls.MESSAGE_INPUTS}
    for sync in (SyncIn, SyncOut):
        assert set(sync.MESSAGE_INPUTS) <= set(PeerSession.MESSAGE_INPUTS)
    assert node._takers[M.ERROR] == (node._to_relay, node._to_federated, node._to_session)
    assert node._takers[M.DISCOVER] == (node._relay_discover, node._discover)


def test_agent_dispatch_covers_its_machines_message_inputs() -> None:
    client = AgentClient(make_record(30, "alice", "a.example"), "gw")
    assert set(client._takers) == (set(Requester.MESSAGE_INPUTS)
                                   | set(AgentRegistration.MESSAGE_INPUTS) | {M.ROUTE_REQUEST})
    assert client._takers[M.ERROR] == (client._to_request, client._to_registration)


# --- typed events: each machine reports on its own base (dmscproto.protocol.events) ----------
def _emitted(cls: type) -> Iterator[type]:
    """The event classes the source of ``cls`` and its protocol bases passes to emit()."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("dmscproto.protocol"):
            continue
        module = sys.modules[klass.__module__]
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(klass)))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "emit" and node.args \
                    and isinstance(node.args[0], ast.Call) \
                    and isinstance(node.args[0].func, ast.Name):
                yield getattr(module, node.args[0].func.id)


@pytest.mark.parametrize("cls", MACHINES, ids=lambda c: c.NAME)
def test_machine_events_share_its_event_base(cls: type[Machine]) -> None:
    emitted = set(_emitted(cls))
    if cls.EVENTS is None:
        assert emitted == set(), "a machine that reports events declares their base"
        return
    assert emitted and all(issubclass(e, cls.EVENTS) for e in emitted), emitted
    assert issubclass(cls.EVENTS, ProtocolEvent) and cls.EVENTS is not ProtocolEvent
