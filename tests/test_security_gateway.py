"""Security at the gateway node (draft Section 10): GatewayGuard's hooks in GatewayNode,
driven through the in-memory harness (every PDU encoded and decoded on every hop).

Each refusal ends in its registered error code, stores nothing, and the gateway then
serves the next good request."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from security_support import Domain, at, register, signed_of

from dmscproto.codec.examples import example_key
from dmscproto.codec.messages import (
    Discover,
    DiscoverReply,
    Message,
    Notify,
    Open,
    Register,
    RegisterAck,
    RouteReply,
    RouteRequest,
    Update,
)
from dmscproto.codec.registry import ErrorCode, GatewayCaps, Scope
from dmscproto.codec.values import DiscoveryQuery, ExportPolicy
from dmscproto.codec.wire import Advertisement
from dmscproto.gateway.node import GatewayNode
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.events import (
    ProtocolViolation,
    RequestCompleted,
    RouteRequestReceived,
    SessionEstablished,
)
from dmscproto.security.ca import Credential, DomainAuthority, Kind
from dmscproto.security.federation import Federation, ImportPolicy, PeerDomain
from dmscproto.security.guard import GatewayGuard
from dmscproto.security.proof import RequestVerifier
from dmscproto.security.revocation import Revocation, issue_crl
from dmscproto.security.signing import entity_id
from dmscproto.security.tokens import ScopeSet, TokenIssuer, TokenVerifier
from dmscproto.testing.harness import T0, Network

pytestmark = pytest.mark.security


@dataclass
class SecureNet:
    """A harness network whose gateways hold certificates and a GatewayGuard each."""

    net: Network
    domains: dict[str, Domain]
    creds: dict[str, Credential] = field(default_factory=dict)
    guards: dict[str, GatewayGuard] = field(default_factory=dict)

    def gateway(self, name: str, domain: str, *, peers: tuple[PeerDomain, ...] = (),
                tokens: bool = False) -> GatewayNode:
        g = self.guards
        node = self.net.gateway(
            name, domain, admit=lambda s, m, n: g[name].admit(s, m, n),
            accept_open=lambda s, m: g[name].accept_open(s, m),
            export_for=lambda d: g[name].export_for(d),
            discovery_policy=lambda s: g[name].discovery_policy(s))
        key = next(example_key(k) for k in range(200, 300)
                   if entity_id(example_key(k).public_key()) == node.core.gateway_id)
        d = self.domains[domain]
        cert = d.authority.issue(name, Kind.GATEWAY, public_key=key.public_key(),
                                 now=at(T0 - 60)).certificate
        self.creds[name] = Credential(cert, key)
        fed = Federation(domain, d.authority.certificate, peers)
        fed.revocation.update(issue_crl(d.authority, [], number=1, now=at(T0)), at(T0))
        verifier = RequestVerifier(fed.trust_store(), tokens=TokenVerifier(
            d.authority.certificate) if tokens else None)
        g[name] = GatewayGuard(node.core, verifier, self.creds.get, federation=fed,
                               credential=self.creds[name])
        return node

    def agent(self, name: str, gateway: str, domain: str, *,
              skills: tuple[str, ...] = ("forecast",), tags: tuple[str, ...] = ("public",)
              ) -> AgentClient:
        cred = self.domains[domain].issue(name, now=T0)
        self.creds[name] = cred
        return self.net.agent(name, gateway, signed=signed_of(cred, skills=skills, tags=tags))

    def raw(self, source: str, dest: str, msg: Message) -> Message:
        """Deliver ``msg`` from a bare handle and return the gateway's answer to it (a
        NOTIFY, which has its own transaction id, counts as the answer to an OPEN)."""
        before = len(self.net.log)
        self.net.deliver(source, dest, msg)
        self.net.pump()
        answers = [s.msg for s in self.net.log[before:] if s.source == dest
                   and s.dest == source and (s.msg.transaction_id == msg.transaction_id
                                             or isinstance(s.msg, Notify))]
        assert len(answers) == 1, answers
        return answers[0]

    def peer_domain(self, domain: str, *, export_tags: tuple[str, ...] = ("public",),
                    capabilities: tuple[str, ...] = ("*",)) -> PeerDomain:
        return PeerDomain(domain, self.domains[domain].authority.certificate,
                          ExportPolicy((domain,), include_tags=export_tags),
                          ImportPolicy((domain,), capabilities))


@pytest.fixture
def snet(tmp_path: Path) -> Iterator[SecureNet]:
    net = Network(tmp_path)
    doms = {n: Domain.create(n, T0) for n in ("a.example", "b.example", "c.example")}
    yield SecureNet(net, doms)
    net.close()


# --- registration through the node -------------------------------------------------------
def _reg(s: SecureNet, name: str, **kw: object) -> Register:
    return register(signed_of(s.creds[name]), now=T0, **kw)  # type: ignore[arg-type]


def test_registration_refusals_at_the_node(snet: SecureNet) -> None:
    node = snet.gateway("gw-a", "a.example", tokens=True)
    a = snet.domains["a.example"]
    for n in ("weather", "rogue", "good"):
        snet.creds[n] = a.issue(n, now=T0)
    snet.creds["old"] = a.issue("old", now=T0 - 10 * 86400, validity=dt.timedelta(days=1))
    snet.creds["fired"] = a.issue("fired", now=T0)
    impostor = DomainAuthority.create("a.example", now=at(T0 - 3600))
    snet.creds["impostor"] = impostor.issue("weather", Kind.AGENT, now=at(T0 - 60))
    fed = snet.guards["gw-a"].federation
    assert fed is not None
    fed.revocation.update(issue_crl(a.authority, [Revocation(
        snet.creds["fired"].certificate.serial_number, at(T0))], number=2, now=at(T0)), at(T0))
    issuer = TokenIssuer(a.authority)

    def token(name: str, scope: str = "register", **kw: object) -> bytes:
        c = snet.creds[name]
        return issuer.issue(c.certificate, c.identity.uri, ScopeSet.parse(scope),
                            now=kw.pop("now", T0), **kw).encode()  # type: ignore[arg-type]

    good_sig = signed_of(snet.creds["weather"])
    cases: list[tuple[str, Register, ErrorCode]] = [
        ("weather", replace(_reg(snet, "weather", token=token("weather")),
                            record=replace(good_sig, signature=bytes(64))),
         ErrorCode.BAD_SIGNATURE),
        ("rogue", _reg(snet, "weather", token=token("rogue")), ErrorCode.IDENTITY_MISMATCH),
        ("impostor", _reg(snet, "impostor", token=token("weather")),
         ErrorCode.UNTRUSTED_CERTIFICATE),
        ("old", _reg(snet, "old"), ErrorCode.CERTIFICATE_EXPIRED),
        ("fired", _reg(snet, "fired", token=token("fired")), ErrorCode.CERTIFICATE_REVOKED),
        ("weather", _reg(snet, "weather", token=token("weather"), timestamp=int(T0 * 1000)
                         - 301_000), ErrorCode.STALE_TIMESTAMP),
        ("weather", _reg(snet, "weather", token=token("weather", "discover")),
         ErrorCode.INSUFFICIENT_SCOPE),
        ("weather", _reg(snet, "weather", token=token("weather", audience=(
            "dmsc://a.example/gw-z",))), ErrorCode.WRONG_AUDIENCE),
        ("weather", _reg(snet, "weather", token=token("weather", now=T0 - 7200)),
         ErrorCode.TOKEN_EXPIRED),
        ("weather", _reg(snet, "weather", token=token("rogue")), ErrorCode.TOKEN_KEY_MISMATCH),
        ("weather", _reg(snet, "weather"), ErrorCode.INVALID_TOKEN),
        ("nobody", _reg(snet, "weather", token=token("weather")),
         ErrorCode.UNTRUSTED_CERTIFICATE),  # an unauthenticated association
    ]
    for i, (source, msg, code) in enumerate(cases):
        msg = replace(msg, transaction_id=100 + i)
        ack = snet.raw(source, "gw-a", msg)
        assert isinstance(ack, RegisterAck) and ack.status is code, (i, ack)
        assert len(node.core) == 0, i
    ok = snet.raw("good", "gw-a", replace(_reg(snet, "good", token=token("good")),
                                          transaction_id=99))
    assert isinstance(ok, RegisterAck) and ok.status is ErrorCode.SUCCESS
    assert snet.creds["good"].identity.entity_id in node.core
    first = replace(_reg(snet, "weather", token=token("weather")), transaction_id=1)
    assert snet.raw("weather", "gw-a", first).status is ErrorCode.SUCCESS  # type: ignore[attr-defined]
    replayed = snet.raw("weather", "gw-a", replace(first, transaction_id=2))
    assert isinstance(replayed, RegisterAck) and replayed.status is ErrorCode.REPLAY
    # the name is owned by the registered key: a re-issued certificate cannot take it
    snet.creds["weather2"] = a.issue("weather", now=T0)
    conflict = snet.raw("weather2", "gw-a", replace(
        _reg(snet, "weather2", token=token("weather2")), transaction_id=3))
    assert isinstance(conflict, RegisterAck) and conflict.status is ErrorCode.NAME_CONFLICT
    assert len(node.core) == 2


# --- federation through the node ----------------------------------------------------------
def federated(snet: SecureNet) -> tuple[AgentClient, AgentClient, AgentClient, AgentClient]:
    """gw-a (a.example) imports only 'translate' from b; gw-b shows a only 'public'."""
    snet.gateway("gw-a", "a.example", peers=(
        snet.peer_domain("b.example", capabilities=("translate",)),
        snet.peer_domain("c.example")))
    snet.gateway("gw-b", "b.example", peers=(snet.peer_domain("a.example"),))
    alice = snet.agent("alice", "gw-a", "a.example")
    bob = snet.agent("bob", "gw-b", "b.example", skills=("translate",))
    dave = snet.agent("dave", "gw-b", "b.example", skills=("forecast",))
    carol = snet.agent("carol", "gw-b", "b.example", skills=("translate",), tags=("internal",))
    for agent in (alice, bob, dave, carol):
        agent.register(snet.net.now)
    snet.net.pump()
    snet.net.gateways["gw-a"].connect("gw-b", snet.net.now)
    snet.net.pump()
    assert snet.net.take("gw-a", SessionEstablished)
    return alice, bob, dave, carol


def test_export_policy_hides_records_from_the_other_domain(snet: SecureNet) -> None:
    alice, bob, dave, carol = federated(snet)
    core_a = snet.net.gateways["gw-a"].core
    assert bob.agent_id in core_a and dave.agent_id in core_a
    assert carol.agent_id not in core_a  # never advertised: exported to nobody in a
    alice.discover(DiscoveryQuery(skills=("translate",)), snet.net.now, scope=Scope.FEDERATED)
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, DiscoverReply)
    assert [r.record.record.agent_id for r in done.answer.results] == [bob.agent_id]
    # a peer gateway's DISCOVER is answered through the export policy too
    reply = snet.raw("gw-a", "gw-b", Discover(transaction_id=5, query=DiscoveryQuery(
        skills=("translate",)), scope=Scope.LOCAL, max_results=10))
    assert isinstance(reply, DiscoverReply)
    assert [r.record.record.agent_id for r in reply.results] == [bob.agent_id]


def test_cross_domain_call_refused_by_import_policy(snet: SecureNet) -> None:
    alice, bob, dave, _ = federated(snet)
    alice.route(b"forecast please", snet.net.now, target=dave.agent_id)
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, RouteReply)
    assert done.answer.status is ErrorCode.POLICY_DENIED
    assert not snet.net.take("dave", RouteRequestReceived)
    alice.route(b"translate please", snet.net.now, target=bob.agent_id)  # allowed
    snet.net.pump()
    [req] = snet.net.take("bob", RouteRequestReceived)
    snet.net.agents["bob"].reply(req, b"bitte")
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, RouteReply) and done.answer.payload == b"bitte"


def test_spoofed_source_agent_refused(snet: SecureNet) -> None:
    alice, bob, _, _ = federated(snet)
    spoof = RouteRequest(transaction_id=77, source_agent=bob.agent_id,
                         target_agent=alice.agent_id, hop_limit=8, path=(), payload=b"x")
    reply = snet.raw("alice", "gw-a", spoof)
    assert isinstance(reply, RouteReply) and reply.status is ErrorCode.IDENTITY_MISMATCH
    good = replace(spoof, transaction_id=78, source_agent=alice.agent_id,
                   target_agent=bob.agent_id)
    snet.net.deliver("alice", "gw-a", good)
    snet.net.pump()
    assert snet.net.take("bob", RouteRequestReceived)


def test_gateway_claiming_another_domain_in_open(snet: SecureNet) -> None:
    """mallory holds a valid gateway certificate of c.example (federated with a) and
    sends OPEN with b.example's gateway ID and domain: refused with NOTIFY
    IDENTITY_MISMATCH, no session; the real gw-b session stays up."""
    federated(snet)
    c = snet.domains["c.example"]
    snet.creds["mallory"] = c.issue("mallory", Kind.GATEWAY, now=T0)
    gw_b = snet.net.gateways["gw-b"].core
    notify = snet.raw("mallory", "gw-a", Open(transaction_id=9, gateway_id=gw_b.gateway_id,
                                              domain="b.example", hold_time=90,
                                              capabilities=int(GatewayCaps.ROUTING)))
    assert isinstance(notify, Notify) and notify.status is ErrorCode.IDENTITY_MISMATCH
    node_a = snet.net.gateways["gw-a"]
    assert "mallory" not in node_a.peers.values()
    assert node_a.peers[gw_b.gateway_id] == "gw-b"
    # an agent of another domain talking to gw-a directly is not served
    snet.creds["eve"] = snet.domains["b.example"].issue("eve", now=T0)
    reply = snet.raw("eve", "gw-a", Discover(transaction_id=10, query=DiscoveryQuery(),
                                             scope=Scope.FEDERATED, max_results=10))
    assert isinstance(reply, DiscoverReply) and reply.status is ErrorCode.POLICY_DENIED


def test_origin_assertion_from_the_guard_verifies_at_the_destination(snet: SecureNet) -> None:
    """The origin gateway's outgoing() replaces the agent's token with an origin
    assertion that the destination's guard (require_origin) accepts once."""
    alice, bob, _, _ = federated(snet)
    guard_a, guard_b = snet.guards["gw-a"], snet.guards["gw-b"]
    strict = GatewayGuard(snet.net.gateways["gw-b"].core, guard_b.verifier, snet.creds.get,
                          federation=guard_b.federation, require_origin=True)
    req = RouteRequest(transaction_id=5, source_agent=alice.agent_id,
                       target_agent=bob.agent_id, hop_limit=8, path=(), payload=b"hi",
                       token=os.urandom(8))
    assert guard_a.admit("alice", replace(req, token=None), snet.net.now) is None
    fwd = guard_a.outgoing("alice", req, 5, snet.net.now)
    assert fwd.token is not None and fwd.token != req.token
    assert strict.admit("gw-a", fwd, snet.net.now) is None
    assert strict.admit("gw-a", fwd, snet.net.now) is ErrorCode.REPLAY
    assert strict.admit("gw-a", replace(fwd, token=None), snet.net.now) \
        is ErrorCode.INVALID_TOKEN
    assert strict.admit("gw-a", replace(fwd, payload=b"other"), snet.net.now) \
        is ErrorCode.IDENTITY_MISMATCH
    relayed = guard_a.outgoing("gw-b", fwd, 6, snet.net.now)
    assert relayed is fwd  # transit: unchanged


