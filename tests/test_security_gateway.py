"""Security at the gateway node (draft Section 10): GatewayGuard's hooks in GatewayNode,
driven through the in-memory harness (every PDU encoded and decoded on every hop).

Each refusal ends in its registered error code, stores nothing, and the gateway then
serves the next good request."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from security_support import Domain, at, record_of, register, signed_of

from dmscproto.codec.messages import (
    Certificate,
    CertificateAck,
    Discover,
    DiscoverReply,
    Error,
    Message,
    Notify,
    Open,
    Register,
    RegisterAck,
    RouteReply,
    RouteRequest,
    SyncRequest,
    Update,
)
from dmscproto.codec.registry import ErrorCode, GatewayCaps, Scope
from dmscproto.codec.signing import entity_id, sign_record, spki
from dmscproto.codec.values import DiscoveryQuery, ExportPolicy
from dmscproto.codec.wire import Advertisement
from dmscproto.gateway.core import ALREADY_REGISTERED
from dmscproto.gateway.node import GatewayNode
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.certificates import thumbprint
from dmscproto.protocol.events import (
    ProtocolViolation,
    RecordRefused,
    RequestCompleted,
    RouteRequestReceived,
    SessionEstablished,
)
from dmscproto.protocol.machine import Handle, Refusal
from dmscproto.protocol.routing import Outbound, Outgoing
from dmscproto.security.ca import Credential, DomainAuthority, Identity, Kind
from dmscproto.security.federation import Federation, ImportPolicy, PeerDomain, TransitPolicy
from dmscproto.security.guard import GatewayGuard
from dmscproto.security.hooks import NodeHooks
from dmscproto.security.proof import RequestVerifier
from dmscproto.security.revocation import Revocation, issue_crl
from dmscproto.security.tokens import ScopeSet, TokenIssuer, TokenVerifier, b64url
from dmscproto.testing.examples import example_key
from dmscproto.testing.harness import T0, Network

pytestmark = pytest.mark.security
M = TypeVar("M", bound=Message)


@dataclass
class SecureNet:
    """A harness network whose gateways hold certificates and a GatewayGuard each."""

    net: Network
    domains: dict[str, Domain]
    creds: dict[str, Credential] = field(default_factory=dict)
    guards: dict[str, GatewayGuard] = field(default_factory=dict)

    def gateway(self, name: str, domain: str, *, peers: tuple[PeerDomain, ...] = (),
                tokens: bool = False, require_origin: bool = False,
                outgoing: Callable[[Outgoing], Outgoing] = lambda hook: hook,
                transit: TransitPolicy | None = None, **options: Any) -> GatewayNode:
        """A gateway with every hook of its guard (``outgoing`` may wrap the guard's),
        and the node's other ``options``."""
        g = self.guards

        def hook(key: str) -> Callable[..., Any]:
            return lambda *args: g[name].node_hooks()[key](*args)  # type: ignore[literal-required]

        hooks = {k: hook(k) for k in NodeHooks.__annotations__ if k != "certificates"}
        hooks["outgoing"] = outgoing(hooks["outgoing"])
        node = self.net.gateway(name, domain, **hooks, **options)
        key = next(example_key(k) for k in range(200, 300)
                   if entity_id(example_key(k).public_key()) == node.core.gateway_id)
        d = self.domains[domain]
        cert = d.authority.issue(name, Kind.GATEWAY, public_key=key.public_key(),
                                 now=at(T0 - 60)).certificate
        self.creds[name] = Credential(cert, key)
        fed = Federation(domain, d.authority.certificate, peers,
                         transit=transit or TransitPolicy())
        fed.revocation.update(issue_crl(d.authority, [], number=1, now=at(T0)), at(T0))
        verifier = RequestVerifier(fed.trust_store(), tokens=TokenVerifier(
            d.authority.certificate) if tokens else None)
        g[name] = GatewayGuard(node.core, verifier, self.creds.get, federation=fed,
                               credential=self.creds[name], require_origin=require_origin)
        node.certificates = g[name].certificates  # what the guard reads, the node fills
        return node

    def agent(self, name: str, gateway: str, domain: str, *,
              skills: tuple[str, ...] = ("forecast",), tags: tuple[str, ...] = ("public",),
              scope: str | None = None) -> AgentClient:
        """An agent; with ``scope``, holding an access token of its domain for it."""
        cred = self.domains[domain].issue(name, now=T0)
        self.creds[name] = cred
        client = self.net.agent(name, gateway, signed=signed_of(cred, skills=skills,
                                                                tags=tags))
        if scope is not None:
            client.token = TokenIssuer(self.domains[domain].authority).issue(
                cred.certificate, cred.identity.uri, ScopeSet.parse(scope), now=T0).encode()
        return client

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

    def messages(self, kind: type[M], *, source: str | None = None, dest: str | None = None,
                 since: int = 0) -> list[M]:
        """The messages of type ``kind`` delivered (from ``source``, to ``dest``) since
        log entry ``since``."""
        return [s.msg for s in self.net.log[since:] if isinstance(s.msg, kind)
                and source in (None, s.source) and dest in (None, s.dest)]

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
    # the same REGISTER again (its answer lost, say) is answered as the first was
    # (Section 5.1): the record is the one registered, nothing changes
    again = snet.raw("weather", "gw-a", replace(first, transaction_id=2))
    assert isinstance(again, RegisterAck) and again.status is ErrorCode.SUCCESS
    assert again.diagnostic == ALREADY_REGISTERED
    # ... but its nonce with another record is a replay
    newer = signed_of(snet.creds["weather"], version=2)
    replayed = snet.raw("weather", "gw-a", replace(first, transaction_id=3, record=newer))
    assert isinstance(replayed, RegisterAck) and replayed.status is ErrorCode.REPLAY
    assert node.core.get(newer.record.agent_id).signed == first.record  # type: ignore[union-attr]
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
    # refused by the admission itself (outgoing() would refuse it again, later)
    call = RouteRequest(transaction_id=90, source_agent=alice.agent_id,
                        target_agent=dave.agent_id, hop_limit=8, path=(), payload=b"x")
    refused = snet.guards["gw-a"].admit("alice", call, snet.net.now)
    assert isinstance(refused, Refusal) and refused.code is ErrorCode.POLICY_DENIED
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


def test_route_reply_naming_another_agent_is_dropped(snet: SecureNet) -> None:
    """Section 10.2: a local agent's ROUTE_REPLY whose TARGET_AGENT is not the agent is
    dropped (IDENTITY_MISMATCH); the caller gets TARGET_UNREACHABLE when time runs out."""
    alice, bob, dave, _ = federated(snet)
    alice.route(b"translate please", snet.net.now, target=bob.agent_id)
    snet.net.pump()
    [req] = snet.net.take("bob", RouteRequestReceived)
    snet.net.deliver("bob", "gw-b", RouteReply(
        transaction_id=req.transaction_id, status=ErrorCode.SUCCESS,
        target_agent=dave.agent_id, payload=b"I am dave"))
    snet.net.pump()
    [refused] = snet.net.take("gw-b", ProtocolViolation)
    assert refused.status is ErrorCode.IDENTITY_MISMATCH
    assert not snet.net.take("alice", RequestCompleted)
    snet.net.advance(60)
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, RouteReply)
    assert done.answer.status is ErrorCode.TARGET_UNREACHABLE


