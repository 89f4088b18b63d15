"""Capability summaries and relayed discovery in the fake-clock harness (draft Sections
5.2.1 and 6.9): gateways of three domains exchange summaries instead of records; a
FEDERATED DISCOVER and a ROUTE_REQUEST by query are relayed to the domain whose summary
matches, the answers are kept for DISCOVERY_CACHE_TTL, and nothing else is relayed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dmscproto.codec import decode, encode
from dmscproto.codec.errors import DecodeError
from dmscproto.codec.messages import Discover, DiscoverReply, RouteReply, Summary
from dmscproto.codec.registry import (
    MAX_PDU_SIZE,
    RELAY_HOP_SLACK,
    ErrorCode,
    MessageType,
    Scope,
    limit,
    timer,
)
from dmscproto.codec.values import DiscoveryQuery, Skill
from dmscproto.codec.wire import Result
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.limits import Budget
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.bloom import Bloom, filter_size, may_match, record_terms
from dmscproto.protocol.events import RequestCompleted, RouteRequestReceived
from dmscproto.protocol.federated import DiscoveryContext, FederatedDiscovery
from dmscproto.protocol.machine import Outbox, TransactionIds
from dmscproto.protocol.registration import verify_signature
from dmscproto.protocol.summary import Replication, SummaryTable
from dmscproto.testing.examples import examples, weather_signed
from dmscproto.testing.harness import T0, Network, make_record


def summaries_only(_domain: str) -> Replication:
    return Replication.SUMMARY


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    n = summary_chain(tmp_path)
    yield n
    n.close()


def summary_chain(tmp_path: Path, budget: Budget | None = None) -> Network:
    """gw-a (a.example) - gw-b (b.example) - gw-c (c.example), summaries only; alice at
    gw-a, bob (forecast) at gw-b, carol (translate) at gw-c; ``budget`` gw-a's discovery
    budget."""
    n = Network(tmp_path)
    for name, dom in (("gw-a", "a.example"), ("gw-b", "b.example"), ("gw-c", "c.example")):
        n.gateway(name, dom, replication=summaries_only,
                  budget=budget if name == "gw-a" else None)
    n.agent("alice", "gw-a")
    n.agent("bob", "gw-b", skills=(Skill("forecast", "Forecast", ("weather",)),))
    n.agent("carol", "gw-c", skills=(Skill("translate", "Translate", ("language",)),))
    for agent in n.agents.values():
        agent.register(n.now)
    n.pump()
    n.gateways["gw-a"].connect("gw-b", n.now)
    n.gateways["gw-b"].connect("gw-c", n.now)
    n.advance(2)
    return n


def answer(net: Network, name: str) -> object:
    [done] = net.take(name, RequestCompleted)
    return done.answer


def test_records_stay_at_home_and_summaries_travel(net: Network) -> None:
    a = net.gateways["gw-a"]
    assert len(a.core) == 1  # alice only: no record of b or c
    assert set(a.summaries.table.origins()) == {net.gateway_id("gw-b"), net.gateway_id("gw-c")}
    best = a.summaries.table.best(net.gateway_id("gw-c"))
    assert best is not None and best.path == (net.gateway_id("gw-c"), net.gateway_id("gw-b"))


def test_discover_relayed_to_the_matching_domain_and_kept(net: Network) -> None:
    alice, carol = net.agents["alice"], net.agents["carol"]
    since = len(net.log)
    alice.discover(DiscoveryQuery(skills=("translate",)), net.now)
    net.pump()
    reply = answer(net, "alice")
    assert isinstance(reply, DiscoverReply) and reply.status is ErrorCode.SUCCESS
    assert [r.record.record.agent_id for r in reply.results] == [carol.agent_id]
    relayed = [s for s in net.log[since:] if isinstance(s.msg, Discover)
               and s.source.startswith("gw-")]
    assert [(s.source, s.dest) for s in relayed] == [("gw-a", "gw-b"), ("gw-b", "gw-c")]
    assert relayed[1].msg.path == (net.gateway_id("gw-a"), net.gateway_id("gw-b"))
    # gw-a starts the relaying: gw-c's summary came over 2 gateways, so gw-b relays
    assert relayed[0].msg.hop_limit == 2 - 1 + RELAY_HOP_SLACK  # type: ignore[attr-defined]
    assert relayed[1].msg.hop_limit == relayed[0].msg.hop_limit - 1  # type: ignore[attr-defined]
    # the same query within the TTL: answered from what was kept, nothing relayed
    since = len(net.log)
    alice.discover(DiscoveryQuery(skills=("translate",)), net.now)
    net.pump()
    assert [r.record.record.agent_id for r in answer(net, "alice").results] == [  # type: ignore[attr-defined]
        carol.agent_id]
    assert not [s for s in net.log[since:] if isinstance(s.msg, Discover)
                and s.source.startswith("gw-")]
    # a query no summary matches is not relayed at all
    alice.discover(DiscoveryQuery(skills=("juggle",)), net.now)
    net.pump()
    assert answer(net, "alice").results == ()  # type: ignore[attr-defined]
    assert not [s for s in net.log[since:] if isinstance(s.msg, Discover)
                and s.source.startswith("gw-")]


def test_relayed_hop_limit_is_bounded_and_the_path_vector_obeyed(net: Network) -> None:
    """Section 5.2.1: a DISCOVER that arrived with HOP_LIMIT 0, or whose PATH_VECTOR
    holds the next hop, is answered without relaying; a large HOP_LIMIT is relayed with
    at most RELAY_MAX_HOPS."""
    a, c = net.gateway_id("gw-a"), net.gateway_id("gw-c")
    cases = [(0, (a,)), (9, (a, c)), (255, (a,))]
    for n, (hops, path) in enumerate(cases):
        since = len(net.sent("gw-b"))
        net.deliver("probe", "gw-b", Discover(
            transaction_id=n + 1, query=DiscoveryQuery(skills=("translate",), tags=(str(n),)),
            scope=Scope.FEDERATED, max_results=3, hop_limit=hops, path=path))
        net.pump()
        sent = [s.msg for s in net.sent("gw-b")[since:] if isinstance(s.msg, Discover)]
        if n < 2:
            assert sent == []
        else:
            assert [m.hop_limit for m in sent] == [limit("RELAY_MAX_HOPS")]


def test_kept_answers_of_a_shorter_relay_do_not_answer_a_longer_one(net: Network) -> None:
    """Section 5.2.1: a query for alice's and carol's tags, arriving at gw-b with gw-c on
    its PATH_VECTOR, is relayed to gw-a only and its answer kept; the same query from
    bob, which gw-b relays to gw-c too, is not answered from it."""
    query = DiscoveryQuery(tags=("weather", "language"))
    net.deliver("probe", "gw-b", Discover(
        transaction_id=1, query=query, scope=Scope.FEDERATED, max_results=10, hop_limit=5,
        path=(net.gateway_id("gw-c"),)))
    net.pump()
    assert [s.dest for s in net.sent("gw-b") if isinstance(s.msg, Discover)] == ["gw-a"]
    net.agents["bob"].discover(query, net.now)
    net.pump()
    found = {r.record.record.agent_id for r in answer(net, "bob").results}  # type: ignore[attr-defined]
    assert {net.agents[n].agent_id for n in ("alice", "bob", "carol")} == found


def test_relaying_is_under_the_discover_budget(tmp_path: Path) -> None:
    """Sections 5.2.1 and 10.7: a gateway whose evaluation of a relayable DISCOVER (held
    records, then summaries) uses up DISCOVER_BUDGET relays nothing and refuses it with
    QUERY_TOO_LARGE; a ROUTE_REQUEST by query being resolved gets ROUTE_REPLY
    QUERY_TOO_LARGE.  The budget's clock here is a counter: every reading costs 6 ms."""
    ticks = itertools.count(step=0.006)
    net = summary_chain(tmp_path, budget=Budget(0.010, clock=lambda: next(ticks)))
    try:
        since = len(net.log)
        net.agents["alice"].discover(DiscoveryQuery(skills=("translate",)), net.now)
        net.pump()
        reply = answer(net, "alice")
        assert isinstance(reply, DiscoverReply)
        assert reply.status is ErrorCode.QUERY_TOO_LARGE and "10 ms" in (reply.diagnostic or "")
        net.agents["alice"].route(b"hi", net.now, query=DiscoveryQuery(skills=("translate",)))
        net.pump()
        reply = answer(net, "alice")
        assert isinstance(reply, RouteReply) and reply.status is ErrorCode.QUERY_TOO_LARGE
        assert not [s for s in net.log[since:] if s.source.startswith("gw-") and
                    s.msg.TYPE in (MessageType.DISCOVER, MessageType.ROUTE_REQUEST)]
    finally:
        net.close()


