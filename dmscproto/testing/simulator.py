"""A federation simulator: hundreds of gateways in one process under a fake clock
(draft-dmsc-protocol-00, Sections 5.1 and 6).

The gateways, links and connections are a :class:`~.network.Network` (real nodes and
SQLite files, every PDU through the codec, simulated time); topologies are in
:mod:`.topology`.  Agents are not simulated: REGISTER and DEREGISTER PDUs are injected
at their home gateway from a handle of their own, and what gateways send back to them
is counted and dropped.  Faults: links cut and healed, gateways killed and restarted.

Measured here, besides the network's PDU counts: for each registration, when every
gateway its export policy lets it reach first held it, and for each deregistration
when the last holder dropped it (:attr:`Simulation.converged`); the last table change.
:meth:`Simulation.check` compares every table with what the topology and the export
policy imply: records missing, and ghosts (records withdrawn but still held).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codec import decode, encode
from ..codec.cose import SignedRecord
from ..codec.messages import Deregister, Discover, Message, Register, RouteRequest
from ..codec.registry import DEFAULT_HOP_LIMIT, MessageType, Scope, timer
from ..codec.values import DiscoveryQuery
from ..protocol.events import AgentRegistered, AgentRemoved, SessionClosed, TableChanged
from .network import ExportRule, Network, SimGateway


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


class Simulation(Network):
    """Gateways, links and agents' registrations under a fake clock (module doc)."""

    def __init__(self, directory: Path, *, seed: int = 0, latency: float = 0.005,
                 jitter: float = 0.0, export: ExportRule | None = None,
                 summaries: bool = False, **node_options: Any) -> None:
        super().__init__(directory, seed=seed, latency=latency, jitter=jitter,
                         export=export, summaries=summaries, **node_options)
        self._txid = itertools.count(1)
        #: agent id -> (home gateway, signed record) of every live registration.
        self.registered: dict[bytes, tuple[str, SignedRecord]] = {}
        #: agent ids deregistered and not registered again.
        self.withdrawn: set[bytes] = set()
        self.last_change = self.now
        self._reg_watch: dict[bytes, _Watch] = {}
        self._dereg_watch: dict[bytes, _Watch] = {}
        #: Seconds each watched (de)registration took: ``("register", s)`` or
        #: ``("deregister", s)``, in completion order.
        self.converged: list[tuple[str, float]] = []

    def settle(self, limit: float, *, quiet: float = 1.0) -> bool:
        """Run until every link that can be up is ESTABLISHED, every watched
        (de)registration has converged and no table changed and no SUMMARY was delivered
        for ``quiet`` seconds, or for ``limit`` seconds; return whether it converged."""
        end = self.now + limit
        while self.now < end:
            self.run_until(min(end, self.now + quiet / 2))
            changed = max(self.last_change, self.delivered_at.get(MessageType.SUMMARY, 0.0))
            if self.now - changed >= quiet and self._settled():
                return True
        return self._settled()

    def _settled(self) -> bool:
        if self._reg_watch or self._dereg_watch:
            return False
        return all(self._up(link) for link in self.links.values()
                   if not link.cut and self._alive(link.a) and self._alive(link.b))

    # --- events -------------------------------------------------------------------------------
    def _event(self, gw: SimGateway, ev: object) -> None:
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
        elif isinstance(ev, SessionClosed):  # the routes through the peer are gone
            self._dropped(gw, [aid for aid, w in self._dereg_watch.items()
                               if gw.name in w.waiting and gw.node is not None
                               and aid not in gw.node.core])
        super()._event(gw, ev)

    def _held(self, gw: SimGateway, agent_ids: Iterable[bytes]) -> None:
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

    def _dropped(self, gw: SimGateway, agent_ids: Iterable[bytes]) -> None:
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

    def route(self, gateway: str, query: DiscoveryQuery, payload: bytes) -> None:
        """An agent of ``gateway`` calls the best match of ``query`` (a ROUTE_REQUEST
        with DEFAULT_HOP_LIMIT); where it was delivered will be in :attr:`called`."""
        self._from_agent(self.gateways[gateway], bytes(16), RouteRequest(
            transaction_id=next(self._txid), source_agent=bytes(16), query=query,
            hop_limit=DEFAULT_HOP_LIMIT, path=(), payload=payload))

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

    def _from_agent(self, gw: SimGateway, agent_id: bytes, msg: Message) -> None:
        self.pdus[("agents", gw.name, msg.TYPE)] += 1
        assert gw.node is not None
        msg = self.records.share(decode(encode(msg)), self.now)
        gw.node.receive(f"agent~{agent_id.hex()}", msg, self.now)
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

    def _agents_back(self, gw: SimGateway, inc: int) -> None:
        if gw.node is None or gw.incarnation != inc:
            return
        for signed in [s for home, s in self.registered.values() if home == gw.name]:
            self.register(gw.name, signed)

    # --- looking ------------------------------------------------------------------------------
    def holders(self, agent_id: bytes) -> list[str]:
        return [n for n, gw in self.gateways.items()
                if gw.node is not None and agent_id in gw.node.core]

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
                continue
            if self.export is None:
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

    def convergence(self, kind: str) -> float | None:
        """The longest convergence of the watched ``kind`` (``"register"`` or
        ``"deregister"``): 0 if none, None while some has not converged."""
        pending = self._reg_watch if kind == "register" else self._dereg_watch
        if pending:
            return None
        return max((s for k, s in self.converged if k == kind), default=0.0)