def test_gateway_claiming_another_domain_in_open(snet: SecureNet) -> None:
    """mallory holds a valid gateway certificate of c.example (federated with a) and
    sends OPEN with b.example's gateway ID and domain: refused with ERROR
    IDENTITY_MISMATCH, no session; the real gw-b session stays up."""
    federated(snet)
    c = snet.domains["c.example"]
    snet.creds["mallory"] = c.issue("mallory", Kind.GATEWAY, now=T0)
    gw_b = snet.net.gateways["gw-b"].core
    refused = snet.raw("mallory", "gw-a", Open(transaction_id=9, gateway_id=gw_b.gateway_id,
                                               domain="b.example", hold_time=90,
                                               capabilities=int(GatewayCaps.ROUTING)))
    assert isinstance(refused, Error) and refused.status is ErrorCode.IDENTITY_MISMATCH
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
    out = guard_a.outgoing("alice", req, 5, snet.net.now)
    assert isinstance(out, Outbound)  # with gw-a's certificate, which its assertion names
    fwd, der = out.request, snet.creds["gw-a"].certificate.public_bytes(Encoding.DER)
    assert out.certificate == der and fwd.token is not None and fwd.token != req.token
    assert strict.admit("gw-a", fwd, snet.net.now) is None

    def code(msg: RouteRequest) -> ErrorCode | None:
        refused = strict.admit("gw-a", msg, snet.net.now)
        return None if refused is None else refused.code

    assert code(fwd) is ErrorCode.REPLAY
    assert code(replace(fwd, token=None)) is ErrorCode.INVALID_TOKEN
    assert code(replace(fwd, payload=b"other")) is ErrorCode.IDENTITY_MISMATCH
    # gw-a relays a call from b only towards what it exports to b (transit): b's own
    # agent only when its transit names b.example; then the request passes unchanged
    refused = guard_a.outgoing("gw-b", fwd, 6, snet.net.now)
    assert isinstance(refused, Refusal) and refused.code is ErrorCode.POLICY_DENIED
    fed_a = guard_a.federation
    assert fed_a is not None
    fed_a.peers["b.example"] = replace(fed_a.peers["b.example"], transit=("b.example",))
    refused = guard_a.outgoing("gw-b", fwd, 6, snet.net.now)  # gw-b never sent gw-a's
    assert isinstance(refused, Refusal) and refused.code is ErrorCode.CERTIFICATE_UNKNOWN
    guard_a.certificates.keep("gw-b", der)
    assert guard_a.outgoing("gw-b", fwd, 6, snet.net.now) == Outbound(fwd, der)


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