def test_relayed_results_checked_merged_and_limited(tmp_path: Path) -> None:
    """Section 5.2.1: a relayed RESULT whose record fails the learned-record check (here
    its signature) is dropped; the answer has one RESULT per Agent ID (the held record
    first, else the highest score), by score, at most MAX_RESULTS."""
    me, peers = bytes([0xEE]) * 16, (bytes([1]) * 16, bytes([2]) * 16)
    core = GatewayCore(me, "a.example", RegistryStore(tmp_path / "gw.db"))
    held = make_record(40, "held", "a.example",
                       skills=(Skill("translate", "Translate", ("language",)),))
    core.register(held, 600, T0)
    far = [make_record(41 + n, f"far{n}", "c.example",
                       skills=(Skill("translate", "Translate", ("language",)),))
           for n in range(3)]
    forged = replace(far[2], signature=bytes(64))
    table = SummaryTable(me)
    for n, gid in enumerate(peers):
        table.learn(Summary(gateway_id=bytes([9 + n]) * 16, timestamp=1,
                            path=(bytes([9 + n]) * 16, gid), domain=f"{'cd'[n]}.example",
                            summary=Bloom.of(r.record for r in far).value), gid)
    out = Outbox()
    handles = {gid: f"peer{n}" for n, gid in enumerate(peers)}
    ctx = DiscoveryContext(core, core.remote, table, TransactionIds(), handles.get,
                           verify_signature, lambda _h: None, lambda _a, _d: True)
    m = FederatedDiscovery(out, ctx, "agent", Discover(
        transaction_id=5, query=DiscoveryQuery(skills=("translate",)),
        scope=Scope.FEDERATED, max_results=3), None)
    m.start(T0)
    sent = out.messages_to_send()
    assert [h for h, _ in sent] == ["peer0", "peer1"]
    answers = [[Result(7000, far[0]), Result(9000, held), Result(9500, forged)],
               [Result(8000, far[0]), Result(6000, far[1])]]
    for (handle, msg), results in zip(sent, answers, strict=True):
        m.receive(handle, DiscoverReply(transaction_id=msg.transaction_id,
                                        status=ErrorCode.SUCCESS, results=tuple(results)),
                  T0)
    [(_, reply)] = out.messages_to_send()
    assert isinstance(reply, DiscoverReply)
    assert [(r.score, r.record.record.name) for r in reply.results] == [
        (10000, "held"), (8000, "far0"), (6000, "far1")]


