"""Single machines driven by hand: timer values, retries, guards and edge cases
(draft-dmsc-state-machines-00)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from dmscproto.agent.results import Request
from dmscproto.codec.digest import ROOT, DigestTree, summarize
from dmscproto.codec.messages import (
    Digest,
    DigestRequest,
    Discover,
    EchoReply,
    EchoRequest,
    Error,
    Keepalive,
    Message,
    Notify,
    Open,
    Refresh,
    Register,
    RegisterAck,
    SyncAck,
    SyncRequest,
    Update,
)
from dmscproto.codec.registry import (
    MAX_PDU_SIZE,
    TLV_HEADER_SIZE,
    ErrorCode,
    GatewayCaps,
    MessageType,
    Scope,
    timer,
)
from dmscproto.codec.values import DiscoveryQuery
from dmscproto.codec.wire import Advertisement, DigestNode, Result, VersionedId
from dmscproto.fsm import slot_stores
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol import routing
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.agent_registration import AgentRegistration, AgentState
from dmscproto.protocol.discovery import fit_results
from dmscproto.protocol.events import (
    ProtocolViolation,
    RegistrationLost,
    RequestCompleted,
    RequestFailed,
    RouteRequestReceived,
    SessionClosed,
    TableChanged,
)
from dmscproto.protocol.machine import (
    Outbox,
    ProtocolError,
    Refusal,
    TransactionIds,
    earliest,
    refusal_answer,
)
from dmscproto.protocol.peering import LocalGateway, PeerSession, PeerState, SessionTimers
from dmscproto.protocol.ports import NextHop
from dmscproto.protocol.requester import Answered, Requests
from dmscproto.protocol.routing import RouteAnswered, RouteLocal
from dmscproto.protocol.sync import PeerSync, SyncPeer
from dmscproto.protocol.sync_in import SyncIn
from dmscproto.protocol.sync_in_inputs import InState
from dmscproto.testing.harness import T0, make_record

ME, PEER = bytes([0xEE]) * 16, bytes([0x01]) * 16


@pytest.fixture
def core(tmp_path: Path) -> Iterator[GatewayCore]:
    c = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    yield c
    c.store.close()


def state(m: AgentRegistration | SyncIn | PeerSession) -> Enum:
    """The machine's state, unnarrowed (mypy narrows ``m.state`` after a check)."""
    return m.state


def sent(out: Outbox) -> list[Message]:
    return [m for _, m in out.messages_to_send()]


# --- agent registration ---------------------------------------------------------------------
def registered_agent() -> tuple[AgentRegistration, Outbox]:
    out = Outbox()
    nonces = iter(range(100))
    m = AgentRegistration(out, "gw", TransactionIds(), nonce=lambda: bytes([next(nonces)]) * 16)
    m.register(make_record(30, "alice", "a.example"), 100, T0)
    [reg] = sent(out)
    assert isinstance(reg, Register) and reg.timestamp == int(T0 * 1000)
    # the answer arrives 2 s later; the lease still counts from the REGISTER
    m.receive(RegisterAck(transaction_id=reg.transaction_id, status=ErrorCode.SUCCESS,
                          agent_id=reg.record.record.agent_id, lease=100), T0 + 2)
    return m, out


def test_agent_timers_follow_the_granted_lease() -> None:
    m, out = registered_agent()
    assert (m.lease_end, m.get_timer()) == (T0 + 100, T0 + 50)
    m.handle_timer(T0 + 49.9)
    assert m.state is AgentState.REGISTERED and sent(out) == []
    m.handle_timer(T0 + 50)
    [ref] = sent(out)
    assert isinstance(ref, Refresh) and m.get_timer() == T0 + 60  # REQUEST_TIMEOUT
    # unanswered: sent again with a new transaction id and nonce, until the lease ends
    m.handle_timer(T0 + 60)
    [again] = sent(out)
    assert isinstance(again, Refresh)
    assert again.transaction_id != ref.transaction_id and again.nonce != ref.nonce
    for t in (70, 80, 90):
        m.handle_timer(T0 + t)
        assert [type(x) for x in sent(out)] == [Refresh]
    m.handle_timer(T0 + 100)
    assert [type(x) for x in sent(out)] == [Register]
    assert state(m) is AgentState.REGISTERING
    assert [e for e in out.events if isinstance(e, RegistrationLost)] == \
        [RegistrationLost(ErrorCode.LEASE_EXPIRED)]