@dataclass(frozen=True)
class _Peer:
    """An association as the guard sees it (its handle is its peer here)."""

    identity: Identity
    certificate: x509.Certificate


def test_live_certificate_check_keeps_no_parse_caches(snet: SecureNet) -> None:
    """The per-message check of an association's certificate runs on a copy of it
    (proof.check_held_certificate): what cryptography parses (extensions, names: about
    6 KB) stays on the certificate object, kept for as long as the agent is connected
    (issue 18 item 3).  The check itself is the same: see the revocation test above."""
    federated(snet)
    guard = snet.guards["gw-a"]
    alice = snet.creds["alice"]
    der = alice.certificate.public_bytes(Encoding.DER)
    peers = [_Peer(alice.identity, x509.load_der_x509_certificate(der)) for _ in range(41)]
    guard.peer_of = lambda handle: handle
    query = Discover(transaction_id=20, query=DiscoveryQuery(skills=("translate",)),
                     scope=Scope.FEDERATED, max_results=5)
    assert guard.admit(peers[0], query, snet.net.now) is None  # warm: the anchors parsed
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for peer in peers[1:]:
            assert guard.admit(peer, query, snet.net.now) is None
        kept = (tracemalloc.get_traced_memory()[0] - before) / len(peers[1:])
    finally:
        tracemalloc.stop()
    assert kept < 2000, f"{kept:.0f} octets kept per association"