def call(net: Network, *, target: bytes | None = None, query: DiscoveryQuery | None = None
         ) -> RouteReply:
    net.agents["alice"].route(b"hi", net.now, target=target, query=query)
    net.pump()
    for req in net.take("carol", RouteRequestReceived):
        net.agents["carol"].reply(req, b"hallo")
    net.pump()
    reply = answer(net, "alice")
    assert isinstance(reply, RouteReply)
    return reply


def test_route_by_query_resolves_through_the_summaries(net: Network) -> None:
    carol = net.agents["carol"]
    reply = call(net, query=DiscoveryQuery(skills=("translate",)))
    assert reply.status is ErrorCode.SUCCESS and reply.payload == b"hallo"
    # then by Agent ID, along the way the answer came, while it is kept
    assert call(net, target=carol.agent_id).status is ErrorCode.SUCCESS
    net.advance(timer("DISCOVERY_CACHE_TTL") + 1)
    assert call(net, target=carol.agent_id).status is ErrorCode.NO_ROUTE


def test_withdrawn_capability_leaves_the_summary(net: Network) -> None:
    net.agents["carol"].deregister(net.now)
    since = len(net.log)
    net.advance(timer("SUMMARY_INTERVAL") + 1)
    assert [s.msg.domain for s in net.log[since:] if isinstance(s.msg, Summary)
            and s.dest == "gw-a"] == ["c.example"]
    net.agents["alice"].discover(DiscoveryQuery(skills=("translate",)), net.now)
    net.pump()
    assert answer(net, "alice").results == ()  # type: ignore[attr-defined]
    assert not [s for s in net.log[since:] if isinstance(s.msg, Discover)
                and s.source.startswith("gw-")]
    # and a session that ends withdraws what came over it
    net.gateways["gw-a"].disconnect("gw-b", net.now)
    net.pump()
    assert len(net.gateways["gw-a"].summaries.table) == 0