def test_agent_answer_with_a_stale_transaction_id_is_dropped() -> None:
    m, out = registered_agent()
    m.handle_timer(T0 + 50)
    [ref] = sent(out)
    with pytest.raises(ProtocolError):
        m.receive(RegisterAck(transaction_id=ref.transaction_id, status=ErrorCode.SUCCESS), T0)
    with pytest.raises(ProtocolError):
        m.receive(Error(transaction_id=ref.transaction_id + 1, status=ErrorCode.REPLAY), T0)
    assert m.state is AgentState.REFRESHING and sent(out) == []


def test_local_call_in_the_wrong_state_raises() -> None:
    m, _ = registered_agent()
    m.deregister(T0)
    with pytest.raises(ProtocolError):
        m.register(make_record(30, "alice", "a.example"), 100, T0)
    assert m.state is AgentState.DEREGISTERING


def test_register_again_replaces_the_record() -> None:
    """A registered agent may REGISTER a new record (other skills): the late answer to
    the first request is refused, the second's is taken."""
    m, out = registered_agent()
    newer = make_record(31, "alice", "a.example")
    m.register(newer, 100, T0 + 1)
    [reg] = sent(out)
    assert isinstance(reg, Register) and reg.record == newer
    assert m.state is AgentState.REGISTERING
    m.receive(RegisterAck(transaction_id=reg.transaction_id, status=ErrorCode.SUCCESS,
                          agent_id=newer.record.agent_id, lease=100), T0 + 1)
    assert m.state is AgentState.REGISTERED and m.signed == newer


def test_agent_timer_is_the_earliest_of_its_machines() -> None:
    """AgentClient.get_timer (and its registration's, both written out without
    earliest()) against earliest() of what each machine holds, over random states in
    which each timer is unset, the earliest, or tied with another (the lease end counts
    only while REFRESHING)."""
    rng = random.Random(18)
    client = AgentClient(make_record(30, "alice", "a.example"), "gw", keepalive=30.0)
    reg, live = client.registration, client.liveness
    assert live is not None
    picks = (None, T0 + 1, T0 + 2, T0 + 3)
    seen: set[int] = set()
    for txid in range(2000):
        reg.state = rng.choice(list(AgentState))
        reg._deadline, reg._refresh_at, reg.lease_end = (rng.choice(picks) for _ in range(3))
        live._quiet_at, live._silent_at = rng.choice(picks), rng.choice(picks)
        for open_txid in list(client.requests._open):
            client.cancel(open_txid, T0)
        request = rng.choice(picks)
        if request is not None:
            client.requests.start("gw", EchoRequest(transaction_id=txid, sequence=1,
                                                    timestamp=0), T0, timeout=request - T0)
        lease_end = reg.lease_end if reg.state is AgentState.REFRESHING else None
        registration = earliest(reg._deadline, reg._refresh_at, lease_end)
        assert reg.get_timer() == registration
        expected = earliest(registration, request, live._quiet_at, live._silent_at)
        assert client.get_timer() == expected
        seen.update(i for i, t in enumerate((reg._deadline, reg._refresh_at, lease_end,
                                              request, live._quiet_at, live._silent_at))
                    if t is not None and t == expected)
    assert seen == set(range(6))  # each of them was the earliest in some state


@pytest.mark.parametrize("cls", [RequestCompleted, RouteRequestReceived, Answered, NextHop,
                                 RouteLocal, routing.Answered, RouteAnswered, Request])