def test_record_poisoning_through_sync_refused(snet: SecureNet) -> None:
    """gw-b, a federated peer, advertises a record of a.example (gw-a's own domain) and
    one of c.example (not in gw-a's import policy for b), each next to a good b.example
    record: the bad record is refused (RecordRefused, POLICY_DENIED, its reason), the
    good one in the same UPDATE is learned, and the session stays up."""
    federated(snet)
    node_a = snet.net.gateways["gw-a"]
    gw_b = snet.net.gateways["gw-b"].core.gateway_id
    path = (gw_b,)
    own = signed_of(snet.domains["a.example"].issue("mole", now=T0))
    third = signed_of(snet.domains["c.example"].issue("far", now=T0))
    forged = replace(signed_of(snet.domains["b.example"].issue("forged", now=T0)),
                     signature=bytes(64))
    for i, (bad, code, why) in enumerate((
            (own, ErrorCode.POLICY_DENIED, "may not advertise records of a.example"),
            (third, ErrorCode.POLICY_DENIED, "may not advertise records of c.example"),
            (forged, ErrorCode.BAD_SIGNATURE, "signature"))):
        fresh = signed_of(snet.domains["b.example"].issue(f"fresh{i}", now=T0))
        snet.net.deliver("gw-b", "gw-a", Update(
            transaction_id=40 + i, sequence=snet.net.next_sequence("gw-b", "gw-a"), advertise=(
            Advertisement(1, path, fresh), Advertisement(1, path, bad))))
        snet.net.pump()
        [refused] = snet.net.take("gw-a", RecordRefused)
        assert (refused.handle, refused.agent_id, refused.status) == \
            ("gw-b", bad.record.agent_id, code)
        assert why in refused.diagnostic
        assert not snet.net.take("gw-a", ProtocolViolation)
        assert bad.record.agent_id not in node_a.core
        assert fresh.record.agent_id in node_a.core
    assert node_a.peers[gw_b] == "gw-b"


def test_cross_domain_query_call_refused_by_import_policy(snet: SecureNet) -> None:
    """A QUERY is resolved after admission: the import policy is applied to the resolved
    remote target on the forwarding path (the outgoing hook), with its reason."""
    alice, _, _, _ = federated(snet)
    erin = snet.agent("erin", "gw-b", "b.example", skills=("summarize",))
    erin.register(snet.net.now)
    snet.net.pump()
    assert erin.agent_id in snet.net.gateways["gw-a"].core
    alice.route(b"tl;dr?", snet.net.now, query=DiscoveryQuery(skills=("summarize",)))
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, RouteReply)
    assert done.answer.status is ErrorCode.POLICY_DENIED
    assert done.answer.diagnostic is not None and "may not call" in done.answer.diagnostic
    assert not snet.messages(RouteRequest, dest="erin")
    alice.route(b"translate please", snet.net.now, query=DiscoveryQuery(skills=("translate",)))
    snet.net.pump()
    assert snet.net.take("bob", RouteRequestReceived)


# --- origin assertions end to end (Section 10.6) -------------------------------------------------
def origin_net(snet: SecureNet, outgoing: Callable[[Outgoing], Outgoing] = lambda h: h
               ) -> tuple[AgentClient, AgentClient]:
    """gw-a and gw-b require access tokens; gw-b requires an origin assertion on every
    ROUTE_REQUEST relayed to its agents.  alice (a) may route to translators only."""
    snet.gateway("gw-a", "a.example", tokens=True, outgoing=outgoing,
                 peers=(snet.peer_domain("b.example"),))
    snet.gateway("gw-b", "b.example", tokens=True, require_origin=True,
                 peers=(snet.peer_domain("a.example"),))
    alice = snet.agent("alice", "gw-a", "a.example", scope="register discover route:translate")
    bob = snet.agent("bob", "gw-b", "b.example", skills=("translate",), scope="register")
    for agent in (alice, bob):
        agent.register(snet.net.now)
    snet.net.pump()
    snet.net.gateways["gw-a"].connect("gw-b", snet.net.now)
    snet.net.pump()
    assert snet.net.take("gw-a", SessionEstablished)
    assert bob.agent_id in snet.net.gateways["gw-a"].core
    return alice, bob


def bob_answers_alice(snet: SecureNet) -> None:
    """bob answers the ROUTE_REQUEST delivered to him; alice gets the answer."""
    [req] = snet.net.take("bob", RouteRequestReceived)
    snet.net.agents["bob"].reply(req, b"hello")
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, RouteReply) and done.answer.payload == b"hello"