def test_summary_vector_is_the_filter_of_the_weather_record() -> None:
    """The "summary" vector's SUMMARY_FILTER is what the Section 6.9 algorithm
    gives for the weather record; its terms are in it, and queries match as specified."""
    record = weather_signed().record
    vector = examples()["summary"]
    assert isinstance(vector, Summary) and vector.summary is not None
    bloom = Bloom.of([record])
    assert bloom.value == vector.summary
    assert (bloom.value.hashes, 8 * len(bloom.value.bits)) == (10, 128)
    assert all(t in bloom for t in record_terms(record))
    assert filter_size(0) == (64, 1) and filter_size(7000) == (65536, 6)
    for query, expected in (
            (DiscoveryQuery(skills=("forecast",)), True),
            (DiscoveryQuery(skills=("forecast", "translate")), False),
            (DiscoveryQuery(skills=("forecast",), domain="b.example"), False),
            (DiscoveryQuery(tags=("Weather", "sport")), True),
            (DiscoveryQuery(intent="severe storms"), True),
            (DiscoveryQuery(tags=("sport",)), False),
            (DiscoveryQuery(tags=("sport",), input_modes=("text/plain",)), True)):
        assert may_match(query, "a.example", bloom) is expected, query


def test_malformed_capability_summary_refused() -> None:
    data = encode(examples()["summary"])
    value_at = data.index(bytes.fromhex("8040")) + 4
    for bad, code in ((bytes([0]), ErrorCode.INVALID_TLV_VALUE),
                      (bytes([17]), ErrorCode.INVALID_TLV_VALUE)):
        with pytest.raises(DecodeError) as err:
            decode(data[:value_at] + bad + data[value_at + 1:])
        assert err.value.code is code
    short = data[:value_at - 2] + (12).to_bytes(2, "big") + data[value_at:value_at + 12]
    short = short[:4] + len(short).to_bytes(4, "big") + short[8:]
    with pytest.raises(DecodeError) as err:
        decode(short)
    assert err.value.code is ErrorCode.INVALID_TLV_LENGTH


