"""The test cases (interop/README.md, "Test cases"): who takes part, and the pass rule the
runner checks on the decoded capture (:mod:`.wire`), whatever the endpoints' exit codes
say.  A rule returns what it found wrong; an empty list is a pass."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dmscproto.codec import encode
from dmscproto.codec.messages import (
    Deregister,
    Digest,
    Discover,
    DiscoverReply,
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
    RouteReply,
    RouteRequest,
    SyncRequest,
    TraceReply,
    TraceRequest,
    Update,
)
from dmscproto.codec.registry import ANSWER_TO, VERSION, ErrorCode, MessageType, timer
from dmscproto.codec.signing import SignatureError, verify_record

from . import contract as c
from .queries import answer, answered, need, of, registered
from .vectors import draft_vectors
from .wire import Trace, WireMessage

GATEWAY, PEER = c.Role.GATEWAY.value, c.Role.PEER_GATEWAY.value
#: The skill servers register and clients look for.
SKILL = "interop-echo"


@dataclass(frozen=True)
class Check:
    """What a pass rule is given: the decoded capture, and the case's directory (for the
    decoder's output)."""

    trace: Trace
    directory: Path


Rule = Callable[[Check], list[str]]


@dataclass(frozen=True)
class Client:
    """A client agent: at which gateway it is homed, and the gateway whose agents it
    targets (None: none, or its own)."""

    home: str = GATEWAY
    target: str | None = None


@dataclass(frozen=True)
class Case:
    """One test case.  ``scenario`` is what the endpoints are told (``DMSC_TESTCASE``);
    ``loss`` cases run it through the impairment relay."""

    name: str
    description: str
    rule: Rule
    servers: tuple[str, ...] = ()
    clients: tuple[Client, ...] = (Client(),)
    peering: bool = False
    decoder: bool = False
    quick: bool = False
    loss: bool = False
    transports: tuple[str, ...] = ("quic", "dtls", "udp")
    timeout: float = 40.0
    scenario: str = ""
    #: A fresh filter per run: the relays drop the datagrams it returns True for; the
    #: case (without clients) lasts until it is ``done``.
    drop: Callable[[], UpdateBlackhole] | None = None

    @property
    def test_case(self) -> str:
        return self.scenario or self.name

    @property
    def kind(self) -> str:
        """Which pair of roles the matrix columns are: agent x gateway, gateway x
        peer-gateway, or the decoder alone."""
        return "codec" if self.decoder else "peering" if self.peering else "agent"


def _skill_of(msg: Register) -> bool:
    return any(s.id == SKILL for s in msg.record.record.skills)


# --- rules -------------------------------------------------------------------------------
def first_registration(t: Trace) -> tuple[WireMessage, Register, RegisterAck] | None:
    """The first REGISTER answered SUCCESS: its wire message, itself and its answer."""
    for req, ack in answered(t, Register):
        if isinstance(req.msg, Register) and isinstance(ack.msg, RegisterAck):
            return req, req.msg, ack.msg
    return None


def rule_registration(ck: Check) -> list[str]:
    t = ck.trace
    first = first_registration(t)
    if first is None:
        return need((), "REGISTER answered SUCCESS", t, Register)
    req, reg, ack_msg = first
    ack = answer(t, req)
    assert ack is not None
    aid = reg.record.record.agent_id
    fails = [] if ack_msg.agent_id == aid else ["REGISTER_ACK names another AGENT_ID"]
    refreshes = [p for p in answered(t, Refresh, where=lambda m: getattr(m, "agent_id", 0) == aid)
                 if p[0].time > ack.time]
    fails += need(refreshes, "REFRESH of the registered agent answered SUCCESS", t, Refresh)
    gone = [p for p in answered(t, Deregister, where=lambda m: getattr(m, "agent_id", 0) == aid)
            if refreshes and p[0].time > refreshes[0][1].time]
    return fails + need(gone, "DEREGISTER after the REFRESH answered SUCCESS", t, Deregister)