def _jwt_part(token: bytes, i: int) -> dict[str, Any]:
    part = token.split(b".")[i]
    return json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def test_cross_domain_call_carries_a_verified_origin_assertion(snet: SecureNet) -> None:
    """alice's token (bound to her certificate) stops at gw-a; gw-a forwards an origin
    assertion naming alice, bob and the route scope; gw-b verifies it and delivers;
    the answer comes back.  The same holds for a QUERY resolved at gw-a."""
    alice, bob = origin_net(snet)
    assert alice.token is not None
    for target, query in ((bob.agent_id, None), (None, DiscoveryQuery(skills=("translate",)))):
        since = len(snet.net.log)
        alice.route(b"hallo", snet.net.now, target=target, query=query)
        snet.net.pump()
        [sent] = snet.messages(RouteRequest, source="alice", since=since)
        assert sent.token == alice.token
        [relayed] = snet.messages(RouteRequest, source="gw-a", dest="gw-b", since=since)
        [delivered] = snet.messages(RouteRequest, dest="bob", since=since)
        assert relayed.token is not None and relayed.token != alice.token
        header = _jwt_part(relayed.token, 0)
        assert header["typ"] == "dmsc-origin+jwt" and "x5c" not in header  # gw-b: next hop
        claims = _jwt_part(relayed.token, 1)
        assert (claims["iss"], claims["sub"], claims["scope"]) == (
            "dmsc://a.example/gw-a", "dmsc://a.example/alice", "route:translate")
        assert delivered.target_agent == bob.agent_id
        bob_answers_alice(snet)
    assert not snet.net.take("gw-b", ProtocolViolation)


def _broken_signature(token: bytes) -> bytes:
    head, body, sig = token.split(b".")
    return b".".join((head, body, sig[::-1]))


#: What a man in the middle does to the forwarded request (given alice's own token).
TAMPER: dict[str, Callable[[RouteRequest, bytes], RouteRequest]] = {
    "stripped": lambda m, _t: replace(m, token=None),
    "other payload": lambda m, _t: replace(m, payload=b"transfer all funds"),
    "broken signature": lambda m, _t: replace(m, token=_broken_signature(m.token or b"..")),
    "agent token instead": lambda m, t: replace(m, token=t),
}


@pytest.mark.parametrize(("tamper", "code"), [
    ("stripped", ErrorCode.INVALID_TOKEN),
    ("other payload", ErrorCode.IDENTITY_MISMATCH),
    ("broken signature", ErrorCode.INVALID_TOKEN),
    ("agent token instead", ErrorCode.INVALID_TOKEN),
])
def test_call_with_stripped_or_tampered_origin_assertion_refused(
        snet: SecureNet, tamper: str, code: ErrorCode) -> None:
    """Between gw-a and gw-b the origin assertion is stripped, its request's payload
    changed, its signature broken, or alice's own token forwarded instead: gw-b answers
    ROUTE_REPLY with the code, which reaches alice; bob gets nothing; the next call
    (untouched) is delivered."""
    tampered: list[RouteRequest] = []

    def wrap(hook: Outgoing) -> Outgoing:
        def out(upstream: Handle, msg: RouteRequest, txid: int, now: float
                ) -> RouteRequest | Outbound | Refusal:
            fwd = hook(upstream, msg, txid, now)
            if tampered or not isinstance(fwd, Outbound):
                return fwd
            tampered.append(fwd.request)
            assert alice.token is not None
            return replace(fwd, request=TAMPER[tamper](fwd.request, alice.token))
        return out

    alice, bob = origin_net(snet, wrap)
    alice.route(b"hallo", snet.net.now, target=bob.agent_id)
    snet.net.pump()
    [done] = snet.net.take("alice", RequestCompleted)
    assert isinstance(done.answer, RouteReply) and done.answer.status is code, done.answer
    assert done.answer.diagnostic
    [violation] = snet.net.take("gw-b", ProtocolViolation)
    assert violation.status is code
    assert not snet.messages(RouteRequest, dest="bob")
    alice.route(b"hallo again", snet.net.now, target=bob.agent_id)
    snet.net.pump()
    assert snet.net.take("bob", RouteRequestReceived)