def test_slot_stores_makes_what_the_frozen_dataclass_makes(cls: type[Any]) -> None:
    """An object a slot_stores __init__ made against one made as the frozen dataclass's
    __init__ makes it (object.__setattr__ per field): the same fields, equality, hash,
    repr, still frozen; positional or by keyword, a default where none is given, no
    field missing or extra."""
    made_fields = fields(cls)
    names = [f.name for f in made_fields]
    required = sum(f.default is MISSING for f in made_fields)
    values = [object() for _ in names]

    def reference(given: list[object]) -> object:
        ref = object.__new__(cls)
        for f, value in zip(made_fields, given + [f.default for f in made_fields[len(given):]],
                            strict=True):
            object.__setattr__(ref, f.name, value)
        return ref

    made, by_keyword = cls(*values), cls(**dict(zip(names, values, strict=True)))
    for got in (made, by_keyword):
        expected = reference(values)
        assert type(got) is cls and got == expected and hash(got) == hash(expected)
        assert repr(got) == repr(expected)
        assert [getattr(got, n) for n in names] == values
    if required < len(names):  # the defaults given where a value is not
        assert cls(*values[:required]) == reference(values[:required])
    assert list(inspect.signature(cls).parameters) == names
    with pytest.raises(FrozenInstanceError):
        setattr(made, names[0], None)
    with pytest.raises(TypeError):
        cls(*values[:required - 1])
    with pytest.raises(TypeError):
        cls(*values, None)


def test_slot_stores_refuses_what_it_would_not_honour() -> None:
    @dataclass(frozen=True, slots=True)
    class Factory:
        a: int
        b: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int
        b: int = field(default=0, kw_only=True)

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            assert self.a > 0

    for cls in (Factory, KeywordOnly, Checked):
        with pytest.raises(TypeError):
            slot_stores(cls)


# --- requester ----------------------------------------------------------------------------------
def test_late_answer_after_timeout_is_dropped() -> None:
    out = Outbox()
    reqs = Requests(out)
    reg = Register(transaction_id=5, record=make_record(30, "a", "a.example"), lease=1,
                   nonce=bytes(16), timestamp=0)
    reqs.start("gw", reg, T0, timeout=3)
    assert reqs.get_timer() == T0 + 3
    reqs.handle_timer(T0 + 3)
    assert [type(e) for e in out.events] == [RequestFailed] and len(reqs) == 0
    with pytest.raises(ProtocolError):
        reqs.receive(RegisterAck(transaction_id=5, status=ErrorCode.SUCCESS), T0 + 4)
    assert sent(out) == [reg]  # nothing answers a stray answer


def test_requests_timer_is_the_earliest_outstanding_deadline() -> None:
    reqs = Requests(Outbox())

    def echo(txid: int, timeout: float) -> None:
        reqs.start("gw", EchoRequest(transaction_id=txid, sequence=1, timestamp=0), T0,
                   timeout=timeout)

    def answer(txid: int) -> None:
        reqs.receive(EchoReply(transaction_id=txid, sequence=1, timestamp=0, gateway_id=ME),
                     T0)

    for txid, timeout in ((1, 5), (2, 3), (3, 9)):
        echo(txid, timeout)
    assert reqs.get_timer() == T0 + 3
    reqs.cancel(2, T0)
    assert reqs.get_timer() == T0 + 5
    answer(1)
    assert reqs.get_timer() == T0 + 9
    for txid in range(100, 400):  # answered behind one still waiting: kept few
        echo(txid, 10)
        answer(txid)
    assert reqs.get_timer() == T0 + 9 and len(reqs._deadlines) <= 2 * len(reqs) + 65
    reqs.cancel(3, T0)
    assert reqs.get_timer() is None


