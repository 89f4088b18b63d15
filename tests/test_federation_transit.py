"""Transit through other domains, in the fake-clock harness with every gateway's guard
(draft Sections 6.3 and 10.6): a domain's gateways joined only through other domains
share its records where those domains' transit policy allows it, and domains that do not
peer call each other through a chain when the trust bundle and the transit policy allow
it; each refusal has its code."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from security_support import Domain
from test_security_gateway import SecureNet

from dmscproto.codec.messages import (
    Discover,
    DiscoverReply,
    RouteReply,
    RouteRequest,
    Summary,
    Update,
)
from dmscproto.codec.registry import ErrorCode, MessageType, Scope, timer
from dmscproto.codec.values import DiscoveryQuery, ExportPolicy
from dmscproto.host.config import ConfigError, GatewayConfig
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.bloom import Bloom
from dmscproto.protocol.events import (
    ProtocolViolation,
    RecordRefused,
    RequestCompleted,
    RouteRequestReceived,
    SessionEstablished,
)
from dmscproto.protocol.summary import Replication
from dmscproto.runtime.gateway import build_federation
from dmscproto.sandbox.domains import Domain as SandboxDomain
from dmscproto.sandbox.domains import PeerSpec, write_gateway_config
from dmscproto.security.federation import ImportPolicy, PeerDomain, TransitPolicy
from dmscproto.testing.harness import T0, Network

pytestmark = pytest.mark.security
DOMAINS = ("a.example", "b.example", "c.example", "d.example")


@pytest.fixture
def snet(tmp_path: Path) -> Iterator[SecureNet]:
    net = Network(tmp_path)
    yield SecureNet(net, {n: Domain.create(n, T0) for n in DOMAINS})
    net.close()


def peer(snet: SecureNet, domain: str, *, transit: bool | tuple[str, ...] = False,
         imports: tuple[str, ...] = ()) -> PeerDomain:
    """A peer domain shown everything tagged public, importing every capability and
    the record domains ``imports`` besides its own."""
    p = snet.peer_domain(domain)
    return replace(p, transit=transit,
                   imports=replace(p.imports, domains=(domain, *imports)))


def link(snet: SecureNet, *pairs: tuple[str, str]) -> None:
    for left, right in pairs:
        snet.net.gateways[left].connect(right, snet.net.now)
        snet.net.pump()
        assert snet.net.take(left, SessionEstablished), (left, right)


def call(snet: SecureNet, caller: str, callee: str, *, by_query: bool = False
         ) -> RouteReply:
    """``caller`` calls ``callee`` (by Agent ID, or by a query for its skill); the
    callee answers if the request reaches it.  Returns the caller's ROUTE_REPLY."""
    agents = snet.net.agents
    query = DiscoveryQuery(skills=(agents[callee].signed.record.skills[0].id,))
    agents[caller].route(b"ping", snet.net.now, target=None if by_query
                         else agents[callee].agent_id, query=query if by_query else None)
    snet.net.pump()
    for req in snet.net.take(callee, RouteRequestReceived):
        agents[callee].reply(req, b"pong")
    snet.net.pump()
    [done] = snet.net.take(caller, RequestCompleted)
    assert isinstance(done.answer, RouteReply)
    return done.answer


# --- same-domain clusters through other domains (issue 10 item 5) ---------------------------
RING = ("a1", "b1", "b2", "a2", "c1", "c2", "d1", "d2")


