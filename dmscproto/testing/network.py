"""The network of the federation simulator (:mod:`.simulator`): gateways, links and
connections under a fake clock (draft-dmsc-protocol-00, Sections 5.1 and 6).

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

Measured on the way: every PDU by type per link (:attr:`Network.pdus`), PDUs lost, and
duplicates: ADVERTISEs of a record that the peer already advertised on the same
connection, of a (version, path) the receiver still holds from it or of an older version
(:attr:`Network.duplicates`).  Only the same connection counts: on a new session the peer
sends its whole table (Section 6.5.3), and a gateway that restarted holds, from its file,
routes through the peer that this transfer must confirm (or they are swept as stale), so
those ADVERTISEs repeat what it stored but are no duplicates.

Memory: records are decoded once per PDU but the signed records that gateways keep are
shared (:class:`~.shared.SharedRecords`).  Each gateway's SQLite file holds its own
copy, as on a real gateway: put ``directory`` on a tmpfs.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codec import decode, encode
from ..codec.messages import DiscoverReply, Message, RouteRequest, Update
from ..codec.registry import MessageType, timer
from ..codec.signing import entity_id
from ..codec.values import CapabilityRecord
from ..gateway.core import GatewayCore
from ..gateway.node import GatewayNode
from ..gateway.store import RegistryStore
from ..protocol.events import SessionClosed, SessionEstablished
from ..protocol.machine import Handle
from ..protocol.peering import PeerState
from ..protocol.summary import Replication
from ..runtime.gateway import Redial
from .harness import T0, numbered_key
from .shared import SharedRecords
from .topology import Edge

#: Whether a gateway of the first domain exports a record to a peer of the second.
ExportRule = Callable[[str, str, CapabilityRecord], bool]

#: Key numbers of simulated gateways (records use their own numbers, below this).
_GATEWAY_KEYS = 10_000_000


@dataclass(eq=False)
class SimGateway:
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
    #: Per receiving end, the Agent IDs advertised to it on this connection.
    heard: dict[str, set[bytes]] = field(default_factory=dict)

    def handle_at(self, name: str) -> str:
        """The handle under which gateway ``name`` knows this connection."""
        other = self.link.b if name == self.link.a else self.link.a
        return f"{other}~{self.n}"




class Network:
    """Gateways and links under a fake clock, and the PDUs between them (module doc)."""

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
        self.gateways: dict[str, SimGateway] = {}
        self.links: dict[frozenset[str], _Link] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._conns: dict[str, _Conn] = {}   # handle (as the other end knows it) -> conn
        self._conn_n = itertools.count(1)
        self.records = SharedRecords()
        #: PDUs sent, by (source, destination, message type); agents are ``"agents"``.
        self.pdus: Counter[tuple[str, str, MessageType]] = Counter()
        #: When a PDU of each type was last delivered between gateways.
        self.delivered_at: dict[MessageType, float] = {}
        #: DISCOVER_REPLYs to agents, by transaction id.
        self.answers: dict[int, DiscoverReply] = {}
        #: ROUTE_REQUESTs delivered to agents: the gateway that delivered each PAYLOAD.
        self.called: dict[bytes, str] = {}
        #: PDUs lost on cut links or closed connections, by message type.
        self.lost: Counter[MessageType] = Counter()
        self.duplicates = 0

    # --- building -----------------------------------------------------------------------------
    def add_gateway(self, name: str, domain: str) -> None:
        key_n = _GATEWAY_KEYS + len(self.gateways)
        gid = entity_id(numbered_key(key_n).public_key())
        self.gateways[name] = SimGateway(name, domain, gid, key_n)
        self._start_node(self.gateways[name])

    def _start_node(self, gw: SimGateway) -> None:
        core = GatewayCore(gw.gateway_id, gw.domain,
                           RegistryStore(self.directory / f"{gw.name}.db"))
        rule = self.export
        own = gw.domain

        def export_for(peer_domain: str) -> Callable[[CapabilityRecord], bool] | None:
            if rule is None:
                return None
            return lambda rec: rule(own, peer_domain, rec)

        mode = Replication.SUMMARY if self.summaries else Replication.FULL
        gw.node = GatewayNode(core, name=gw.name, verifier=self.records.verify,
                              export_for=export_for, replication=lambda _domain: mode,
                              summary_mode=self.summaries,
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


    def _up(self, link: _Link) -> bool:
        return link.conn is not None and self._established(link.conn, link.a)

    def _arm(self, gw: SimGateway) -> None:
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

    def _fire(self, gw: SimGateway, inc: int, due: float) -> None:
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
        conn.heard.clear()
        link = conn.link
        for name in (link.a, link.b):
            if not link.cut:
                self._schedule(self.now + link.latency,
                               lambda name=name: self._close_end(conn, name))  # type: ignore[misc]
        if link.conn is conn:
            link.conn = None
            self._redial(link)

    # --- traffic ------------------------------------------------------------------------------
    def _drain(self, gw: SimGateway) -> None:
        """Send what the node queued, react to its events, re-arm its timer."""
        node = gw.node
        assert node is not None
        while node.has_output():
            for dest, msg in node.messages_to_send():
                self._send(gw, dest, msg)
            while (ev := node.next_event()) is not None:
                self._event(gw, ev)
        self._arm(gw)

    def _send(self, gw: SimGateway, dest: Handle, msg: Message) -> None:
        data = encode(msg)
        conn = self._conns.get(dest) if isinstance(dest, str) else None
        if conn is None:  # an agent: counted, dropped (DISCOVER answers, calls kept)
            self.pdus[(gw.name, "agents", msg.TYPE)] += 1
            if isinstance(msg, DiscoverReply):
                self.answers[msg.transaction_id] = msg
            elif isinstance(msg, RouteRequest):
                self.called[msg.payload] = gw.name
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
        msg = self.records.share(msg, self.now)
        self.delivered_at[msg.TYPE] = self.now
        if isinstance(msg, Update):
            self._count_duplicates(gw, conn, msg)
        gw.node.receive(source, msg, self.now)
        self._drain(gw)

    def _count_duplicates(self, gw: SimGateway, conn: _Conn, msg: Update) -> None:
        assert gw.node is not None
        sender = conn.link.a if gw.name == conn.link.b else conn.link.b
        sender_id = self.gateways[sender].gateway_id
        routes = gw.node.core.routes
        heard = conn.heard.setdefault(gw.name, set())
        for ad in msg.advertise:
            aid = ad.record.record.agent_id
            held = routes.route_via(aid, sender_id) if aid in heard else None
            if held is not None and (held.version > ad.version or
                                     (held.version == ad.version and held.path == ad.path)):
                self.duplicates += 1
            heard.add(aid)

    # --- events -------------------------------------------------------------------------------
    def _event(self, gw: SimGateway, ev: object) -> None:
        """A node's event: a session up resets its link's backoff, a session closed
        closes its connection."""
        if isinstance(ev, SessionEstablished | SessionClosed):
            conn = self._conns.get(str(ev.handle))
            if conn is None:
                return
            if isinstance(ev, SessionEstablished):
                conn.link.redial.reset()
            else:
                self._closed(conn)

    # --- looking ------------------------------------------------------------------------------
    def node(self, name: str) -> GatewayNode:
        node = self.gateways[name].node
        assert node is not None, f"{name} is not running"
        return node


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

    def count(self, mtype: MessageType, *, between_gateways: bool = True) -> int:
        """PDUs of ``mtype`` sent so far (only between gateways by default)."""
        return sum(n for (src, dst, t), n in self.pdus.items() if t is mtype and (
            not between_gateways or "agents" not in (src, dst)))

    @property
    def established_links(self) -> int:
        return sum(map(self._up, self.links.values()))