# --- peering ------------------------------------------------------------------------------------
def session(core: GatewayCore, hold: int = 90, refuse: Refusal | None = None,
            keepalive: float | None = None) -> tuple[PeerSession, Outbox]:
    out = Outbox()
    node = GatewayNode(core, accept_open=lambda _h, _o: refuse)
    node._out = out  # the session's sync machine writes where the test reads
    return PeerSession(out, "peer", LocalGateway(ME, "a.example"), node, TransactionIds(),
                       timers=SessionTimers(hold, keepalive)), out


def peer_open(txid: int = 9, hold: int = 90, caps: int = 0) -> Open:
    return Open(transaction_id=txid, gateway_id=PEER, domain="b.example", hold_time=hold,
                capabilities=caps)


def test_refused_open_is_answered_with_error(core: GatewayCore) -> None:
    """A refused OPEN request gets ERROR with its transaction id (its transaction ends at
    once, Section 6.4); an OPEN answering ours that is refused gets NOTIFY and closes."""
    s, out = session(core, refuse=Refusal(ErrorCode.POLICY_DENIED, "b.example is not federated"))
    s.receive(peer_open(), T0)
    [err] = sent(out)
    assert isinstance(err, Error) and err.status is ErrorCode.POLICY_DENIED
    assert (err.transaction_id, err.offending_type) == (9, int(MessageType.OPEN))
    assert err.diagnostic == "b.example is not federated"
    assert s.state is PeerState.IDLE
    s.start(T0)
    [ours] = sent(out)
    s.receive(peer_open(txid=ours.transaction_id), T0)
    [notify] = sent(out)
    assert isinstance(notify, Notify) and notify.status is ErrorCode.POLICY_DENIED
    assert s.state is PeerState.IDLE


def test_open_sent_without_answer_expires(core: GatewayCore) -> None:
    s, out = session(core, hold=30)
    s.start(T0)
    assert [type(m) for m in sent(out)] == [Open] and s.get_timer() == T0 + 30
    s.handle_timer(T0 + 30)
    [notify] = sent(out)
    assert isinstance(notify, Notify) and notify.status is ErrorCode.HOLD_TIMER_EXPIRED
    assert list(out.events) == [SessionClosed("peer", None, ErrorCode.HOLD_TIMER_EXPIRED,
                                              False)]


def test_hold_time_zero_means_no_keepalives(core: GatewayCore) -> None:
    s, out = session(core, hold=0)
    s.receive(peer_open(hold=90), T0)
    s.receive(Keepalive(), T0)
    assert s.state is PeerState.ESTABLISHED and s.hold_time == 0
    sent(out)
    # only the DIGEST timer is left; no KEEPALIVE, no hold timer
    assert s.get_timer() == T0 + 30
    s.handle_timer(T0 + 30)
    assert [type(m) for m in sent(out)] == [Digest]


def test_keepalive_restarts_the_hold_timer(core: GatewayCore) -> None:
    s, out = session(core, hold=60)
    s.start(T0)
    [mine] = sent(out)
    s.receive(peer_open(txid=mine.transaction_id), T0)
    for t in range(10, 200, 10):
        s.receive(Keepalive(), T0 + t)
        s.handle_timer(T0 + t)
    assert s.state is PeerState.ESTABLISHED


# --- sync -----------------------------------------------------------------------------------------
def _sync(core: GatewayCore, limit: int = 65535) -> tuple[PeerSync, list[Message]]:
    msgs: list[Message] = []
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "b.example",
                                             lambda m, _t: msgs.append(m), pdu_limit=limit),
                    TransactionIds(), lambda _h, _s, _t: None)
    sync.start(T0)  # the table, then the DIGEST that closes it
    assert type(msgs[-1]) is Digest
    msgs.clear()
    return sync, msgs