def test_revocation_applies_to_live_associations(snet: SecureNet) -> None:
    federated(snet)
    query = Discover(transaction_id=20, query=DiscoveryQuery(skills=("translate",)),
                     scope=Scope.FEDERATED, max_results=5)
    assert snet.raw("alice", "gw-a", query).status is ErrorCode.SUCCESS  # type: ignore[attr-defined]
    a = snet.domains["a.example"]
    fed = snet.guards["gw-a"].federation
    assert fed is not None
    fed.revocation.update(issue_crl(a.authority, [Revocation(
        snet.creds["alice"].certificate.serial_number, at(T0))], number=5, now=at(T0)), at(T0))
    reply = snet.raw("alice", "gw-a", replace(query, transaction_id=21))
    assert isinstance(reply, DiscoverReply) and reply.status is ErrorCode.CERTIFICATE_REVOKED
    snet.agent("zed", "gw-a", "a.example")
    ok = snet.raw("zed", "gw-a", replace(query, transaction_id=22))
    assert isinstance(ok, DiscoverReply) and ok.status is ErrorCode.SUCCESS
    # once the CRL is past its nextUpdate, revocation status is unknown: fail closed
    later = replace(query, transaction_id=23)
    snet.net.now = T0 + 3 * 86400
    reply = snet.raw("zed", "gw-a", later)
    assert isinstance(reply, DiscoverReply) and reply.status is ErrorCode.UNTRUSTED_CERTIFICATE