def rule_lease_expiry(ck: Check) -> list[str]:
    t = ck.trace
    first = first_registration(t)
    if first is None:
        return need((), "REGISTER answered SUCCESS", t, Register)
    req, reg, ack = first
    aid, lease = reg.record.record.agent_id, ack.lease or 0
    fails = []
    if not 0 < lease <= 2 * c.SHORT_LEASE:
        fails.append(f"lease granted {lease} s for {reg.lease} s asked (the contract: "
                     f"grant {c.SHORT_LEASE} s)")
    if of(t, Refresh, up=True):
        fails.append("the client refreshed: the case cannot show expiry")
    after = [(d, a) for d, a in answered(t, Discover) if d.time >= req.time + lease
             and isinstance(a.msg, DiscoverReply)
             and not any(r.record.record.agent_id == aid for r in a.msg.results)]
    return fails + need(after, "a DISCOVER after the lease, answered without the expired "
                        "record", t, Discover)


def _found_servers(t: Trace, listener: str, servers: set[bytes]) -> list[object]:
    return [a for _, a in answered(t, Discover, listener=listener)
            if isinstance(a.msg, DiscoverReply)
            and any(r.record.record.agent_id in servers for r in a.msg.results)]


def rule_discovery(ck: Check) -> list[str]:
    servers = registered(ck.trace, GATEWAY)
    return (need(servers, "the server's REGISTER answered SUCCESS", ck.trace, Register)
            + need(_found_servers(ck.trace, GATEWAY, servers),
                   "DISCOVER_REPLY SUCCESS listing the server", ck.trace, Discover))


def rule_discovery_federated(ck: Check) -> list[str]:
    t = ck.trace
    remote = registered(t, PEER)
    learned = [m for m in of(t, Update) if isinstance(m.msg, Update)
               and any(a.record.record.agent_id in remote for a in m.msg.advertise)]
    return (need(remote, "the server's REGISTER at the peer gateway", t, Register)
            + need(learned, "UPDATE advertising the server between the gateways", t, Update)
            + need(_found_servers(t, GATEWAY, remote), "DISCOVER_REPLY at the gateway listing "
                   "the peer gateway's server", t, Discover))


def _calls(t: Trace, listener: str, targets: set[bytes], by_query: bool
           ) -> list[tuple[WireMessage, WireMessage]]:
    def ok(req: Message, ans: Message | None) -> bool:
        assert isinstance(req, RouteRequest)
        right = req.query is not None if by_query else req.target_agent in targets
        return right and isinstance(ans, RouteReply) and ans.target_agent in targets \
            and ans.payload == c.REPLY_PREFIX + req.payload
    return [(r, a) for r, a in answered(t, RouteRequest, listener=listener)
            if r.msg is not None and ok(r.msg, a.msg)]


def _routing(t: Trace, client_at: str, server_at: str) -> list[str]:
    servers = registered(t, server_at)
    delivered = [m for m in of(t, RouteRequest, up=False, listener=server_at)
                 if isinstance(m.msg, RouteRequest) and m.msg.target_agent in servers]
    where = f"from {client_at}'s client to {server_at}'s server"
    return (need(servers, f"{server_at}'s server registered", t, Register)
            + need(_calls(t, client_at, servers, False),
                   f"ROUTE_REQUEST by Agent ID {where} answered SUCCESS with the server's "
                   "payload", t, RouteRequest)
            + need(_calls(t, client_at, servers, True),
                   f"ROUTE_REQUEST by query {where} answered SUCCESS", t, RouteRequest)
            + need(delivered, f"ROUTE_REQUEST delivered by {server_at} to its server", t,
                   RouteRequest))


def rule_routing(ck: Check) -> list[str]:
    return _routing(ck.trace, GATEWAY, GATEWAY)