def test_digest_answer_in_runs_is_collected_before_comparing(core: GatewayCore) -> None:
    sync, msgs = _sync(core)
    entries = sorted((VersionedId(bytes([i]) * 16, 1) for i in range(3, 7)),
                     key=lambda e: e.agent_id)
    summary = summarize(entries)
    sync.receive(Digest(sequence=0, summary=summary), T0)          # the peer's table differs
    assert state(sync.inc) is InState.RECONCILING
    [ask] = msgs
    assert isinstance(ask, DigestRequest) and ask.node == ROOT
    msgs.clear()
    sync.receive(Digest(transaction_id=ask.transaction_id, sequence=1, summary=summary,
                        node=ROOT, entries=(tuple(entries[:2]),)), T0)
    assert msgs == []
    sync.receive(Digest(sequence=2, summary=summary, node=ROOT,
                        entries=(tuple(entries[2:]),)), T0)
    [pull] = msgs
    assert isinstance(pull, SyncRequest)
    assert pull.agent_ids == (tuple(e.agent_id for e in entries),)
    # an answer without ADVERTISE ends the exchange
    sync.receive(Update(transaction_id=pull.transaction_id, sequence=3), T0 + 1)
    assert state(sync.inc) is InState.READY
    assert sync.inc.get_timer() == T0 + timer("ACK_DELAY")   # only the ack is due
    sync.handle_timer(T0 + 1)
    [ack] = msgs[1:]
    assert isinstance(ack, SyncAck) and ack.sequence == 4 and sync.inc.get_timer() is None


def test_digest_tree_walk_down_to_the_leaves_that_differ(core: GatewayCore) -> None:
    """Over a DTLS-sized session the root of 60 entries is answered with its children;
    the receiver asks for the children that differ from its own tree, and only those."""
    theirs, mine = _sync(core, 1163), _sync(core, 1163)
    ids = [bytes([i * 4]) + bytes(15) for i in range(60)]   # first nibbles 0..14
    for aid in ids:
        theirs[0].out.tree.put(aid, 1)
        mine[0].inc.tree.put(aid, 1)
    mine[0].inc.tree.put(ids[0], 2)                            # one difference, under child 0
    theirs[0].receive(DigestRequest(transaction_id=5, node=ROOT), T0)
    [answer] = theirs[1]
    assert isinstance(answer, Digest) and answer.children is not None and not answer.entries
    mine[0].receive(Digest(sequence=0, summary=answer.summary), T0)
    [ask_root] = mine[1]
    assert isinstance(ask_root, DigestRequest)
    mine[1].clear()
    mine[0].receive(replace(answer, transaction_id=ask_root.transaction_id, sequence=1), T0)
    [ask_child] = mine[1]
    assert isinstance(ask_child, DigestRequest) and ask_child.node == DigestNode(1, 0)


def test_sync_request_answer_skips_records_on_the_requesters_path(core: GatewayCore) -> None:
    mine, learned = make_record(30, "alice", "a.example"), make_record(31, "bob", "b.example")
    core.register(mine, 600, T0)
    assert core.learn(Advertisement(1, (PEER,), learned), PEER, T0)
    sync, msgs = _sync(core)
    sync.out.tree = DigestTree()  # as if the bulk sync had been lost
    sync.receive(SyncRequest(transaction_id=77, agent_ids=((mine.record.agent_id,
                                                             learned.record.agent_id),)), T0)
    [up] = msgs
    assert isinstance(up, Update) and up.transaction_id == 77 and up.sequence == 2
    assert [a.record.record.agent_id for a in up.advertise] == [mine.record.agent_id]
    assert up.advertise[0].path == (ME,)


# --- discovery and node ---------------------------------------------------------------------------
def test_discover_reply_is_trimmed_to_one_pdu() -> None:
    big = make_record(30, "alice", "a.example", description="x" * 20_000)
    results = [Result(100, big)] * 5
    assert len(fit_results(results, MAX_PDU_SIZE - 100)) == 3
    each = TLV_HEADER_SIZE + 2 + len(big.encode())
    assert len(fit_results(results, 2 * each)) == 2
    assert fit_results(results, 2 * each - 1) == (results[0],)
    assert fit_results(results, each - 1) == ()


