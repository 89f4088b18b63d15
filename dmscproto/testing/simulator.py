"""A federation simulator: hundreds of gateways in one process under a fake clock
(draft-dmsc-protocol-00, Sections 5.1 and 6).

Each gateway is a real :class:`~dmscproto.gateway.node.GatewayNode` over a real
:class:`~dmscproto.gateway.core.GatewayCore` and SQLite file, driven only through its
driver interface (``receive``, ``messages_to_send``, ``next_event``, ``get_timer``,
``handle_timer``, ``connect``, ``disconnect``).  Every PDU is encoded and decoded by
:mod:`dmscproto.codec`.  Time is simulated: an event queue holds deliveries, node
timers and dials, so an idle gateway costs nothing, and only link latency (per link,
optionally with jitter) separates events; processing takes no simulated time.

What the runtime does around the node is modelled here: a link is a configured peer
that one side (``a``) dials, a connection carries one session and is closed when its
session closes (its other end is told after the link's latency, unless the link is cut
or that end is dead), and the dialling side redials with the runtime's backoff
(:class:`dmscproto.runtime.gateway.Redial`).  A connection whose session is not
ESTABLISHED within a hold time is abandoned and redialled.  Links deliver in order,
as a QUIC stream or DTLS with its retransmissions does; ``jitter`` reorders them.
Agents are not simulated: REGISTER and DEREGISTER PDUs are injected at their home
gateway from a handle of their own, and what gateways send back to them is counted and
dropped.

Measured on the way: every PDU by type per link (:attr:`Simulation.pdus`); duplicates,
ADVERTISEs of a (version, path) the receiver already holds from that peer, or of an
older version (:attr:`Simulation.duplicates`); for each registration, when every
gateway its export policy lets it reach first held it, and for each deregistration
when the last holder dropped it (:attr:`Simulation.converged`); the last table change.
:meth:`Simulation.check` compares every table with what the topology and the export
policy imply: records missing, and ghosts (records withdrawn but still held).

Memory: records are decoded once per PDU but the signed records that gateways keep are
shared (one object per distinct signed octets), and each distinct signature is checked
once (a gateway that verified it would come to the same answer).  Each gateway's SQLite
file holds its own copy, as on a real gateway: put ``directory`` on a tmpfs.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..codec import decode, encode
from ..codec.cose import SignedRecord
from ..codec.messages import Deregister, Discover, DiscoverReply, Message, Register, Update
from ..codec.registry import MessageType, Scope, timer
from ..codec.signing import entity_id
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..codec.wire import Advertisement
from ..gateway.core import GatewayCore
from ..gateway.node import GatewayNode
from ..gateway.store import RegistryStore
from ..protocol.events import (
    AgentRegistered,
    AgentRemoved,
    SessionClosed,
    SessionEstablished,
    TableChanged,
)
from ..protocol.machine import Handle, Refusal
from ..protocol.peering import PeerState
from ..protocol.registration import verify_signature
from ..protocol.summary import Replication
from ..runtime.gateway import Redial
from .harness import T0, numbered_key

#: Whether a gateway of the first domain exports a record to a peer of the second.
ExportRule = Callable[[str, str, CapabilityRecord], bool]
Edge = tuple[str, str]

#: Key numbers of simulated gateways (records use their own numbers, below this).
_GATEWAY_KEYS = 10_000_000


# --- topologies ---------------------------------------------------------------------------
def chain(names: Sequence[str]) -> list[Edge]:
    return list(itertools.pairwise(names))


def ring(names: Sequence[str]) -> list[Edge]:
    return [*chain(names), (names[-1], names[0])] if len(names) > 2 else chain(names)


def full_mesh(names: Sequence[str]) -> list[Edge]:
    return list(itertools.combinations(names, 2))


def random_graph(names: Sequence[str], degree: float, rng: random.Random) -> list[Edge]:
    """A connected random graph: a random spanning tree, then random extra edges until
    the mean degree is ``degree``."""
    order = list(names)
    rng.shuffle(order)
    edges = {(rng.choice(order[:i]), order[i]) for i in range(1, len(order))}
    seen = {frozenset(e) for e in edges}
    want = min(int(degree * len(order) / 2), len(order) * (len(order) - 1) // 2)
    while len(edges) < want:
        a, b = rng.sample(order, 2)
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            edges.add((a, b))
    return sorted(edges)


# --- the simulation -----------------------------------------------------------------------
@dataclass(eq=False)
class _Gateway:
    name: str
    domain: str
    gateway_id: bytes
    key_n: int
    node: GatewayNode | None = None
    incarnation: int = 0
    timer_at: float | None = None


@dataclass(eq=False)
class _Link:
    a: str                      # dials
    b: str                      # accepts
    latency: float
    redial: Redial
    cut: bool = False
    conn: _Conn | None = None
    dial_pending: bool = False


@dataclass(eq=False)
class _Conn:
    """One connection of a link: the handle each end knows it by."""

    link: _Link
    n: int
    incarnations: tuple[int, int]   # of a and b when dialled
    open: bool = True

    def handle_at(self, name: str) -> str:
        """The handle under which gateway ``name`` knows this connection."""
        other = self.link.b if name == self.link.a else self.link.a
        return f"{other}~{self.n}"


@dataclass
class Check:
    """Tables against what the topology and export policy imply: per gateway, the
    agent ids missing, ghosts (withdrawn, still held) and strays (held, not expected)."""

    missing: dict[str, set[bytes]] = field(default_factory=dict)
    ghosts: dict[str, set[bytes]] = field(default_factory=dict)
    strays: dict[str, set[bytes]] = field(default_factory=dict)

    @property
    def ghost_count(self) -> int:
        return sum(map(len, self.ghosts.values()))

    @property
    def ok(self) -> bool:
        return not (self.missing or self.ghosts or self.strays)


@dataclass
class _Watch:
    """A registration (waiting to be held everywhere expected) or a deregistration
    (waiting to be dropped everywhere)."""

    start: float
    version: int
    waiting: set[str]


class Simulation:
    """Gateways, links and agents' registrations under a fake clock (module doc)."""

    def __init__(self, directory: Path, *, seed: int = 0, latency: float = 0.005,
                 jitter: float = 0.0, export: ExportRule | None = None,
                 summaries: bool = False, **node_options: Any) -> None:
        self.directory = directory
        #: Gateways of different domains exchange capability summaries, not records
        #: (Section 6.9): a domain's records stay within its own gateways.
        self.summaries = summaries
        self._adjacency: dict[str, list[str]] | None = None
        self.rng = random.Random(seed)
        self.seed = seed
        self.latency = latency
        self.jitter = jitter
        self.export = export
        self.node_options = node_options
        self.now = T0
        self.gateways: dict[str, _Gateway] = {}
        self.links: dict[frozenset[str], _Link] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._conns: dict[str, _Conn] = {}   # handle (as the other end knows it) -> conn
        self._conn_n = itertools.count(1)
        self._txid = itertools.count(1)
        self._shared: dict[tuple[bytes, bytes, bytes], tuple[SignedRecord, Refusal | None]] \
            = {}
        #: agent id -> (home gateway, signed record) of every live registration.
        self.registered: dict[bytes, tuple[str, SignedRecord]] = {}
        #: agent ids deregistered and not registered again.
        self.withdrawn: set[bytes] = set()
        #: PDUs sent, by (source, destination, message type); agents are ``"agents"``.
        self.pdus: Counter[tuple[str, str, MessageType]] = Counter()
        #: When a PDU of each type was last delivered between gateways.
        self.delivered_at: dict[MessageType, float] = {}
        #: DISCOVER_REPLYs to :meth:`discover`, by transaction id.
        self.answers: dict[int, DiscoverReply] = {}
        #: PDUs lost on cut links or closed connections, by message type.
        self.lost: Counter[MessageType] = Counter()
        self.duplicates = 0
        self.last_change = self.now
        self._reg_watch: dict[bytes, _Watch] = {}
        self._dereg_watch: dict[bytes, _Watch] = {}
        #: Seconds each watched (de)registration took: ``("register", s)`` or
        #: ``("deregister", s)``, in completion order.
        self.converged: list[tuple[str, float]] = []

    # --- building -----------------------------------------------------------------------------
    def add_gateway(self, name: str, domain: str) -> None:
        key_n = _GATEWAY_KEYS + len(self.gateways)
        gid = entity_id(numbered_key(key_n).public_key())
        self.gateways[name] = _Gateway(name, domain, gid, key_n)
        self._start_node(self.gateways[name])

    def _start_node(self, gw: _Gateway) -> None:
        core = GatewayCore(gw.gateway_id, gw.domain,
                           RegistryStore(self.directory / f"{gw.name}.db"))
        rule = self.export
        own = gw.domain

        def export_for(peer_domain: str) -> Callable[[CapabilityRecord], bool] | None:
            if rule is None:
                return None
            return lambda rec: rule(own, peer_domain, rec)

        mode = Replication.SUMMARY if self.summaries else Replication.FULL
        gw.node = GatewayNode(core, name=gw.name, verifier=self._verify,
                              export_for=export_for, replication=lambda _domain: mode,
                              rng=random.Random(f"{self.seed}/{gw.name}/{gw.incarnation}"),
                              **self.node_options)
        gw.timer_at = None
        self._drain(gw)

    def add_link(self, a: str, b: str, latency: float | None = None) -> None:
        """Configure a peering: ``a`` dials ``b`` (now, and again whenever it drops)."""
        link = _Link(a, b, self.latency if latency is None else latency,
                     Redial(random.Random(f"{self.seed}/{a}/{b}")))
        self.links[frozenset((a, b))] = link
        self._adjacency = None
        self._schedule(self.now, lambda: self._dial(link))

    def build(self, domains: dict[str, str], edges: Iterable[Edge]) -> None:
        """Gateways (name -> domain) and links."""
        for name, domain in domains.items():
            self.add_gateway(name, domain)
        for a, b in edges:
            self.add_link(a, b)

    def close(self) -> None:
        for gw in self.gateways.values():
            if gw.node is not None:
                gw.node.core.store.close()
                gw.node = None

    # --- the event queue ----------------------------------------------------------------------
    def _schedule(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def run_until(self, t: float) -> None:
        """Run every event due until ``t``; the clock is then ``t``."""
        while self._queue and self._queue[0][0] <= t:
            when, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            action()
        self.now = max(self.now, t)

    def run(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def settle(self, limit: float, *, quiet: float = 1.0) -> bool:
        """Run until every link that can be up is ESTABLISHED, every watched
        (de)registration has converged and no table changed for ``quiet`` seconds, or
        for ``limit`` seconds; return whether it converged."""
        end = self.now + limit
        while self.now < end:
            self.run_until(min(end, self.now + quiet / 2))
            if self.now - self.last_change >= quiet and self._settled():
                return True
        return self._settled()

    def _settled(self) -> bool:
        if self._reg_watch or self._dereg_watch:
            return False
        return all(self._up(link) for link in self.links.values()
                   if not link.cut and self._alive(link.a) and self._alive(link.b))

    def _up(self, link: _Link) -> bool:
        return link.conn is not None and self._established(link.conn, link.a)

    def _arm(self, gw: _Gateway) -> None:
        """Schedule the node's next timer (an entry already due no later is kept: an
        early handle_timer is harmless)."""
        assert gw.node is not None
        due = gw.node.get_timer()
        if due is None:
            return
        due = max(due, self.now)
        if gw.timer_at is not None and self.now <= gw.timer_at <= due:
            return
        gw.timer_at = due
        inc = gw.incarnation
        self._schedule(due, lambda: self._fire(gw, inc, due))

    def _fire(self, gw: _Gateway, inc: int, due: float) -> None:
        if gw.node is None or gw.incarnation != inc or gw.timer_at != due:
            return
        gw.timer_at = None
        gw.node.handle_timer(self.now)
        self._drain(gw)

    # --- connections --------------------------------------------------------------------------
    def _alive(self, name: str) -> bool:
        return self.gateways[name].node is not None

    def _dial(self, link: _Link) -> None:
        link.dial_pending = False
        if not self._alive(link.a) or (link.conn is not None and link.conn.open
                                       and self._current(link.conn, link.a)):
            return
        if link.cut or not self._alive(link.b):
            self._redial(link)
            return
        a, b = self.gateways[link.a], self.gateways[link.b]
        conn = _Conn(link, next(self._conn_n), (a.incarnation, b.incarnation))
        link.conn = conn
        self._conns[conn.handle_at(link.a)] = conn
        self._conns[conn.handle_at(link.b)] = conn
        assert a.node is not None
        a.node.connect(conn.handle_at(link.a), self.now)
        self._drain(a)
        hold = float(self.node_options.get("hold_time", timer("HOLD_TIME")))
        self._schedule(self.now + hold, lambda: self._check_open(conn))

    def _redial(self, link: _Link) -> None:
        if link.dial_pending or not self._alive(link.a):
            return
        link.dial_pending = True
        self._schedule(self.now + link.redial.next(), lambda: self._dial(link))

    def _check_open(self, conn: _Conn) -> None:
        """A connection whose session never got ESTABLISHED is abandoned."""
        if not conn.open:
            return
        if not all(self._established(conn, n) for n in (conn.link.a, conn.link.b)):
            for name in (conn.link.a, conn.link.b):
                self._close_end(conn, name)
            self._closed(conn)

    def _established(self, conn: _Conn, name: str) -> bool:
        """Whether ``name``'s session on ``conn`` is ESTABLISHED."""
        gw = self.gateways[name]
        if gw.node is None or not self._current(conn, name):
            return False
        s = gw.node.sessions.get(conn.handle_at(name))
        return s is not None and s.state is PeerState.ESTABLISHED

    def _current(self, conn: _Conn, name: str) -> bool:
        """Whether ``name``'s end of ``conn`` is its running incarnation."""
        i = 0 if name == conn.link.a else 1
        return self.gateways[name].incarnation == conn.incarnations[i]

    def _close_end(self, conn: _Conn, name: str) -> None:
        """The connection is gone at ``name``'s end: its session (if any) closes."""
        gw = self.gateways[name]
        handle = conn.handle_at(name)
        if gw.node is not None and self._current(conn, name) and handle in gw.node.sessions:
            gw.node.disconnect(handle, self.now)
            self._drain(gw)

    def _closed(self, conn: _Conn) -> None:
        """Close ``conn`` (its session closed at one end): the other end learns it after
        the latency unless the link is cut; the dialler redials."""
        if not conn.open:
            return
        conn.open = False
        link = conn.link
        for name in (link.a, link.b):
            if not link.cut:
                self._schedule(self.now + link.latency,
                               lambda name=name: self._close_end(conn, name))  # type: ignore[misc]
        if link.conn is conn:
            link.conn = None
            self._redial(link)

    # --- traffic ------------------------------------------------------------------------------
    def _drain(self, gw: _Gateway) -> None:
        """Send what the node queued, react to its events, re-arm its timer."""
        node = gw.node
        assert node is not None
        while node.has_output():
            for dest, msg in node.messages_to_send():
                self._send(gw, dest, msg)
            while (ev := node.next_event()) is not None:
                self._event(gw, ev)
        self._arm(gw)

    def _send(self, gw: _Gateway, dest: Handle, msg: Message) -> None:
        data = encode(msg)
        conn = self._conns.get(dest) if isinstance(dest, str) else None
        if conn is None:  # an agent: counted, dropped (DISCOVER answers kept)
            self.pdus[(gw.name, "agents", msg.TYPE)] += 1
            if isinstance(msg, DiscoverReply):
                self.answers[msg.transaction_id] = msg
            return
        link = conn.link
        peer = link.b if gw.name == link.a else link.a
        self.pdus[(gw.name, peer, msg.TYPE)] += 1
        if not conn.open or link.cut:
            self.lost[msg.TYPE] += 1
            return
        delay = link.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)
        source = conn.handle_at(peer)
        self._schedule(self.now + delay, lambda: self._deliver(conn, peer, source, data))

    def _deliver(self, conn: _Conn, name: str, source: str, data: bytes) -> None:
        gw = self.gateways[name]
        msg = decode(data)
        if not conn.open or conn.link.cut or gw.node is None or not self._current(conn, name):
            self.lost[msg.TYPE] += 1
            return
        msg = self._share(msg)
        self.delivered_at[msg.TYPE] = self.now
        if isinstance(msg, Update):
            self._count_duplicates(gw, conn, msg)
        gw.node.receive(source, msg, self.now)
        self._drain(gw)

    def _count_duplicates(self, gw: _Gateway, conn: _Conn, msg: Update) -> None:
        assert gw.node is not None
        sender = conn.link.a if gw.name == conn.link.b else conn.link.b
        sender_id = self.gateways[sender].gateway_id
        routes = gw.node.core.routes
        for ad in msg.advertise:
            held = routes.route_via(ad.record.record.agent_id, sender_id)
            if held is not None and (held.version > ad.version or
                                     (held.version == ad.version and held.path == ad.path)):
                self.duplicates += 1

    def _share(self, msg: Message) -> Message:
        """The message with every advertised record replaced by the shared copy of the
        same signed octets."""
        changes: dict[str, Any] = {}
        for f in fields(msg):
            value = getattr(msg, f.name)
            if isinstance(value, tuple) and value and isinstance(value[0], Advertisement):
                changes[f.name] = tuple(replace(ad, record=self._shared_record(ad.record))
                                        for ad in value)
        return replace(msg, **changes) if changes else msg

    def _shared_entry(self, signed: SignedRecord) -> tuple[SignedRecord, Refusal | None]:
        """The shared copy of these signed octets and their signature check."""
        key = (signed.protected, signed.payload, signed.signature)
        held = self._shared.get(key)
        if held is None:
            held = self._shared[key] = (signed, verify_signature(None, signed, self.now))
        return held

    def _shared_record(self, signed: SignedRecord) -> SignedRecord:
        return self._shared_entry(signed)[0]

    def _verify(self, _source: Handle, signed: SignedRecord, _now: float) -> Refusal | None:
        """The record check of every node: the COSE signature, once per signed octets."""
        return self._shared_entry(signed)[1]

    # --- events -------------------------------------------------------------------------------
    def _event(self, gw: _Gateway, ev: object) -> None:
        if isinstance(ev, TableChanged):
            self.last_change = self.now
            self._held(gw, ev.advertised)
            self._dropped(gw, [w.agent_id for w in (*ev.withdrawn, *ev.purged)])
        elif isinstance(ev, AgentRegistered):
            self.last_change = self.now
            self._held(gw, [ev.agent_id])
        elif isinstance(ev, AgentRemoved):
            self.last_change = self.now
            self._dropped(gw, [ev.withdrawn.agent_id])
        elif isinstance(ev, SessionEstablished):
            conn = self._conns.get(str(ev.handle))
            if conn is not None:
                conn.link.redial.reset()
        elif isinstance(ev, SessionClosed):  # the routes through the peer are gone
            self._dropped(gw, [aid for aid, w in self._dereg_watch.items()
                               if gw.name in w.waiting and gw.node is not None
                               and aid not in gw.node.core])
            conn = self._conns.get(str(ev.handle))
            if conn is not None:
                self._closed(conn)

    def _held(self, gw: _Gateway, agent_ids: Iterable[bytes]) -> None:
        assert gw.node is not None
        for aid in agent_ids:
            w = self._reg_watch.get(aid)
            if w is None or gw.name not in w.waiting:
                continue
            got = gw.node.core.get(aid)
            if got is not None and got.version >= w.version:
                w.waiting.discard(gw.name)
                if not w.waiting:
                    del self._reg_watch[aid]
                    self.converged.append(("register", self.now - w.start))

    def _dropped(self, gw: _Gateway, agent_ids: Iterable[bytes]) -> None:
        for aid in agent_ids:
            w = self._dereg_watch.get(aid)
            if w is not None and gw.name in w.waiting:
                w.waiting.discard(gw.name)
                if not w.waiting:
                    del self._dereg_watch[aid]
                    self.converged.append(("deregister", self.now - w.start))

    # --- agents -------------------------------------------------------------------------------
    def register(self, gateway: str, signed: SignedRecord,
                 lease: int = int(timer("MAX_LEASE"))) -> None:
        """An agent registers ``signed`` at ``gateway`` (a REGISTER PDU from its handle)."""
        aid = signed.record.agent_id
        gw = self.gateways[gateway]
        assert gw.node is not None
        self.registered[aid] = (gateway, signed)
        self.withdrawn.discard(aid)
        self._dereg_watch.pop(aid, None)
        self._watch(aid, self.expected(aid))
        self._from_agent(gw, aid, Register(
            transaction_id=next(self._txid), record=signed, lease=lease,
            nonce=self.rng.randbytes(16), timestamp=int(self.now * 1000)))

    def discover(self, gateway: str, query: DiscoveryQuery, *,
                 scope: Scope = Scope.FEDERATED, max_results: int = 10) -> int:
        """An agent of ``gateway`` sends DISCOVER; its answer will be in
        :attr:`answers` under the returned transaction id."""
        txid = next(self._txid)
        self._from_agent(self.gateways[gateway], bytes(16), Discover(
            transaction_id=txid, query=query, scope=scope, max_results=max_results))
        return txid

    def _watch(self, agent_id: bytes, where: set[str]) -> None:
        """Time the registration until every gateway in ``where`` holds it."""
        version = self.registered[agent_id][1].record.record_version
        self._reg_watch[agent_id] = _Watch(self.now, version, where)

    def deregister(self, agent_id: bytes) -> None:
        """The agent deregisters at its home gateway."""
        home, _ = self.registered.pop(agent_id)
        self.withdrawn.add(agent_id)
        self._reg_watch.pop(agent_id, None)
        self._dereg_watch[agent_id] = _Watch(self.now, 0, set(self.holders(agent_id)))
        self._from_agent(self.gateways[home], agent_id, Deregister(
            transaction_id=next(self._txid), agent_id=agent_id,
            nonce=self.rng.randbytes(16), timestamp=int(self.now * 1000)))

    def _from_agent(self, gw: _Gateway, agent_id: bytes, msg: Message) -> None:
        self.pdus[("agents", gw.name, msg.TYPE)] += 1
        assert gw.node is not None
        gw.node.receive(f"agent~{agent_id.hex()}", self._share(decode(encode(msg))), self.now)
        self._drain(gw)

    # --- faults -------------------------------------------------------------------------------
    def cut(self, a: str, b: str) -> None:
        """Lose everything on the link from now on (in flight too), until :meth:`heal`."""
        self.links[frozenset((a, b))].cut = True
        self._adjacency = None

    def heal(self, a: str, b: str) -> None:
        self.links[frozenset((a, b))].cut = False
        self._adjacency = None

    def kill(self, name: str) -> None:
        """The gateway dies (kill -9): its file stays; its peers are not told (what they
        send it is lost until their hold timers close the sessions)."""
        gw = self.gateways[name]
        assert gw.node is not None
        gw.node.core.store.close()
        gw.node = None
        gw.timer_at = None
        self._adjacency = None

    def restart(self, name: str, *,
                agents_back: float | None = 3 * timer("AGENT_KEEPALIVE")) -> None:
        """Start a killed gateway again on its file, as the runtime does: its stored
        registrations are withheld from peers until their agents register again or
        RESTART_GRACE ends (Section 6.1.2); it dials its links.  Its agents register
        again ``agents_back`` seconds later (their keepalive noticed the dead gateway;
        None: they do not)."""
        gw = self.gateways[name]
        gw.incarnation += 1
        self._start_node(gw)
        self._adjacency = None
        node = self.node(name)
        mine = node.core.agent_ids(local_only=True)
        if mine:
            node.restarted(self.now)
            self._drain(gw)
        for aid in mine:  # converged once they are everywhere again
            if aid in self.registered:
                self._watch(aid, self._reachable(name, self.registered[aid][1].record)
                            - {name})
        for link in self.links.values():
            if link.a == name:
                link.redial.reset()
                self._schedule(self.now, lambda link=link: self._dial(link))  # type: ignore[misc]
        if agents_back is not None:
            inc = gw.incarnation
            self._schedule(self.now + agents_back, lambda: self._agents_back(gw, inc))

    def _agents_back(self, gw: _Gateway, inc: int) -> None:
        if gw.node is None or gw.incarnation != inc:
            return
        for signed in [s for home, s in self.registered.values() if home == gw.name]:
            self.register(gw.name, signed)

    # --- looking ------------------------------------------------------------------------------
    def node(self, name: str) -> GatewayNode:
        node = self.gateways[name].node
        assert node is not None, f"{name} is not running"
        return node

    def holders(self, agent_id: bytes) -> list[str]:
        return [n for n, gw in self.gateways.items()
                if gw.node is not None and agent_id in gw.node.core]

    def _reachable(self, gateway: str, record: CapabilityRecord) -> set[str]:
        """Gateways reached from ``gateway`` over links up that carry the record (in
        summary mode only links inside a domain) and allowed by the export rule."""
        seen = {gateway}
        todo = [gateway]
        while todo:
            u = todo.pop()
            for v in self._neighbours().get(u, ()):
                if v not in seen and (self.export is None or self.export(
                        self.gateways[u].domain, self.gateways[v].domain, record)):
                    seen.add(v)
                    todo.append(v)
        return seen

    def _neighbours(self) -> dict[str, list[str]]:
        """The links that are up and carry records (cached until one changes)."""
        if self._adjacency is None:
            self._adjacency = {}
            for link in self.links.values():
                if link.cut or not self._alive(link.a) or not self._alive(link.b) or (
                        self.summaries and
                        self.gateways[link.a].domain != self.gateways[link.b].domain):
                    continue
                self._adjacency.setdefault(link.a, []).append(link.b)
                self._adjacency.setdefault(link.b, []).append(link.a)
        return self._adjacency

    def expected(self, agent_id: bytes) -> set[str]:
        """Where a live registration should be held: every gateway its home reaches
        (only its home while a restarted home withholds it, Section 6.1.2)."""
        home, signed = self.registered[agent_id]
        if not self._alive(home):
            return set()
        if self._withheld(home, agent_id):
            return {home}
        return self._reachable(home, signed.record)

    def _withheld(self, home: str, agent_id: bytes) -> bool:
        grace = self.node(home).grace
        return grace is not None and agent_id in grace.stale

    def check(self) -> Check:
        """Compare every running gateway's table with what is expected (class doc)."""
        result = Check()
        want: dict[str, set[bytes]] = {n: set() for n in self.gateways}
        cache: dict[str, set[str]] = {}
        for aid, (home, signed) in self.registered.items():
            if not self._alive(home):
                continue
            if self._withheld(home, aid):
                want[home].add(aid)
            elif self.export is None:
                if home not in cache:
                    cache[home] = self._reachable(home, signed.record)
                where = cache[home]
            else:
                where = self._reachable(home, signed.record)
            for n in where:
                want[n].add(aid)
        for name, gw in self.gateways.items():
            if gw.node is None:
                continue
            held = set(gw.node.core.agent_ids())
            for label, found in (("missing", want[name] - held),
                                 ("ghosts", held & self.withdrawn),
                                 ("strays", held - want[name] - self.withdrawn)):
                if found:
                    getattr(result, label)[name] = found
        return result

    def count(self, mtype: MessageType, *, between_gateways: bool = True) -> int:
        """PDUs of ``mtype`` sent so far (only between gateways by default)."""
        return sum(n for (src, dst, t), n in self.pdus.items() if t is mtype and (
            not between_gateways or "agents" not in (src, dst)))

    @property
    def established_links(self) -> int:
        return sum(map(self._up, self.links.values()))

    def convergence(self, kind: str) -> float | None:
        """The longest convergence of the watched ``kind`` (``"register"`` or
        ``"deregister"``): 0 if none, None while some has not converged."""
        pending = self._reg_watch if kind == "register" else self._dereg_watch
        if pending:
            return None
        return max((s for k, s in self.converged if k == kind), default=0.0)