def rule_routing_federated(ck: Check) -> list[str]:
    t = ck.trace
    crossing = [m for m in of(t, RouteRequest) if m.listener == GATEWAY
                and isinstance(m.msg, RouteRequest) and m.msg.path]
    traced = [(r, a) for r, a in answered(t, TraceRequest) if isinstance(a.msg, TraceReply)
              and len({h.domain for h in a.msg.hops}) >= 2]
    return (_routing(t, GATEWAY, PEER) + _routing(t, PEER, GATEWAY)
            + need(crossing, "ROUTE_REQUEST between the gateways with a PATH_VECTOR", t,
                   RouteRequest)
            + need(traced, "TRACE_REPLY SUCCESS with HOPs of both domains", t, TraceRequest))


def rule_echo_trace(ck: Check) -> list[str]:
    t = ck.trace
    echoes = [(r, a) for r in of(t, EchoRequest, up=True) for a in [answer(t, r)]
              if a is not None and isinstance(a.msg, EchoReply) and isinstance(r.msg, EchoRequest)
              and a.msg.sequence == r.msg.sequence and a.msg.payload == r.msg.payload]
    traces = [(r, a) for r, a in answered(t, TraceRequest)
              if isinstance(a.msg, TraceReply) and a.msg.hops]
    return (need(echoes, "ECHO_REPLY with the request's SEQUENCE and PAYLOAD", t, EchoRequest)
            + need(traces, "TRACE_REPLY SUCCESS with at least one HOP", t, TraceRequest))


def rule_malformed(ck: Check) -> list[str]:
    """Every malformed request the agent sent is answered with ERROR carrying the code
    this project's codec finds; at least three different codes are tried."""
    t = ck.trace
    requests = {int(r) for r in ANSWER_TO}
    bad = {(m.stream, m.data): m for m in t.messages if m.up and m.error is not None
           and len(m.data) > 1 and m.data[1] in requests}  # retransmissions once
    fails, codes = [], set()
    for req in bad.values():
        assert req.error is not None
        code = req.error.code
        replies = [m for m in t.messages if m.stream == req.stream and not m.up
                   and m.time >= req.time and isinstance(m.msg, Error)
                   and m.msg.transaction_id == _txid(req.data)]
        got = replies[0].msg.status if replies and isinstance(replies[0].msg, Error) else None
        codes.add(code)
        if got is not code:
            fails.append(f"{req.data[:16].hex()}...: {code.name} expected, "
                         f"{got.name if got else 'no ERROR'} answered")
    if len(codes) < 3:
        fails.append(f"only {len(codes)} distinct malformed PDU codes sent (3 needed)")
    return fails


def _txid(data: bytes) -> int:
    return int.from_bytes(data[8:16], "big") if len(data) >= 16 else 0


def _refused(code: ErrorCode, what: str, holds: Callable[[WireMessage, Register], bool]
             ) -> Rule:
    """A REGISTER of the kind ``holds`` checks for is answered with ``code``."""
    def rule(ck: Check) -> list[str]:
        hits = [r for r, _ in answered(ck.trace, Register, code)
                if isinstance(r.msg, Register) and holds(r, r.msg)]
        return need(hits, f"REGISTER {what} answered REGISTER_ACK {code.name}", ck.trace,
                    Register)
    rule.__name__ = f"rule_{code.name.lower()}"
    return rule


def _forged(_wire: WireMessage, msg: Register) -> bool:
    try:
        verify_record(msg.record)
    except SignatureError:
        return True
    return False


def rule_replay(ck: Check) -> list[str]:
    """A REFRESH repeating the NONCE of one accepted before is answered REPLAY."""
    t = ck.trace
    accepted = {r.msg.nonce for r, _ in answered(t, Refresh) if isinstance(r.msg, Refresh)}
    again = [r for r, _ in answered(t, Refresh, ErrorCode.REPLAY)
             if isinstance(r.msg, Refresh) and r.msg.nonce in accepted]
    return (need(registered(t, GATEWAY), "REGISTER answered SUCCESS", t, Register)
            + need(again, "a REFRESH repeating the NONCE of an accepted one answered REPLAY",
                   t, Refresh))