def ring(snet: SecureNet) -> tuple[AgentClient, AgentClient]:
    """Eight gateways in a ring, a1 and a2 (a.example) joined only through b.example
    (b1 - b2, which carries a.example's records back to a.example) and through c and d
    (d does not: its transit to a.example leaves a.example's own records out)."""
    a_peers = {"b": peer(snet, "b.example", imports=("a.example",)),
               "c": peer(snet, "c.example", imports=("a.example",)),
               "d": peer(snet, "d.example", imports=("a.example",))}
    snet.gateway("a1", "a.example", peers=(a_peers["b"], a_peers["d"]), require_origin=True)
    snet.gateway("a2", "a.example", peers=(a_peers["b"], a_peers["c"]), require_origin=True)
    for name in ("b1", "b2"):
        snet.gateway(name, "b.example", peers=(peer(snet, "a.example", transit=("a.example",)),))
    # the gateways of one domain share its federation configuration
    c_peers = (peer(snet, "a.example", transit=True), peer(snet, "d.example", transit=True))
    d_peers = (peer(snet, "a.example", transit=True),
               peer(snet, "c.example", imports=("a.example",)))
    for name in ("c1", "c2"):
        snet.gateway(name, "c.example", peers=c_peers)
    for name in ("d1", "d2"):
        snet.gateway(name, "d.example", peers=d_peers)
    alice = snet.agent("alice", "a1", "a.example")
    bob = snet.agent("bob", "a2", "a.example", skills=("translate",))
    for agent in (alice, bob):
        agent.register(snet.net.now)
    snet.net.pump()
    link(snet, *zip(RING, RING[1:] + RING[:1], strict=True))
    return alice, bob


def test_domain_split_by_other_domains_converges_where_transit_allows(
        snet: SecureNet) -> None:
    alice, bob = ring(snet)
    gw = snet.net.gateways
    # each learns the other's record through b (a2 b2 b1 a1), never through d
    held = gw["a1"].core.get(bob.agent_id)
    assert held is not None and held.path == tuple(
        snet.net.gateway_id(g) for g in ("a2", "b2", "b1"))
    assert alice.agent_id in gw["a2"].core
    # and calls each other along it, by Agent ID and by query
    assert call(snet, "alice", "bob").status is ErrorCode.SUCCESS
    assert call(snet, "bob", "alice", by_query=True).status is ErrorCode.SUCCESS
    # (sent once: b1 offers a2's certificate before it, Section 6.10)
    reqs = snet.messages(RouteRequest, source="b1", dest="a1")
    assert len(reqs) == 1 and {r.path for r in reqs} == {
        tuple(snet.net.gateway_id(g) for g in ("a2", "b2", "b1"))}
    # d never re-advertises a.example's records to a.example, so nothing is refused,
    # not at the first exchange and not at the DIGESTs that follow
    since = len(snet.net.log)
    snet.net.advance(65)
    for name in RING:
        assert not snet.net.take(name, RecordRefused), name
    assert not [m for m in snet.messages(Update, since=since) if m.advertise]
    # without b the two halves of a.example stay apart: d's policy forbids that transit
    gw["b1"].disconnect("b2", snet.net.now)
    snet.net.pump()
    assert bob.agent_id not in gw["a1"].core and alice.agent_id not in gw["a2"].core


# --- transit trust: domains that do not peer (issue 10 item 6) ------------------------------
def chain(snet: SecureNet, *, a: TransitPolicy | None = None, c: TransitPolicy | None = None,
          b_transit: bool = True) -> tuple[AgentClient, AgentClient]:
    """gw-a - gw-b - gw-c: a and c do not peer; each has the other's anchor in its trust
    bundle (unless ``a`` or ``c`` says otherwise), shows it everything and may call
    anything there; b carries each one's records to the other (``b_transit``)."""
    anchor = {n: d.authority.certificate for n, d in snet.domains.items()}

    def trusting(other: str) -> TransitPolicy:
        return TransitPolicy((anchor[other],), export=ExportPolicy(()),
                             imports=ImportPolicy((), ("*",)))

    snet.gateway("gw-a", "a.example", peers=(peer(snet, "b.example"),), require_origin=True,
                 transit=a or trusting("c.example"))
    snet.gateway("gw-b", "b.example", peers=(peer(snet, "a.example", transit=b_transit),
                                             peer(snet, "c.example", transit=True)))
    snet.gateway("gw-c", "c.example", peers=(peer(snet, "b.example"),), require_origin=True,
                 transit=c or trusting("a.example"))
    alice = snet.agent("alice", "gw-a", "a.example")
    carol = snet.agent("carol", "gw-c", "c.example", skills=("translate",))
    for agent in (alice, carol):
        agent.register(snet.net.now)
    snet.net.pump()
    link(snet, ("gw-a", "gw-b"), ("gw-b", "gw-c"))
    return alice, carol


