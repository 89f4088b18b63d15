"""Discovery, routing, peering, sync and OAM end to end through the in-memory harness
(draft-dmsc-protocol-00, Sections 5.2, 5.3, 6; draft-dmsc-state-machines-00)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from dmscproto.codec import decode, encode
from dmscproto.codec.messages import (
    DiscoverReply,
    EchoReply,
    Error,
    Message,
    Notify,
    Open,
    RouteReply,
    RouteRequest,
    SyncAck,
    SyncRequest,
    TraceReply,
    Update,
)
from dmscproto.codec.registry import (
    DEFAULT_HOP_LIMIT,
    ConstraintOp,
    ErrorCode,
    MessageType,
    Scope,
    timer,
)
from dmscproto.codec.values import Constraint, DiscoveryQuery, Skill
from dmscproto.codec.wire import Advertisement, VersionedId
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.events import (
    LateMessage,
    ProtocolViolation,
    RequestCompleted,
    RequestFailed,
    RouteRequestReceived,
    SessionClosed,
    SessionEstablished,
    TableChanged,
)
from dmscproto.protocol.peering import PeerState
from dmscproto.testing.harness import Network, make_record

A = TypeVar("A", bound=Message)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    n = Network(tmp_path)
    yield n
    n.close()


def registered(net: Network, *agents: AgentClient) -> None:
    for a in agents:
        a.register(net.now)
    net.pump()


def answer(net: Network, agent: str) -> RequestCompleted:
    [done] = net.take(agent, RequestCompleted)
    return done


def reply(net: Network, agent: str, cls: type[A]) -> A:
    """The answer message of the one request agent ``agent`` completed."""
    msg = answer(net, agent).answer
    assert isinstance(msg, cls)
    return msg


def serve(net: Network, name: str, reply: bytes) -> RouteRequestReceived:
    """Let agent ``name`` answer the ROUTE_REQUEST delivered to it."""
    [req] = net.take(name, RouteRequestReceived)
    net.agents[name].reply(req, reply)
    net.pump()
    return req


def two_domains(net: Network) -> tuple[AgentClient, AgentClient]:
    net.gateway("gw-a", "a.example")
    net.gateway("gw-b", "b.example")
    alice, bob = net.agent("alice", "gw-a"), net.agent("bob", "gw-b")
    registered(net, alice, bob)
    net.gateways["gw-a"].connect("gw-b", net.now)
    net.pump()
    return alice, bob


# --- discovery (Section 5.2) ------------------------------------------------------------------
def test_discovery_by_skill_with_constraints_and_ranking(net: Network) -> None:
    net.gateway("gw")
    fast = net.agent("fast", "gw", attributes={"latency_ms": 20, "region": "eu"},
                     skills=(Skill("forecast", "Forecast", ("weather",)),))
    # two skills: ranks lower for a one-skill query (s = 1 / (1 + n - |S|))
    broad = net.agent("broad", "gw", attributes={"latency_ms": 50, "region": "eu"},
                      skills=(Skill("forecast", "Forecast", ("weather",)),
                              Skill("translate", "Translate", ("language",))))
    slow = net.agent("slow", "gw", attributes={"latency_ms": 900, "region": "eu"})
    other = net.agent("other", "gw", attributes={"latency_ms": 5, "region": "us"})
    registered(net, fast, broad, slow, other)
    q = DiscoveryQuery(skills=("forecast",), tags=("weather",),
                       constraints=(Constraint("latency_ms", ConstraintOp.LE, 100),
                                    Constraint("region", ConstraintOp.IN, ("eu", "uk"))))
    fast.discover(q, net.now, max_results=5)
    net.pump()
    found = reply(net, "fast", DiscoverReply)
    assert found.status is ErrorCode.SUCCESS
    ids = [r.record.record.agent_id for r in found.results]
    assert ids == [fast.agent_id, broad.agent_id]  # slow and other filtered out
    assert found.results[0].score > found.results[1].score
    fast.discover(q, net.now, max_results=1)
    net.pump()
    assert [r.record.record.agent_id for r in reply(net, "fast", DiscoverReply).results] \
        == [fast.agent_id]


def test_discovery_scope_local_and_federated(net: Network) -> None:
    alice, bob = two_domains(net)
    forecast = DiscoveryQuery(skills=("forecast",))
    for scope, expected in ((Scope.LOCAL, {alice.agent_id}),
                            (Scope.FEDERATED, {alice.agent_id, bob.agent_id})):
        alice.discover(forecast, net.now, scope=scope)
        net.pump()
        found = reply(net, "alice", DiscoverReply).results
        assert {r.record.record.agent_id for r in found} == expected


# --- routing (Section 5.3) ----------------------------------------------------------------------
def test_route_to_a_local_agent(net: Network) -> None:
    net.gateway("gw")
    alice, bob = net.agent("alice", "gw"), net.agent("bob", "gw")
    registered(net, alice, bob)
    txid = alice.route(b"ping", net.now, target=bob.agent_id)
    net.pump()
    req = serve(net, "bob", b"pong")
    assert req.payload == b"ping" and req.source_agent == alice.agent_id
    assert req.transaction_id != txid  # the gateway chose its own for the next hop
    # local delivery: no hop consumed
    assert req.request.hop_limit == DEFAULT_HOP_LIMIT and req.request.path == ()
    done = answer(net, "alice")
    assert done.transaction_id == txid
    assert isinstance(done.answer, RouteReply)
    assert (done.answer.status, done.answer.payload, done.answer.target_agent) == \
        (ErrorCode.SUCCESS, b"pong", bob.agent_id)


def test_route_through_a_second_gateway_and_back(net: Network) -> None:
    alice, bob = two_domains(net)
    txid = alice.route(b"to bob", net.now, target=bob.agent_id)
    net.pump()
    req = serve(net, "bob", b"from bob")
    assert req.request.hop_limit == DEFAULT_HOP_LIMIT - 1
    assert req.request.path == (net.gateway_id("gw-a"),)
    done = answer(net, "alice")
    assert isinstance(done.answer, RouteReply)
    assert (done.transaction_id, done.answer.payload) == (txid, b"from bob")
    # each hop used its own transaction id; the return path mapped them back
    hops = [s for s in net.log if isinstance(s.msg, RouteRequest | RouteReply)]
    assert [(s.source, s.dest) for s in hops] == [
        ("alice", "gw-a"), ("gw-a", "gw-b"), ("gw-b", "bob"),
        ("bob", "gw-b"), ("gw-b", "gw-a"), ("gw-a", "alice")]
    assert len({s.msg.transaction_id for s in hops}) == 3
    assert hops[0].msg.transaction_id == hops[-1].msg.transaction_id
    assert hops[1].msg.transaction_id == hops[-2].msg.transaction_id


def test_unregistered_status_is_relayed_unchanged(net: Network) -> None:
    """Section 4.3: a code no registry assigns comes back to the caller as sent."""
    alice, bob = two_domains(net)
    alice.route(b"to bob", net.now, target=bob.agent_id)
    net.pump()
    [req] = net.take("bob", RouteRequestReceived)
    net.agents["bob"].reply(req, None, ErrorCode(0x04F0))
    net.pump()
    status = reply(net, "alice", RouteReply).status
    assert status == 0x04F0 and not status.registered


def test_route_by_query_resolves_at_the_first_gateway(net: Network) -> None:
    alice, bob = two_domains(net)
    alice.route(b"x", net.now, query=DiscoveryQuery(skills=("forecast",),
                                                     domain="b.example"))
    net.pump()
    req = serve(net, "bob", b"y")
    assert req.request.query is None and req.request.target_agent == bob.agent_id
    assert reply(net, "alice", RouteReply).target_agent == bob.agent_id


@pytest.mark.parametrize(("hop_limit", "path_has_self", "target_known", "code"), [
    (8, False, False, ErrorCode.NO_ROUTE),
    (0, False, True, ErrorCode.HOP_LIMIT_EXCEEDED),
    (8, True, True, ErrorCode.LOOP_DETECTED),
])
def test_routing_errors_come_back_in_route_reply(net: Network, hop_limit: int,
                                                 path_has_self: bool, target_known: bool,
                                                 code: ErrorCode) -> None:
    alice, bob = two_domains(net)
    gw = net.gateways["gw-a"]
    path = (net.gateway_id("gw-a"),) if path_has_self else ()
    target = bob.agent_id if target_known else bytes(16)
    net.deliver("alice", "gw-a", RouteRequest(transaction_id=41, source_agent=alice.agent_id,
                                              target_agent=target, hop_limit=hop_limit,
                                              path=path, payload=b""))
    [(dest, reply)] = gw.messages_to_send()
    assert dest == "alice" and isinstance(reply, RouteReply)
    assert (reply.status, reply.transaction_id, reply.path) == (code, 41, path)


def test_forwarded_request_times_out(net: Network) -> None:
    alice, bob = two_domains(net)
    net.cut.add(frozenset({"gw-a", "gw-b"}))
    alice.route(b"lost", net.now, target=bob.agent_id, timeout_ms=5000)
    net.advance(5)
    assert reply(net, "alice", RouteReply).status is ErrorCode.TRANSACTION_TIMEOUT


def test_silent_local_agent_is_unreachable(net: Network) -> None:
    alice, bob = two_domains(net)
    alice.route(b"ignored", net.now, target=bob.agent_id)
    net.advance(30)  # ROUTE_TIMEOUT at gw-b; bob never answers
    assert len(net.take("bob", RouteRequestReceived)) == 1
    assert reply(net, "alice", RouteReply).status is ErrorCode.TARGET_UNREACHABLE
    assert net.gateways["gw-a"].relays == {} and net.gateways["gw-b"].relays == {}


def test_answered_relays_leave_no_timer_behind_a_waiting_one(net: Network) -> None:
    """A relay waiting out ROUTE_TIMEOUT stays the gateway's timer while many others are
    answered, and those leave no state behind (the relays' deadline heap is rebuilt)."""
    gw = net.gateway("gw")
    alice, bob, carol = (net.agent(n, "gw") for n in ("alice", "bob", "carol"))
    registered(net, alice, bob, carol)
    alice.route(b"never answered", net.now, target=carol.agent_id)
    net.pump()
    deadline = gw.get_timer()
    for _ in range(100):
        alice.route(b"ping", net.now, target=bob.agent_id)
        net.pump()
        serve(net, "bob", b"pong")
        assert gw.get_timer() == deadline
    assert len(gw.relays) == len(gw._unanswered) == 1
    assert len(gw._relay_timers._heap) <= 66


def test_missing_or_double_target_is_refused(net: Network) -> None:
    net.gateway("gw")
    alice = net.agent("alice", "gw")
    registered(net, alice)
    alice.route(b"", net.now)
    net.pump()
    assert reply(net, "alice", RouteReply).status is ErrorCode.MISSING_TLV
    alice.route(b"", net.now, target=alice.agent_id, query=DiscoveryQuery())
    net.pump()
    assert reply(net, "alice", RouteReply).status is ErrorCode.INVALID_TLV_VALUE


# --- peering (Section 6.4, 6.7) -----------------------------------------------------------------
def test_peering_establishment_negotiates_the_hold_time(net: Network) -> None:
    net.gateway("gw-a", "a.example", hold_time=60)
    net.gateway("gw-b", "b.example")
    net.gateways["gw-a"].connect("gw-b", net.now)
    net.pump()
    types = [(s.source, s.msg.TYPE.name) for s in net.log][:3]
    assert types == [("gw-a", "OPEN"), ("gw-b", "OPEN"), ("gw-a", "KEEPALIVE")]
    assert net.log[0].msg.transaction_id == net.log[1].msg.transaction_id
    for me, other in (("gw-a", "gw-b"), ("gw-b", "gw-a")):
        [est] = net.take(me, SessionEstablished)
        assert (est.handle, est.gateway_id, est.hold_time) == (other, net.gateway_id(other), 60)
        assert net.gateways[me].sessions[other].state is PeerState.ESTABLISHED
    # idle for a long time: KEEPALIVE every hold/3 keeps the session up
    net.log.clear()
    net.advance(600)
    assert net.take("gw-a", SessionClosed) == []
    sent = net.sent("gw-a", "gw-b")
    assert sum(s.msg.TYPE.name == "KEEPALIVE" for s in sent) >= 10
    # never silent for more than KEEPALIVE_FRACTION of the hold time (DIGESTs count too)
    gaps = [b.time - a.time for a, b in itertools.pairwise(sent)]
    assert max(gaps) <= 20


def test_simultaneous_open(net: Network) -> None:
    net.gateway("gw-a", "a.example")
    net.gateway("gw-b", "b.example")
    net.gateways["gw-a"].connect("gw-b", net.now)
    net.gateways["gw-b"].connect("gw-a", net.now)
    net.pump()
    assert len(net.take("gw-a", SessionEstablished)) == 1
    assert len(net.take("gw-b", SessionEstablished)) == 1


def test_hold_timer_expiry_closes_and_drops_routes(net: Network) -> None:
    alice, bob = two_domains(net)
    assert bob.agent_id in net.gateways["gw-a"].core
    net.cut.add(frozenset({"gw-a", "gw-b"}))
    net.advance(89)
    assert net.take("gw-a", SessionClosed) == []
    net.advance(1)
    for me, other in (("gw-a", "gw-b"), ("gw-b", "gw-a")):
        [closed] = net.take(me, SessionClosed)
        assert (closed.status, closed.by_peer, closed.gateway_id) == \
            (ErrorCode.HOLD_TIMER_EXPIRED, False, net.gateway_id(other))
        assert other not in net.gateways[me].sessions
    assert bob.agent_id not in net.gateways["gw-a"].core
    assert alice.agent_id not in net.gateways["gw-b"].core
    alice.route(b"", net.now, target=bob.agent_id)
    net.pump()
    assert reply(net, "alice", RouteReply).status is ErrorCode.NO_ROUTE


def test_cease_closes_both_sides(net: Network) -> None:
    two_domains(net)
    net.gateways["gw-a"].disconnect("gw-b", net.now)
    net.pump()
    [mine] = net.take("gw-a", SessionClosed)
    [theirs] = net.take("gw-b", SessionClosed)
    assert (mine.status, mine.by_peer, theirs.status, theirs.by_peer) == \
        (ErrorCode.CEASE, False, ErrorCode.CEASE, True)


def test_late_messages_of_a_closed_session_are_dropped_quietly(net: Network) -> None:
    """Section 6.1: a SYNC_ACK gw-b sent before it heard gw-a's NOTIFY CEASE is dropped
    by gw-a and reported as LateMessage, not as a protocol violation; a SYNC_REQUEST
    still gets its ERROR (no requester waits), which gw-b, its session closed too,
    drops in turn; after REQUEST_TIMEOUT the SYNC_ACK is UNEXPECTED_MESSAGE again."""
    two_domains(net)
    net.gateways["gw-a"].disconnect("gw-b", net.now)
    since = len(net.log)
    ack, request = SyncAck(sequence=1), SyncRequest(transaction_id=9,
                                                     agent_ids=((bytes(16),),))
    for msg in (ack, request):
        net.deliver("gw-b", "gw-a", msg)
    net.pump()
    assert [type(s.msg) for s in net.log[since:] if s.source == "gw-a"] == [Notify, Error]
    assert [e.message_type for e in net.take("gw-a", LateMessage)] == [MessageType.SYNC_ACK]
    assert [e.message_type for e in net.take("gw-a", ProtocolViolation)] == [
        MessageType.SYNC_REQUEST]
    assert [e.message_type for e in net.take("gw-b", LateMessage)] == [MessageType.ERROR]
    assert not net.take("gw-b", ProtocolViolation)
    net.advance(timer("REQUEST_TIMEOUT") + 1)
    net.deliver("gw-b", "gw-a", ack)
    net.pump()
    assert not net.take("gw-a", LateMessage)
    assert [e.status for e in net.take("gw-a", ProtocolViolation)] == [
        ErrorCode.UNEXPECTED_MESSAGE]


def test_gateways_dialling_each_other_at_once_keep_one_session(net: Network) -> None:
    """Section 6.1.1: gw-a and gw-b dial each other at the same time, their OPENs cross and
    both sessions are established; each end then closes the one over the association
    that the gateway with the lower Gateway ID dialled (NOTIFY CEASE), the same one, and
    neither loses the records learned (they used to keep both, and closing either later
    dropped the other's routes)."""
    a, b = net.gateway("gw-a", "a.example"), net.gateway("gw-b", "b.example")
    for n, node in enumerate((a, b)):
        node.core.register(make_record(60 + n, f"agent{n}", node.core.domain), 600, net.now)
    # each end's handle of the association each dialled: (a's, b's)
    wires = {(a, "to-b"): (b, "from-a"), (a, "from-b"): (b, "to-a")}
    wires |= {v: k for k, v in wires.items()}
    a.connect("to-b", net.now)
    b.connect("to-a", net.now)
    while out := [(src, dest, msg) for src in (a, b) for dest, msg in src.messages_to_send()]:
        for src, dest, msg in out:  # a round at a time: the OPENs cross
            node, handle = wires[(src, dest)]
            node.receive(handle, decode(encode(msg)), net.now)
    higher = max((a, b), key=lambda g: g.core.gateway_id)
    kept = {a: "to-b", b: "from-a"} if higher is a else {a: "from-b", b: "to-a"}
    for node in (a, b):
        assert list(node.sessions) == [kept[node]]
        assert node.sessions[kept[node]].state is PeerState.ESTABLISHED
        assert len(node.core) == 2  # its own record and the other's
    closed = [e for node in (a, b) for e in iter(node.next_event, None)
              if isinstance(e, SessionClosed)]
    assert [e.status for e in closed] == [ErrorCode.CEASE] * 2


def test_unexpected_message_on_a_session_is_answered_with_notify(net: Network) -> None:
    two_domains(net)
    net.deliver("gw-b", "gw-a", RouteReply(transaction_id=12345, status=ErrorCode.SUCCESS))
    # valid, changes nothing: a sequence number already applied
    net.deliver("gw-b", "gw-a", Update(transaction_id=3, sequence=2**32 - 1))
    assert net.gateways["gw-a"].sessions["gw-b"].state is PeerState.ESTABLISHED
    assert net.gateways["gw-a"].messages_to_send() == []
    net.deliver("gw-b", "gw-a", Open(transaction_id=9, gateway_id=net.gateway_id("gw-b"),
                                     domain="b.example", hold_time=90, capabilities=0))
    [(dest, notify)] = net.gateways["gw-a"].messages_to_send()
    assert dest == "gw-b" and isinstance(notify, Notify)
    assert notify.status is ErrorCode.UNEXPECTED_MESSAGE
    assert "gw-b" not in net.gateways["gw-a"].sessions


# --- sync (Sections 6.5, 6.6) -------------------------------------------------------------------
def test_update_and_withdraw_propagate(net: Network) -> None:
    two_domains(net)
    carol = net.agent("carol", "gw-a")
    net.log.clear()
    registered(net, carol)
    [up] = [s.msg for s in net.sent("gw-a", "gw-b") if isinstance(s.msg, Update)]
    assert isinstance(up, Update) and up.withdraw == ()
    [ad] = up.advertise
    assert (ad.version, ad.path, ad.record.record.agent_id) == \
        (1, (net.gateway_id("gw-a"),), carol.agent_id)
    assert carol.agent_id in net.gateways["gw-b"].core
    carol.deregister(net.now)
    net.pump()
    # the origin purges the version it registered (Section 6.5)
    [wd] = [s.msg for s in net.sent("gw-a", "gw-b") if isinstance(s.msg, Update)
            and s.msg.purge]
    assert isinstance(wd, Update) and wd.withdraw == () and wd.sequence == up.sequence + 1
    assert wd.purge == (VersionedId(carol.agent_id, 1),)
    assert carol.agent_id not in net.gateways["gw-b"].core
    assert net.take("gw-b", TableChanged)[-1].purged[0].agent_id == carol.agent_id


def test_lease_expiry_is_withdrawn_from_peers(net: Network) -> None:
    alice, _ = two_domains(net)
    net.cut.add(frozenset({"alice", "gw-a"}))  # alice goes silent
    net.advance(3599)
    assert alice.agent_id in net.gateways["gw-b"].core
    net.advance(1)  # DEFAULT_LEASE is over
    assert alice.agent_id not in net.gateways["gw-a"].core
    assert alice.agent_id not in net.gateways["gw-b"].core
    [changed] = net.take("gw-b", TableChanged)[-1:]
    assert [w.agent_id for w in changed.purged] == [alice.agent_id]


def test_new_record_version_propagates(net: Network) -> None:
    two_domains(net)
    carol = net.agent("carol", "gw-a", signed=make_record(77, "carol", "a.example"))
    registered(net, carol)
    carol.deregister(net.now)
    net.pump()
    carol2 = net.agent("carol2", "gw-a", signed=make_record(77, "carol", "a.example",
                                                             version=2))
    registered(net, carol2)
    held = net.gateways["gw-b"].core.get(carol.agent_id)
    assert held is not None and held.version == 2


def test_digest_repairs_a_lost_update_pulling_only_what_differs(net: Network) -> None:
    two_domains(net)
    net.cut.add(frozenset({"gw-a", "gw-b"}))
    carol = net.agent("carol", "gw-a")
    registered(net, carol)  # the UPDATE to gw-b is lost
    net.cut.clear()
    assert carol.agent_id not in net.gateways["gw-b"].core
    net.log.clear()
    # the next DIGEST arrives after a gap in the sequence: it is held for REORDER_TIMEOUT,
    # then the gap is skipped and the digest trees compared
    net.advance(timer("DIGEST_INTERVAL") + timer("REORDER_TIMEOUT"))
    pulls = [s.msg for s in net.sent("gw-b", "gw-a") if isinstance(s.msg, SyncRequest)]
    assert [list(p.agent_ids[0]) for p in pulls if isinstance(p, SyncRequest)] == \
        [[carol.agent_id]]
    assert not [s for s in net.sent("gw-a", "gw-b") if isinstance(s.msg, SyncRequest)]
    assert carol.agent_id in net.gateways["gw-b"].core
    # in sync now: the next digests pull nothing
    net.log.clear()
    net.advance(60)
    assert not [s for s in net.log if isinstance(s.msg, SyncRequest)]


def test_digest_removes_routes_the_peer_no_longer_has(net: Network) -> None:
    _, bob = two_domains(net)
    net.cut.add(frozenset({"gw-a", "gw-b"}))
    bob.deregister(net.now)
    net.pump()  # the WITHDRAW is lost
    net.cut.clear()
    assert bob.agent_id in net.gateways["gw-a"].core
    # bob was learned since the last DIGEST: the first one spares it, the second removes it
    net.advance(60)
    assert bob.agent_id not in net.gateways["gw-a"].core


# --- loop prevention (Sections 6.3) ---------------------------------------------------------------
def triangle(net: Network) -> None:
    for name, dom in (("gw-a", "a.example"), ("gw-b", "b.example"), ("gw-c", "c.example")):
        net.gateway(name, dom)
    for left, right in (("gw-a", "gw-b"), ("gw-b", "gw-c"), ("gw-c", "gw-a")):
        net.gateways[left].connect(right, net.now)
    net.pump()


def test_triangle_converges_without_loops(net: Network) -> None:
    triangle(net)
    x = net.agent("x", "gw-a")
    registered(net, x)
    a, b, c = (net.gateway_id(n) for n in ("gw-a", "gw-b", "gw-c"))
    for name, me in (("gw-b", b), ("gw-c", c)):
        core = net.gateways[name].core
        routes = core.routes.routes(x.agent_id)
        assert routes[0].next_hop == a and routes[0].path == (a,)  # direct is best
        assert all(me not in r.path for r in routes)
        assert {r.next_hop for r in routes} == {a, b, c} - {me}  # plus the detour
    # nothing carried a path through its receiver
    for s in net.log:
        if isinstance(s.msg, Update):
            assert all(net.gateway_id(s.dest) not in ad.path for ad in s.msg.advertise)
    # withdrawal: the detours are withdrawn too, and the network settles
    x.deregister(net.now)
    net.pump()
    for name in ("gw-a", "gw-b", "gw-c"):
        assert x.agent_id not in net.gateways[name].core
    net.advance(200)  # digests and keepalives change nothing
    for name in ("gw-b", "gw-c"):
        assert x.agent_id not in net.gateways[name].core


def test_advertise_with_own_id_in_path_is_ignored(net: Network) -> None:
    triangle(net)
    x = net.agent("x", "gw-a")
    registered(net, x)
    b, c = net.gateway_id("gw-b"), net.gateway_id("gw-c")
    far = net.agent("far", "gw-a", domain="d.example")
    sync = net.gateways["gw-b"].sessions["gw-c"].sync
    assert sync is not None
    loop = Update(transaction_id=5, sequence=sync.inc.expected,
                  advertise=(Advertisement(1, (b, c), far.signed),))
    net.deliver("gw-c", "gw-b", loop)
    assert far.agent_id not in net.gateways["gw-b"].core


def test_route_and_trace_across_two_hops(net: Network) -> None:
    for name, dom in (("gw-a", "a.example"), ("gw-b", "b.example"), ("gw-c", "c.example")):
        net.gateway(name, dom)
    for left, right in (("gw-a", "gw-b"), ("gw-b", "gw-c")):  # a line: a - b - c
        net.gateways[left].connect(right, net.now)
    x, y = net.agent("x", "gw-a"), net.agent("y", "gw-c")
    registered(net, x, y)
    a, b, c = (net.gateway_id(n) for n in ("gw-a", "gw-b", "gw-c"))
    y.route(b"hello", net.now, target=x.agent_id)
    net.pump()
    req = serve(net, "x", b"hi")
    assert req.request.path == (c, b) and req.request.hop_limit == DEFAULT_HOP_LIMIT - 2
    assert reply(net, "y", RouteReply).payload == b"hi"
    y.trace(x.agent_id, net.now)
    net.pump()
    traced = reply(net, "y", TraceReply)
    assert traced.status is ErrorCode.SUCCESS
    assert [(h.gateway_id, h.name) for h in traced.hops] == [(c, "gw-c"), (b, "gw-b"),
                                                             (a, "gw-a")]


def test_trace_to_an_unknown_agent_reports_the_hops(net: Network) -> None:
    net.gateway("gw")
    x = net.agent("x", "gw")
    registered(net, x)
    x.trace(bytes(16), net.now)
    net.pump()
    traced = reply(net, "x", TraceReply)
    assert traced.status is ErrorCode.NO_ROUTE
    assert [h.name for h in traced.hops] == ["gw"]


def test_echo(net: Network) -> None:
    net.gateway("gw")
    x = net.agent("x", "gw")
    txid = x.echo(net.now, b"ping")
    net.pump()
    done = answer(net, "x")
    assert done.transaction_id == txid and done.rtt == 0.0
    assert isinstance(done.answer, EchoReply)
    assert (done.answer.gateway_id, done.answer.payload, done.answer.sequence) == \
        (net.gateway_id("gw"), b"ping", 1)


def test_request_timeout_without_answer(net: Network) -> None:
    net.gateway("gw")
    x = net.agent("x", "gw")
    net.cut.add(frozenset({"x", "gw"}))
    x.echo(net.now)
    net.advance(10)
    [failed] = net.take("x", RequestFailed)
    assert failed.status is ErrorCode.TRANSACTION_TIMEOUT and x.get_timer() is None