def test_agent_client_sends_its_token_with_every_request(snet: SecureNet) -> None:
    """AgentClient.token goes into REGISTER, REFRESH, DISCOVER, ROUTE_REQUEST and
    DEREGISTER; a gateway requiring tokens accepts all of them."""
    snet.gateway("gw-a", "a.example", tokens=True)
    alice = snet.agent("alice", "gw-a", "a.example", scope="register discover route")
    alice.register(snet.net.now, lease=60)
    snet.net.advance(50)  # REFRESH after REFRESH_FRACTION of the lease
    alice.discover(DiscoveryQuery(), snet.net.now)
    alice.route(b"me", snet.net.now, target=alice.agent_id)
    snet.net.pump()
    [req] = snet.net.take("alice", RouteRequestReceived)
    alice.reply(req, b"you")
    alice.deregister(snet.net.now)
    snet.net.pump()
    sent = [m for m in snet.messages(Message, source="alice") if m.TYPE.name != "ROUTE_REPLY"]
    assert [m.TYPE.name for m in sent] == ["REGISTER", "REFRESH", "DISCOVER",
                                           "ROUTE_REQUEST", "DEREGISTER"]
    assert all(getattr(m, "token") == alice.token for m in sent)  # noqa: B009
    assert not snet.net.take("gw-a", ProtocolViolation)
    assert len(snet.net.gateways["gw-a"].core) == 0


def test_origin_certificate_passed_once_per_session_through_a_transit_gateway(
        snet: SecureNet) -> None:
    """alice at gw-a1 calls bob at gw-b through gw-a2 (a1 - a2 - b, Section 6.10): the
    assertion names gw-a1's certificate by x5t#S256; gw-a2 holds it (gw-a1's session
    certificate), gw-b does not: gw-a2 offers it in CERTIFICATE before the request, which
    gw-b verifies against a.example's anchor at the first try (gw-a2's session takes the
    CERTIFICATE_ACK).  The next call crosses with no exchange; after gw-b forgets (its
    cache is bounded), it answers CERTIFICATE_UNKNOWN, gw-a2 sends the certificate and
    the request again, and the call still gets through."""
    b_peer = snet.peer_domain("b.example")
    snet.gateway("gw-a1", "a.example", peers=(b_peer,))
    snet.gateway("gw-a2", "a.example", peers=(b_peer,))
    snet.gateway("gw-b", "b.example", require_origin=True,
                 peers=(snet.peer_domain("a.example"),))
    alice = snet.agent("alice", "gw-a1", "a.example")
    bob = snet.agent("bob", "gw-b", "b.example", skills=("translate",))
    for agent in (alice, bob):
        agent.register(snet.net.now)
    snet.net.pump()
    for left, right in (("gw-a1", "gw-a2"), ("gw-a2", "gw-b")):
        snet.net.gateways[left].connect(right, snet.net.now)
        snet.net.pump()
    assert bob.agent_id in snet.net.gateways["gw-a1"].core
    der = snet.creds["gw-a1"].certificate.public_bytes(Encoding.DER)

    def call() -> tuple[list[RouteRequest], list[RouteReply], list[Certificate]]:
        since = len(snet.net.log)
        alice.route(b"hallo", snet.net.now, target=bob.agent_id)
        snet.net.pump()
        bob_answers_alice(snet)
        assert not snet.net.take("gw-b", ProtocolViolation)
        assert not snet.net.take("gw-a2", ProtocolViolation)
        return (snet.messages(RouteRequest, source="gw-a2", dest="gw-b", since=since),
                snet.messages(RouteReply, source="gw-b", dest="gw-a2", since=since),
                snet.messages(Certificate, source="gw-a2", dest="gw-b", since=since))

    since = len(snet.net.log)
    relayed, replies, sent = call()
    [first] = snet.messages(RouteRequest, source="gw-a1", dest="gw-a2")
    assert first.token is not None and [r.token for r in relayed] == [first.token]
    header = _jwt_part(first.token, 0)
    assert "x5c" not in header and header["x5t#S256"] == b64url(thumbprint(der))
    assert [r.status for r in replies] == [ErrorCode.SUCCESS]
    assert [c.certificate for c in sent] == [der]
    order = [type(s.msg) for s in snet.net.log[since:] if s.source == "gw-a2"
             and s.dest == "gw-b" and isinstance(s.msg, Certificate | RouteRequest)]
    assert order == [Certificate, RouteRequest]
    [ack] = snet.messages(CertificateAck, source="gw-b", dest="gw-a2")
    assert ack.status is ErrorCode.SUCCESS and ack.thumbprint == thumbprint(der)
    relayed, replies, sent = call()  # held for the session now
    assert len(relayed) == 1 and not sent
    snet.guards["gw-b"].certificates.drop("gw-a2")
    relayed, replies, sent = call()
    assert [r.status for r in replies] == [ErrorCode.CERTIFICATE_UNKNOWN, ErrorCode.SUCCESS]
    assert len(relayed) == 2 and len(sent) == 1
    assert relayed[0].transaction_id != relayed[1].transaction_id