def test_admission_refusal_is_answered_in_status(core: GatewayCore) -> None:
    node = GatewayNode(core, admit=lambda _h, m, _t: Refusal(ErrorCode.STALE_TIMESTAMP, "old")
                       if m.TYPE is MessageType.REGISTER else None)
    reg = Register(transaction_id=3, record=make_record(30, "alice", "a.example"), lease=60,
                   nonce=bytes(16), timestamp=0)
    node.receive("alice", reg, T0)
    [(dest, ack)] = node.messages_to_send()
    assert dest == "alice" and isinstance(ack, RegisterAck)
    assert (ack.status, ack.transaction_id, ack.diagnostic) == (ErrorCode.STALE_TIMESTAMP, 3,
                                                                "old")
    assert len(core) == 0
    assert isinstance(node.next_event(), ProtocolViolation)
    node.receive("alice", Keepalive(), T0)  # not a request, not a session: dropped
    assert node.messages_to_send() == []


def test_refusal_answer_kinds() -> None:
    q = DiscoveryQuery()
    disc = refusal_answer(Discover(transaction_id=1, query=q, scope=Scope.LOCAL, max_results=1),
                          ErrorCode.INVALID_TOKEN, "no")
    echo = refusal_answer(EchoRequest(transaction_id=2, sequence=1, timestamp=0),
                          ErrorCode.RATE_LIMITED, "slow down")
    assert disc is not None and disc.TYPE is MessageType.DISCOVER_REPLY
    assert isinstance(echo, Error) and echo.offending_type == MessageType.ECHO_REQUEST
    assert refusal_answer(Keepalive(), ErrorCode.RATE_LIMITED, "") is None


def test_open_from_ourselves_is_refused(core: GatewayCore) -> None:
    node = GatewayNode(core)
    node.receive("mirror", Open(transaction_id=1, gateway_id=ME, domain="a.example",
                                hold_time=90, capabilities=0), T0)
    [(_, err)] = node.messages_to_send()
    assert isinstance(err, Error) and err.status is ErrorCode.IDENTITY_MISMATCH
    assert node.sessions == {}


def test_keepalive_is_periodic_and_capped_by_the_negotiated_hold_time(core: GatewayCore) -> None:
    s, out = session(core, hold=90, keepalive=20)
    s.start(T0)
    [mine] = sent(out)
    s.receive(peer_open(txid=mine.transaction_id, hold=3), T0)  # the peer proposes 3 s
    assert (s.hold_time, s.keepalive) == (3, 1.0)
    sent(out)
    for t in (1, 2):  # a KEEPALIVE every second, whatever else is sent
        assert s.get_timer() == T0 + t
        s.receive(Keepalive(), T0 + t)
        s.handle_timer(T0 + t)
        assert [type(m) for m in sent(out)] == [Keepalive]
    s.handle_timer(T0 + 5)  # nothing received for 3 s
    [notify] = sent(out)
    assert isinstance(notify, Notify) and notify.status is ErrorCode.HOLD_TIMER_EXPIRED
    assert s.state is PeerState.IDLE and s.get_timer() is None