def test_summary_with_a_bad_path_is_ignored_and_a_loop_withdraws(net: Network) -> None:
    a, b_id, c_id = net.gateways["gw-a"], net.gateway_id("gw-b"), net.gateway_id("gw-c")
    held = a.summaries.table.best(c_id)
    assert held is not None
    forged = Summary(gateway_id=c_id, timestamp=held.timestamp + 1, path=(b_id,),
                     domain="c.example", summary=Bloom.of([]).value)
    for path in ((b_id,), (c_id,), (c_id, b_id, b_id), ()):  # origin not first, not from b
        net.deliver("gw-b", "gw-a", replace(forged, path=path))
    assert a.summaries.table.best(c_id) == held
    # a path through gw-a itself is a loop: it withdraws what gw-b advertised
    net.deliver("gw-b", "gw-a", replace(forged, path=(c_id, net.gateway_id("gw-a"), b_id)))
    assert a.summaries.table.best(c_id) is None


def test_summary_folded_to_fit_a_small_pdu_limit(tmp_path: Path) -> None:
    """gw-b's PDUs may hold 1200 octets (a lab-mode datagram link): the summary of
    c.example (1000 terms: 16384 bits) it relays is folded to fit, and still finds every
    skill of c.example."""
    n = Network(tmp_path)
    for name, dom in (("gw-a", "a.example"), ("gw-c", "c.example")):
        n.gateway(name, dom, replication=summaries_only)
    n.gateway("gw-b", "b.example", replication=summaries_only, pdu_limit=lambda _h: 1200)
    n.agent("alice", "gw-a")
    for i in range(280):
        n.agent(f"c{i}", "gw-c", skills=tuple(
            Skill(f"skill-{i}-{j}", f"Skill {i} {j}", (f"tag{i}",)) for j in range(3)))
    for agent in n.agents.values():
        agent.register(n.now)
    n.pump()
    n.gateways["gw-a"].connect("gw-b", n.now)
    n.gateways["gw-b"].connect("gw-c", n.now)
    n.advance(2)
    from_b = [s for s in n.log if isinstance(s.msg, Summary) and s.source == "gw-b"
              and s.dest == "gw-a" and s.msg.domain == "c.example"]
    assert from_b and all(s.size <= 1200 for s in from_b)
    held = n.gateways["gw-a"].summaries.table.best(n.gateway_id("gw-c"))
    original = n.gateways["gw-b"].summaries.table.best(n.gateway_id("gw-c"))
    assert held is not None and original is not None
    assert len(held.bloom.value.bits) < len(original.bloom.value.bits)
    assert all(may_match(DiscoveryQuery(skills=(f"skill-{i}-2",)), "c.example", held.bloom)
               for i in range(280))
    n.agents["alice"].discover(DiscoveryQuery(skills=("skill-217-1",)), n.now)
    n.pump()
    [found] = answer(n, "alice").results  # type: ignore[attr-defined]
    assert found.record.record.name == "c217"
    n.close()


def test_summaries_repeated_on_datagram_links(tmp_path: Path) -> None:
    """gw-b's link to gw-a is a datagram link (PDU limit 1200): a SUMMARY lost on it is
    sent again within DIGEST_INTERVAL (Section 6.9)."""
    n = Network(tmp_path)
    for name, dom in (("gw-a", "a.example"), ("gw-c", "c.example")):
        n.gateway(name, dom, replication=summaries_only)
    n.gateway("gw-b", "b.example", replication=summaries_only,
              pdu_limit=lambda h: 1200 if h == "gw-a" else MAX_PDU_SIZE)
    n.agent("alice", "gw-a").register(n.now)
    n.gateways["gw-a"].connect("gw-b", n.now)
    n.gateways["gw-b"].connect("gw-c", n.now)
    n.advance(2)
    n.cut.add(frozenset(("gw-a", "gw-b")))  # what gw-b sends gw-a now is lost
    carol = n.agent("carol", "gw-c", skills=(Skill("translate", "Translate", ()),))
    carol.register(n.now)
    n.advance(2)
    query = DiscoveryQuery(skills=("translate",))
    table = n.gateways["gw-a"].summaries.table
    assert not table.matching(query)
    n.cut.clear()
    n.advance(timer("DIGEST_INTERVAL"))
    assert [r.domain for r in table.matching(query)] == ["c.example"]
    n.close()