def test_record_poisoning_through_sync_refused(snet: SecureNet) -> None:
    """gw-b, a federated peer, advertises a record of a.example (gw-a's own domain) and
    one of c.example (not in gw-a's import policy for b): refused, nothing learned; its
    next UPDATE with a b.example record is learned."""
    federated(snet)
    node_a = snet.net.gateways["gw-a"]
    gw_b = snet.net.gateways["gw-b"].core.gateway_id
    path = (gw_b,)
    own = signed_of(snet.domains["a.example"].issue("mole", now=T0))
    third = signed_of(snet.domains["c.example"].issue("far", now=T0))
    fresh = signed_of(snet.domains["b.example"].issue("fresh", now=T0))
    before = len(node_a.core)
    for i, bad in enumerate((own, third)):
        snet.net.deliver("gw-b", "gw-a", Update(transaction_id=40 + i, advertise=(
            Advertisement(1, path, fresh), Advertisement(1, path, bad))))
        snet.net.pump()
        [violation] = snet.net.take("gw-a", ProtocolViolation)
        assert violation.status is ErrorCode.POLICY_DENIED
        assert bad.record.agent_id not in node_a.core and len(node_a.core) == before
    snet.net.deliver("gw-b", "gw-a", Update(transaction_id=42, advertise=(
        Advertisement(1, path, fresh),)))
    snet.net.pump()
    assert fresh.record.agent_id in node_a.core