def test_call_through_a_transit_domain_both_ways(snet: SecureNet) -> None:
    _, carol = chain(snet)
    assert carol.agent_id in snet.net.gateways["gw-a"].core
    for by_query in (False, True):
        assert call(snet, "alice", "carol", by_query=by_query).status is ErrorCode.SUCCESS
        assert call(snet, "carol", "alice", by_query=by_query).status is ErrorCode.SUCCESS
    [first, *_] = snet.messages(RouteRequest, source="gw-b", dest="gw-c")
    assert first.token is not None  # gw-a's origin assertion, verified by gw-c
    for name in ("gw-a", "gw-b", "gw-c"):
        assert not snet.net.take(name, RecordRefused)


def test_call_from_a_domain_outside_the_trust_bundle_refused(snet: SecureNet) -> None:
    """gw-c does not trust a.example: it refuses a's records (relayed by b) and a call
    whose origin assertion a.example's authority signed."""
    chain(snet, c=TransitPolicy())
    assert {r.status for r in snet.net.take("gw-c", RecordRefused)} == {
        ErrorCode.POLICY_DENIED}
    reply = call(snet, "alice", "carol")
    assert reply.status is ErrorCode.UNTRUSTED_CERTIFICATE, reply.diagnostic


def test_path_longer_than_the_transit_policy_allows_refused(snet: SecureNet) -> None:
    anchor = snet.domains["a.example"].authority.certificate
    short = TransitPolicy((anchor,), max_path=1, export=ExportPolicy(()),
                          imports=ImportPolicy((), ("*",)))
    chain(snet, c=short)  # gw-c: a call from a.example crossed gw-a and gw-b
    reply = call(snet, "alice", "carol")
    assert reply.status is ErrorCode.POLICY_DENIED and "max_path" in (reply.diagnostic or "")
    anchor = snet.domains["c.example"].authority.certificate
    # gw-a: carol's record came over gw-c and gw-b; the call is refused before it leaves
    snet.guards["gw-a"].federation = replace_transit(snet, "gw-a", replace(
        short, bundle=(anchor,)))
    before = len(snet.messages(RouteRequest, source="gw-a"))
    reply = call(snet, "alice", "carol")
    assert reply.status is ErrorCode.POLICY_DENIED and "max_path" in (reply.diagnostic or "")
    assert len(snet.messages(RouteRequest, source="gw-a")) == before


def replace_transit(snet: SecureNet, gateway: str, transit: TransitPolicy
                    ) -> object:
    fed = snet.guards[gateway].federation
    assert fed is not None
    fed.transit = transit
    return fed


def test_transit_not_allowed_refused(snet: SecureNet) -> None:
    """gw-c accepts a.example's calls only through d.example; gw-b, without transit to
    a.example, relays nothing of c.example for it."""
    anchor = snet.domains["a.example"].authority.certificate
    chain(snet, c=TransitPolicy((anchor,), via=("d.example",), export=ExportPolicy(()),
                                imports=ImportPolicy((), ("*",))))
    reply = call(snet, "alice", "carol")
    assert reply.status is ErrorCode.POLICY_DENIED, reply.diagnostic
    assert "through b.example" in (reply.diagnostic or "")


def test_transit_gateway_refuses_a_call_it_does_not_carry(snet: SecureNet) -> None:
    _, carol = chain(snet, b_transit=False)
    assert carol.agent_id not in snet.net.gateways["gw-a"].core
    req = RouteRequest(transaction_id=9, source_agent=bytes(16), target_agent=carol.agent_id,
                       hop_limit=8, path=(snet.net.gateway_id("gw-a"),), payload=b"x")
    reply = snet.raw("gw-a", "gw-b", req)
    assert isinstance(reply, RouteReply) and reply.status is ErrorCode.POLICY_DENIED
    assert "no transit from a.example" in (reply.diagnostic or "")