def rule_peering(ck: Check) -> list[str]:
    t = ck.trace
    fails: list[str] = []
    for cls in (Open, Keepalive, Digest):
        for up in (True, False):
            side = "from the peer gateway" if up else "from the gateway"
            fails += need(of(t, cls, up=up, listener=GATEWAY), f"{cls.TYPE.name} {side}", t,
                          cls)
    remote = registered(t, PEER)
    fails += need([m for m in of(t, Update, up=True) if isinstance(m.msg, Update) and any(
        a.record.record.agent_id in remote for a in m.msg.advertise)],
        "UPDATE from the peer gateway advertising its server", t, Update)
    return fails + need([m for m in of(t, Notify, up=True) if isinstance(m.msg, Notify)
                         and m.msg.status is ErrorCode.CEASE],
                        "NOTIFY CEASE from the peer gateway when it stops", t, Notify)


class UpdateBlackhole:
    """Drops every UPDATE until a SYNC_REQUEST has passed (lab UDP, where the runner
    reads the datagrams): only anti-entropy (Section 6.4) can then bring the record.
    ``done`` once an UPDATE has followed the SYNC_REQUEST."""

    def __init__(self) -> None:
        self.pulled = self.done = False

    def __call__(self, data: bytes) -> bool:
        kind = data[1] if len(data) > 1 and data[0] == VERSION else None
        self.pulled = self.pulled or kind == MessageType.SYNC_REQUEST
        self.done = self.done or (self.pulled and kind == MessageType.UPDATE)
        return kind == MessageType.UPDATE and not self.pulled


def rule_sync_repair(ck: Check) -> list[str]:
    t = ck.trace
    remote = registered(t, PEER)
    pulled = [(r, a) for r in of(t, SyncRequest, listener=GATEWAY)
              for a in [answer(t, r)] if a is not None and isinstance(a.msg, Update)
              and any(x.record.record.agent_id in remote for x in a.msg.advertise)]
    return (need(remote, "the server's REGISTER at the peer gateway", t, Register)
            + need(pulled, "SYNC_REQUEST between the gateways answered by an UPDATE "
                   "advertising the server", t, SyncRequest))


def wellformed(trace: Trace, *, malformed_requests: bool = False) -> list[str]:
    """Every case's first rule: each PDU on the wire decodes and re-encodes octet for
    octet (Section 4), except the malformed requests of the malformed case."""
    fails = []
    for m in trace.messages:
        if m.error is not None and not (malformed_requests and m.up):
            fails.append(f"{'to' if m.up else 'from'} {m.listener}: a PDU that does not "
                         f"decode: {m.error.code.name} ({m.data[:24].hex()}...)")
        elif m.msg is not None and encode(m.msg) != m.data:
            fails.append(f"{'to' if m.up else 'from'} {m.listener}: {m.type_name} does not "
                         f"re-encode octet for octet")
    return fails[:5] + [f"... and {len(fails) - 5} more"] * (len(fails) > 5)


def rule_codec(ck: Check) -> list[str]:
    """The decoder's output (one line per vector) agrees with every vector: valid ones
    re-encoded octet for octet, invalid ones refused with their code."""
    path = ck.directory / "decoder" / "output.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        got = {d["name"]: d for d in map(json.loads, filter(None, lines))}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"decoder output {path.name} unreadable: {exc}"]
    fails = []
    for name, expect, pdu in draft_vectors():
        out = got.get(name)
        if out is None:
            fails.append(f"{name}: no result")
        elif out.get("result") != expect:
            fails.append(f"{name}: {out.get('result')} (expected {expect})")
        elif expect == "valid" and out.get("hex") != pdu.hex():
            fails.append(f"{name}: re-encoded differently: {out.get('hex')}")
    return fails