def test_a_waited_on_peer_is_probed_and_closed_when_silent(core: GatewayCore) -> None:
    """Section 6.1.1: while a relayed transaction waits on the session, silence of
    PROBE_IDLE_FRACTION of the keepalive sends ECHO_REQUEST; an answer keeps the session,
    silence for PROBE_TIMEOUT_FRACTION more closes it (HOLD_TIMER_EXPIRED), long before
    the hold time."""
    waiting = [True]
    for caps in (0, int(GatewayCaps.OAM)):
        s, out = session(core, hold=3, keepalive=1.0)
        s.port.relays_waiting = lambda _h: waiting[0]  # type: ignore[method-assign]
        s.start(T0)
        [mine] = sent(out)
        s.receive(peer_open(txid=mine.transaction_id, hold=3, caps=caps), T0)
        sent(out)
        s.watch(T0)
        # a peer without OAM in its OPEN does not answer ECHO_REQUEST: never probed
        assert s.get_timer() == (T0 + 0.25 if caps else T0 + 1)
    s.handle_timer(T0 + 0.25)
    [probe] = sent(out)
    assert isinstance(probe, EchoRequest) and s.get_timer() == T0 + 0.75
    s.receive(EchoReply(transaction_id=probe.transaction_id, sequence=probe.sequence,
                        timestamp=probe.timestamp, gateway_id=PEER), T0 + 0.3)  # answered
    assert s.get_timer() == T0 + 0.55
    waiting[0] = False  # nothing waits any more: no probe
    s.handle_timer(T0 + 0.55)
    assert sent(out) == [] and s.get_timer() == T0 + 1
    waiting[0] = True
    s.watch(T0 + 2)
    s.handle_timer(T0 + 2.25)
    assert [type(m) for m in sent(out)] == [EchoRequest, Keepalive]
    s.handle_timer(T0 + 2.75)
    [notify] = sent(out)
    assert isinstance(notify, Notify) and notify.status is ErrorCode.HOLD_TIMER_EXPIRED
    assert s.state is PeerState.IDLE and s.get_timer() is None


@pytest.mark.parametrize("hold", [1, 2])
def test_open_with_a_hold_time_below_the_minimum_is_refused(core: GatewayCore,
                                                            hold: int) -> None:
    s, out = session(core)
    s.receive(peer_open(hold=hold), T0)
    [err] = sent(out)
    assert isinstance(err, Error) and err.status is ErrorCode.INVALID_TLV_VALUE
    assert s.state is PeerState.IDLE and s.get_timer() is None


# --- sync: a large UPDATE in slices (Section 6.5.1) ------------------------------------------
def sliced() -> Callable[[], float]:
    """A slice clock that advances one second per reading (with LEARN_SLICE 2.5 s a
    slice checks a record or two)."""
    ticks = iter(range(10**6))
    return lambda: float(next(ticks))


def learned(n: int, first: int = 40) -> list[Advertisement]:
    return [Advertisement(1, (PEER,), make_record(first + i, f"agent{first + i}", "b.example"))
            for i in range(n)]


def test_a_large_update_is_applied_in_slices(core: GatewayCore) -> None:
    """A slice learns (and commits) what it checked; the next UPDATE waits, a duplicate
    is dropped, and the UPDATE is acknowledged once its last slice is applied."""
    msgs: list[Message] = []
    out = Outbox()
    sync = PeerSync(out, core, SyncPeer("peer", PEER, "b.example", lambda m, _t: msgs.append(m)),
                    TransactionIds(), lambda _h, _s, _t: None, slice_clock=sliced(),
                    learn_slice=2.5)
    sync.start(T0)
    msgs.clear()
    ads = learned(6)
    sync.receive(Update(sequence=0, advertise=tuple(ads[:5])), T0)
    first = len(core)
    assert 0 < first < 5 and sync.get_timer() == T0   # the rest at once, after other work
    sync.receive(Update(sequence=1, advertise=(ads[5],)), T0)   # waits for it
    sync.receive(Update(sequence=0, advertise=tuple(ads[:5])), T0)  # a duplicate
    assert len(core) == first and sync.inc.expected == 0
    slices = 1
    while sync.get_timer() == T0:
        sync.handle_timer(T0)
        slices += 1
    assert len(core) == 6 and sync.inc.expected == 2 and msgs == [] and slices >= 2
    assert {type(e) for e in out.events} == {TableChanged}
    assert sync.get_timer() == T0 + timer("ACK_DELAY")
    sync.handle_timer(T0 + timer("ACK_DELAY"))
    [ack] = msgs
    assert isinstance(ack, SyncAck) and ack.sequence == 2