# --- configuration: [federation] and transit keys, errors naming the key -----------------
@pytest.fixture
def config(tmp_path: Path) -> Path:
    a, b = (SandboxDomain.create(tmp_path, n) for n in ("a.example", "b.example"))
    (tmp_path / "bundle").mkdir()
    shutil.copy(b.anchor, tmp_path / "bundle" / "b.pem")
    return write_gateway_config(a, "gw", peers=[PeerSpec(b, ("127.0.0.1", 9), transit=True)])


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ('[federation]\ntrust_bundle = ["nope.pem"]', "federation.trust_bundle[0]",
     "no such file"),
    ('[federation]\ntrust_bundle = ["../empty"]', "federation.trust_bundle[0]", "no *.pem"),
    ("[federation]\nmax_path = 0", "federation.max_path", "1 to 255"),
    ('[federation]\nvia = ["B_bad"]', "federation.via[0]", "not a valid"),
    ('[federation]\ntransit = true', "federation.transit", "unknown key"),
    ('[federation.import]\ndomains = ["b.example"]', "federation.import.domains",
     "unknown key"),
])
def test_bad_federation_table_names_the_key(config: Path, extra: str, key: str,
                                            reason: str) -> None:
    (config.parent.parent / "empty").mkdir()
    config.write_text(config.read_text() + "\n" + extra + "\n")
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(config)
    assert err.value.key == key and reason in err.value.reason, err.value


def test_federation_table_and_transit_lists(config: Path) -> None:
    text = config.read_text().replace("transit = true", 'transit = ["*", "a.example"]')
    config.write_text(text + '\n[federation]\ntrust_bundle = ["../bundle"]\nmax_path = 6\n'
                      'via = ["b.example"]\n[federation.export]\ninclude_tags = ["public"]\n'
                      '[federation.import]\ncapabilities = ["*"]\n')
    loaded = GatewayConfig.load(config)
    assert loaded.peers[0].transit == ("*", "a.example")
    fed = build_federation(loaded)
    assert fed.transit.max_path == 6 and fed.transit.via == ("b.example",)
    assert fed.bundled == {"b.example"} and fed.remote == set()
    assert fed.peers["b.example"].transits("a.example")
    config.write_text(text.replace('"a.example"]', '"A_bad"]'))
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(config)
    assert err.value.key == "peers[0].transit[1]"
    (config.parent.parent / "bundle" / "b.pem").write_text("not a certificate\n")
    config.write_text(text + '\n[federation]\ntrust_bundle = ["../bundle"]\n')
    with pytest.raises(ConfigError) as err:
        build_federation(GatewayConfig.load(config))
    assert err.value.key == "federation.trust_bundle[0]" and "no PEM" in err.value.reason


@pytest.mark.parametrize(("new", "key", "reason"), [
    ('replication = "partial"', "peers[0].replication", '"full" or "summary"'),
    ('replication = "summary"\n[[peers]]\ndomain = "b.example"\nanchor = "../b.example/ca.pem"'
     '\nreplication = "full"', "peers[1].replication", "applies to the domain"),
    ('replication = "summary"\n[[peers]]\ndomain = "a.example"\nreplication = "summary"',
     "peers[1].replication", "own domain"),
])
def test_bad_replication_names_the_key(config: Path, new: str, key: str, reason: str) -> None:
    config.write_text(config.read_text().replace("transit = true", f"transit = true\n{new}"))
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(config)
    assert err.value.key == key and reason in err.value.reason, err.value
    config.write_text(config.read_text().replace(new, 'replication = "summary"'))
    assert GatewayConfig.load(config).peers[0].replication == "summary"


def test_summary_of_a_domain_the_peer_may_not_advertise_is_refused(snet: SecureNet) -> None:
    """gw-b may advertise only b.example to gw-a: a SUMMARY of c.example from it is
    refused (POLICY_DENIED, not kept), and the session stays up."""
    snet.gateway("gw-a", "a.example", peers=(peer(snet, "b.example"),))
    snet.gateway("gw-b", "b.example", peers=(peer(snet, "a.example"),))
    link(snet, ("gw-a", "gw-b"))
    snet.net.advance(timer("SUMMARY_INTERVAL"))  # gw-b's own summary, originated then
    b = snet.net.gateway_id("gw-b")
    forged = Summary(gateway_id=b, timestamp=int(T0 * 1000) + 5, path=(b,),
                     domain="c.example", summary=Bloom.of([]).value)
    snet.net.deliver("gw-b", "gw-a", forged)
    snet.net.pump()
    [refused] = snet.net.take("gw-a", ProtocolViolation)
    assert refused.status is ErrorCode.POLICY_DENIED and refused.message_type is MessageType.SUMMARY
    table = snet.net.gateways["gw-a"].summaries.table
    best = table.best(b)
    assert best is not None and best.domain == "b.example"  # gw-b's own, kept
    assert snet.net.gateways["gw-a"].peers  # still peered