# --- the list ----------------------------------------------------------------------------------
def _stale(wire: WireMessage, msg: Register) -> bool:
    """Whether the REGISTER's TIMESTAMP was older than FRESHNESS_WINDOW when the capture
    saw it."""
    return wire.time * 1000 - msg.timestamp > timer("FRESHNESS_WINDOW") * 1000


CASES: tuple[Case, ...] = (
    Case("codec", "decode and re-encode every draft vector; refuse every invalid one with "
         "its code (decoder role)", rule_codec, clients=(), decoder=True, quick=True,
         timeout=20),
    Case("registration", f"REGISTER, REFRESH (lease {c.SHORT_LEASE} s), DEREGISTER",
         rule_registration, quick=True, loss=True),
    Case("lease-expiry", f"REGISTER with a {c.SHORT_LEASE} s lease, never refreshed: gone from "
         "DISCOVER after it", rule_lease_expiry),
    Case("discovery", "a server registers; the client DISCOVERs it by skill (LOCAL)",
         rule_discovery, servers=(GATEWAY,)),
    Case("routing", "ROUTE_REQUEST to a local server by Agent ID and by query",
         rule_routing, servers=(GATEWAY,), quick=True, loss=True),
    Case("echo-trace", "ECHO to the gateway; TRACE to a registered server",
         rule_echo_trace, servers=(GATEWAY,), quick=True),
    Case("malformed", "malformed requests are answered with ERROR and the decoding "
         "error's code", rule_malformed),
    Case("forged-signature", "a REGISTER whose record signature does not verify: "
         "BAD_SIGNATURE", _refused(ErrorCode.BAD_SIGNATURE, "with a forged signature",
                                   _forged), quick=True),
    Case("identity-mismatch", "a well-signed record of another key than the certificate's: "
         "IDENTITY_MISMATCH", _refused(ErrorCode.IDENTITY_MISMATCH, "of another key",
                                       lambda w, m: not _forged(w, m)),
         transports=("quic", "dtls")),
    Case("replay", "REGISTER, REFRESH, the same REFRESH (NONCE, TIMESTAMP) again: REPLAY",
         rule_replay),
    Case("stale-timestamp", "a REGISTER whose TIMESTAMP is older than FRESHNESS_WINDOW: "
         "STALE_TIMESTAMP", _refused(ErrorCode.STALE_TIMESTAMP, "with a stale TIMESTAMP",
                                     _stale)),
    Case("peering", "the peer gateway dials: OPEN, KEEPALIVE and DIGEST both ways, UPDATE "
         "for its server, NOTIFY CEASE when it stops", rule_peering, servers=(PEER,),
         clients=(), peering=True, quick=True, loss=True),
    Case("discovery-federated", "the gateway's client DISCOVERs the peer gateway's server "
         "(FEDERATED)", rule_discovery_federated, servers=(PEER,),
         clients=(Client(GATEWAY, PEER),), peering=True, loss=True, timeout=60),
    Case("sync-repair", "the relay drops every UPDATE until a SYNC_REQUEST: the next DIGEST "
         "shows the difference and SYNC_REQUEST pulls the record (lab UDP)", rule_sync_repair,
         servers=(PEER,), clients=(), peering=True, transports=("udp",), timeout=90,
         scenario="peering", drop=UpdateBlackhole),
    Case("routing-federated", "each gateway's client calls the other gateway's server by "
         "Agent ID and by query, then TRACEs it", rule_routing_federated, servers=(GATEWAY, PEER),
         clients=(Client(GATEWAY, PEER), Client(PEER, GATEWAY)), peering=True, loss=True,
         timeout=60),
)


def all_cases() -> list[Case]:
    """Every case, each ``loss`` one followed by its twin through the impairment relay
    (``<name>-loss``: 10% loss, 5% duplicated, 5% reordered)."""
    out = []
    for case in CASES:
        out.append(case)
        if case.loss:
            out.append(replace(case, name=f"{case.name}-loss", scenario=case.test_case,
                               description=f"{case.description}; through the impairment "
                                           "relay", quick=False, timeout=case.timeout * 2))
    return out