def test_held_updates_applied_in_one_turn_share_its_slice(core: GatewayCore) -> None:
    """An UPDATE that ends after the turn's LEARN_SLICE ran out does not open a new
    slice for the held one after it in the same turn (that doubled a step of a bulk
    sync): it learns nothing in that turn (not even one record and its commit), the
    rest at the next turns."""
    t = [0.0]

    def check(_h: object, _s: object, _t: float) -> None:
        t[0] += 1  # a record check costs a second of the slice clock

    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "b.example", lambda m, _t: None),
                    TransactionIds(), check, slice_clock=lambda: t[0], learn_slice=3.5)
    sync.start(T0)
    ads = learned(10)
    sync.receive(Update(sequence=1, advertise=tuple(ads[4:])), T0)  # held
    sync.receive(Update(sequence=0, advertise=tuple(ads[:4])), T0)  # ends at 4 s of 3.5
    assert len(core) == 4 and t[0] == 4  # the held UPDATE: nothing in this turn
    assert sync.get_timer() == T0
    sync.handle_timer(T0 + 0.001)  # the next turn: a slice of its own
    assert len(core) == 8 and t[0] == 8


def test_routes_from_before_a_session_are_confirmed_a_shard_a_slice(
        core: GatewayCore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The routes through the peer that a restart loaded are taken from the routing
    table a shard (a few hundred) at a time, one in each slice of the table transfer,
    not copied whole when the session begins (about 4 ms at 100,000), the rest when
    the table ends: then those the peer did not advertise on the session go."""
    recs = [make_record(100 + i, f"agent{i}", "b.example") for i in range(600)]
    core.learn_many([Advertisement(1, (PEER,), r) for r in recs], PEER, T0)
    pulled: list[int] = []
    walk = core.route_chunks_via

    def counted(peer: bytes) -> Iterator[list[bytes]]:
        for chunk in walk(peer):
            pulled.append(len(chunk))
            yield chunk

    monkeypatch.setattr(core, "route_chunks_via", counted)
    sync = PeerSync(Outbox(), core, SyncPeer("peer", PEER, "b.example", lambda m, _t: None),
                    TransactionIds(), lambda _h, _s, _t: None)
    sync.start(T0)
    assert pulled == []
    advertised = recs[::3]
    for seq in range(2):
        sync.receive(Update(sequence=seq, advertise=tuple(
            Advertisement(1, (PEER,), r) for r in advertised[seq::2])), T0)
        assert len(pulled) == seq + 1 and pulled[-1] < 600
    sync.receive(Digest(sequence=2, summary=sync.inc.tree.summary()), T0)
    assert sum(pulled) == 600
    assert {r.record.agent_id for r in advertised} == set(core.agent_ids())


def test_sessions_learning_at_once_share_the_gateways_budget(core: GatewayCore) -> None:
    """The sessions of one gateway share its learning budget (LEARN_SLICE a step; in a
    gateway process, what is left of its event loop's turn budget): UPDATEs of two
    peers applied in one step learn what one alone would, not twice that."""
    t = [0.0]

    def check(_h: object, _s: object, _t: float) -> None:
        t[0] += 1  # a record check costs a second of the slice clock

    node = GatewayNode(core, verifier=check, slice_clock=lambda: t[0], learn_slice=3.5)
    other = bytes([7]) * 16
    syncs = [node.start_sync(name, gw, "b.example") for name, gw in (("a", PEER), ("b", other))]
    for i, (sync, gw) in enumerate(zip(syncs, (PEER, other), strict=True)):
        sync.start(T0)
        ads = tuple(Advertisement(1, (gw,), make_record(40 + 10 * i + j, f"agent{i}{j}",
                                                        "b.example")) for j in range(4))
        sync.receive(Update(sequence=0, advertise=ads), T0)
    assert len(core) == 4  # the first UPDATE's four, none of the second's
    syncs[1].handle_timer(T0 + 0.001)  # the next step
    assert len(core) == 8