def test_a_hub_gateway_reflects_its_domain_records_to_the_others(tmp_path: Path) -> None:
    """Route reflector (Section 6.3): a2 and a3 peer only with the hub a1, yet each
    learns and calls the other's agent through it; no full mesh is needed."""
    net = Network(tmp_path)
    for name in ("a1", "a2", "a3"):
        net.gateway(name, "a.example")
    two, three = net.agent("two", "a2"), net.agent("three", "a3")
    for agent in (two, three):
        agent.register(net.now)
    net.pump()
    for spoke in ("a2", "a3"):
        net.gateways[spoke].connect("a1", net.now)
        net.pump()
    held = net.gateways["a2"].core.get(three.agent_id)
    assert held is not None and held.path == (net.gateway_id("a3"), net.gateway_id("a1"))
    two.route(b"hi", net.now, target=three.agent_id)
    net.pump()
    [req] = net.take("three", RouteRequestReceived)
    three.reply(req, b"ho")
    net.pump()
    [done] = net.take("two", RequestCompleted)
    assert isinstance(done.answer, RouteReply) and done.answer.payload == b"ho"
    net.close()


def test_kept_discovery_answers_are_shown_only_where_transit_allows(
        snet: SecureNet) -> None:
    """Sections 5.2.1, 10.6 (summaries only): gw-b keeps the answer it relayed for
    a.example's query (carol, c.example, which it shows a.example); the same query from
    d.example, which it does not show c.example, is answered from that cache without
    carol, and a ROUTE_REQUEST by that query from d.example does not reach her."""
    summaries = {"replication": lambda _domain: Replication.SUMMARY, "summary_mode": True}
    snet.gateway("gw-a", "a.example", peers=(peer(snet, "b.example", imports=("c.example",)),),
                 **summaries)
    snet.gateway("gw-b", "b.example", peers=(
        peer(snet, "a.example", transit=True), peer(snet, "c.example"),
        peer(snet, "d.example")), **summaries)
    snet.gateway("gw-c", "c.example", peers=(peer(snet, "b.example"),), **summaries)
    snet.gateway("gw-d", "d.example", peers=(peer(snet, "b.example", imports=("c.example",)),),
                 **summaries)
    alice = snet.agent("alice", "gw-a", "a.example")
    carol = snet.agent("carol", "gw-c", "c.example", skills=("translate",))
    for agent in (alice, carol):
        agent.register(snet.net.now)
    snet.net.pump()
    link(snet, ("gw-a", "gw-b"), ("gw-b", "gw-c"), ("gw-d", "gw-b"))
    snet.net.advance(timer("SUMMARY_INTERVAL") + 1)
    query = DiscoveryQuery(skills=("translate",))
    alice.discover(query, snet.net.now)
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, DiscoverReply)
    assert [r.record.record.agent_id for r in done.answer.results] == [carol.agent_id]
    since = len(snet.net.log)
    call(snet, "alice", "carol", by_query=True)  # gw-a resolves it through gw-b first
    [resolved] = snet.messages(DiscoverReply, source="gw-b", dest="gw-a", since=since)
    assert [r.record.record.agent_id for r in resolved.results] == [carol.agent_id]
    since = len(snet.net.log)
    snet.net.deliver("gw-d", "gw-b", Discover(transaction_id=7, query=query,
                                              scope=Scope.FEDERATED, max_results=10))
    snet.net.deliver("gw-d", "gw-b", RouteRequest(
        transaction_id=8, source_agent=bytes(16), query=query, hop_limit=8, path=(),
        payload=b"x"))
    snet.net.pump()
    assert not snet.messages(Discover, source="gw-b", since=since)  # answered from the cache
    [reply] = snet.messages(DiscoverReply, source="gw-b", dest="gw-d", since=since)
    assert reply.status is ErrorCode.SUCCESS and reply.results == ()
    assert not snet.messages(RouteRequest, dest="gw-c", since=since)
    [routed] = snet.messages(RouteReply, source="gw-b", dest="gw-d", since=since)
    assert routed.status is ErrorCode.NO_ROUTE, routed.diagnostic