@pytest.mark.parametrize(("certificate", "code"), [
    ("of an agent", ErrorCode.IDENTITY_MISMATCH),
    ("of an unknown domain", ErrorCode.UNTRUSTED_CERTIFICATE),
    ("not DER", ErrorCode.INVALID_TLV_VALUE),
])
def test_certificate_refused_is_not_kept(snet: SecureNet, certificate: str,
                                         code: ErrorCode) -> None:
    """A CERTIFICATE a gateway cannot use for origin assertions is answered with its code
    and not kept (cache poisoning, Section 6.10); the session stays up and a good one is
    kept under the thumbprint the receiver computes; an agent may send none."""
    federated(snet)
    der = {"of an agent": lambda: snet.creds["alice"].certificate.public_bytes(Encoding.DER),
           "of an unknown domain": lambda: Domain.create("d.example").issue(
               "gw-d", Kind.GATEWAY).certificate.public_bytes(Encoding.DER),
           "not DER": lambda: b"\x30\x03abc"}[certificate]()
    ack = snet.raw("gw-b", "gw-a", Certificate(transaction_id=77, certificate=der))
    assert isinstance(ack, CertificateAck) and ack.status is code and ack.diagnostic
    assert snet.guards["gw-a"].certificates.get("gw-b", thumbprint(der)) is None
    good = snet.creds["gw-b"].certificate.public_bytes(Encoding.DER)
    ack = snet.raw("gw-b", "gw-a", Certificate(transaction_id=78, certificate=good))
    assert isinstance(ack, CertificateAck) and ack.thumbprint == thumbprint(good)
    assert snet.guards["gw-a"].certificates.get("gw-b", thumbprint(good)) == good
    refused = snet.raw("alice", "gw-a", Certificate(transaction_id=79, certificate=good))
    assert isinstance(refused, CertificateAck)
    assert refused.status is ErrorCode.UNEXPECTED_MESSAGE


# --- right code at once (issue 13 item 5) -------------------------------------------------
def _unknown_algorithm_key(spki_der: bytes) -> bytes:
    """``spki_der`` (P-256) with its algorithm OID changed to one no library knows."""
    ec_public_key = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
    assert ec_public_key in spki_der
    return spki_der.replace(ec_public_key, bytes.fromhex("2a8648ce3d0209"))


def test_record_key_of_unknown_algorithm_is_bad_signature(snet: SecureNet) -> None:
    """A record whose public key's algorithm is unknown is BAD_SIGNATURE, in a REGISTER
    and in a peer's UPDATE (not INTERNAL_ERROR), and nothing is stored."""
    federated(snet)
    node_a = snet.net.gateways["gw-a"]
    cred = snet.domains["a.example"].issue("odd", now=T0)
    snet.creds["odd"] = cred
    record = replace(record_of(cred), public_key=_unknown_algorithm_key(
        spki(ec.generate_private_key(ec.SECP256R1()).public_key())))
    odd = sign_record(record, cred.private_key)  # type: ignore[arg-type]
    ack = snet.raw("odd", "gw-a", replace(register(odd, now=T0), transaction_id=61))
    assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.BAD_SIGNATURE
    assert "not supported" in (ack.diagnostic or "")
    far = snet.domains["b.example"].issue("far", now=T0)
    remote = sign_record(replace(record_of(far), public_key=record.public_key),
                         far.private_key)  # type: ignore[arg-type]
    gw_b = snet.net.gateways["gw-b"].core.gateway_id
    snet.net.deliver("gw-b", "gw-a", Update(
        transaction_id=62, sequence=snet.net.next_sequence("gw-b", "gw-a"),
        advertise=(Advertisement(1, (gw_b,), remote),)))
    snet.net.pump()
    [refused] = snet.net.take("gw-a", RecordRefused)
    assert refused.status is ErrorCode.BAD_SIGNATURE
    assert record.agent_id not in node_a.core and remote.record.agent_id not in node_a.core
    assert node_a.peers[gw_b] == "gw-b"


def test_gateway_messages_from_an_agent_refused_at_once(snet: SecureNet) -> None:
    """OPEN and SYNC_REQUEST are requests only a peer gateway's session answers: from an
    agent they get ERROR UNEXPECTED_MESSAGE at once (not a transport timeout), and the
    agent's association is not turned into a session."""
    alice, *_ = federated(snet)
    node_a = snet.net.gateways["gw-a"]
    for i, msg in enumerate((
            Open(transaction_id=0, gateway_id=alice.agent_id, domain="a.example",
                 hold_time=90, capabilities=int(GatewayCaps.ROUTING)),
            SyncRequest(transaction_id=0, agent_ids=((alice.agent_id,),)))):
        answer = snet.raw("alice", "gw-a", replace(msg, transaction_id=70 + i))
        assert isinstance(answer, Error) and answer.status is ErrorCode.UNEXPECTED_MESSAGE
        assert answer.offending_type == msg.TYPE
    assert "alice" not in node_a.sessions
    # from a gateway that has no session on this association: ERROR at once too
    snet.creds["gw-c"] = snet.domains["c.example"].issue("gw-c", Kind.GATEWAY, now=T0)
    answer = snet.raw("gw-c", "gw-a", SyncRequest(transaction_id=72))
    assert isinstance(answer, Error) and answer.status is ErrorCode.UNEXPECTED_MESSAGE
    assert "outside a peer session" in (answer.diagnostic or "")


def test_route_request_needs_a_token_granting_route(snet: SecureNet) -> None:
    """The guard authorizes a ROUTE_REQUEST for the ROUTE operation: a token of the
    caller's that grants DISCOVER (and REGISTER) but not ROUTE is refused."""
    alice, bob = origin_net(snet)
    cred, guard = snet.creds["alice"], snet.guards["gw-a"]
    no_route = TokenIssuer(snet.domains["a.example"].authority).issue(
        cred.certificate, cred.identity.uri, ScopeSet.parse("register discover"),
        now=T0).encode()
    req = RouteRequest(transaction_id=5, source_agent=alice.agent_id,
                       target_agent=bob.agent_id, hop_limit=8, path=(), payload=b"hi",
                       token=no_route)
    refused = guard.admit("alice", req, snet.net.now)
    assert refused is not None and refused.code is ErrorCode.INSUFFICIENT_SCOPE
    assert guard.admit("alice", replace(req, token=alice.token), snet.net.now) is None
