"""The gateway core: its registry plus what it learns from peers and exports to them
(draft-dmsc-protocol-00, Sections 5.3, 6.5, 6.6).

:class:`GatewayCore` is the :class:`~.registry.Registry` (records, index and routing
table; registration and discovery) with the forwarding decision and gateway sync:
learning ADVERTISEs, WITHDRAWs and PURGEs, dropping a peer's routes and building the
ADVERTISEs towards a peer.  The same rules hold: committed first, memory after; input
checked before anything is written; no I/O besides the store, no clock; records
arrive verified by the security layer.

Learned records are written without an fsync (``durable=False``, see
:mod:`.store`): a peer sends them again on its next session.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..codec.changes import TableChanges
from ..codec.registry import ID_SIZE, MAX_PATH, ErrorCode, limit, timer
from ..codec.values import CapabilityRecord
from ..codec.wire import Advertisement, VersionedId
from ..protocol.machine import ProtocolError
from ..protocol.ports import Decision, RegisterOutcome
from .directory import RemoteDirectory
from .registry import ALREADY_REGISTERED, Registry, _Held
from .routing import Route
from .store import RegistryStore

__all__ = ["ALREADY_REGISTERED", "MAX_VERSION", "GatewayCore", "RegisterOutcome"]

#: Largest record version (a u64 on the wire, Section 6.5).
MAX_VERSION = 2**64 - 1


def _route_row(agent_id: bytes, r: Route) -> tuple[bytes, bytes, tuple[bytes, ...], bytes]:
    """The store's route columns for a learned record's best route."""
    assert r.next_hop is not None and r.origin_gateway is not None
    return (agent_id, r.origin_gateway, r.path, r.next_hop)


class GatewayCore(Registry):
    """One gateway's registry, routing decisions and sync state (module doc)."""

    def __init__(self, gateway_id: bytes, domain: str, store: RegistryStore, *,
                 min_lease: int = int(timer("MIN_LEASE")),
                 max_lease: int = int(timer("MAX_LEASE")),
                 max_peer_records: int = int(limit("PEER_MAX_RECORDS")),
                 max_peer_path: int = int(limit("PEER_MAX_PATH")),
                 purge_hold: float = timer("PURGE_HOLD"),
                 tune_gc: bool = False) -> None:
        #: What one peer may make this gateway learn (:meth:`learn`, Section 10.7).
        self.max_peer_records = max_peer_records
        self.max_peer_path = max_peer_path
        self.purge_hold = purge_hold
        #: Records known only from relayed DISCOVER answers (Section 5.2.1).
        self.remote = RemoteDirectory()
        #: Purged record versions (Section 6.5): agent id -> (version, until).
        self._purged: dict[bytes, tuple[int, float]] = {}
        super().__init__(gateway_id, domain, store, min_lease=min_lease,
                         max_lease=max_lease, tune_gc=tune_gc)

    # --- routing (Section 5.3) ------------------------------------------------------------
    def route(self, target: bytes, hop_limit: int, path: tuple[bytes, ...]) -> Decision:
        """The forwarding decision for a ROUTE-REQUEST or TRACE-REQUEST."""
        return self.routes.decide(self.gateway_id, target, hop_limit, path)

    # --- gateway sync (Section 6.5, 6.6) --------------------------------------------------
    def learn(self, adv: Advertisement, from_peer: bytes, now: float) -> bool:
        """One ADVERTISE (:meth:`learn_many`); whether the table changed."""
        return bool(self.learn_many((adv,), from_peer, now))

    def learn_many(self, ads: Sequence[Advertisement], from_peer: bytes,
                   now: float) -> TableChanges:
        """ADVERTISEs from ``from_peer``, new records written in one commit.  Return what
        changed in a way to propagate (a new record or record version, or a new best
        route; a route lost to a loop).

        Ignored (nothing written): a version different from the record's
        ``record_version``; a path that is empty, longer than 255, has a malformed or
        repeated id or does not end with ``from_peer`` (each gateway appends itself
        before advertising); an agent registered here with a live lease (local beats
        remote); a URI held by another live agent; a version older than the one held;
        a version purged within PURGE_HOLD (:meth:`purge_many`), unless ``from_peer``
        is the record's origin (a path of one: it registered the record again).

        A path that already holds this gateway is a loop: it is not learned, and it
        replaces (so withdraws) what ``from_peer`` advertised before for that agent,
        as in any path-vector protocol.  The same version through another peer adds an
        alternative route.  Learned records have no lease: they live until withdrawn,
        purged or until the session with ``from_peer`` ends (:class:`.drops.PeerDrops`).
        """
        changed: list[bytes] = []
        gone: list[VersionedId] = []
        batch: dict[bytes, tuple[_Held, tuple[bytes, ...]]] = {}
        uris: set[str] = set()

        def commit() -> None:
            if batch:
                held = list(batch.values())
                terms = self.store.put_many((e.stored() for e, _ in held),
                                            [h for _, ev in held for h in ev], durable=False)
                for (entry, evict), t in zip(held, terms, strict=True):
                    for h in evict:
                        self._evicted(h)
                    self._install(entry, t)
                batch.clear()
                uris.clear()

        try:  # what was decided before a refusal (Section 10.7) is kept
            for adv in ads:
                rec = adv.record.record
                aid, path = rec.agent_id, adv.path
                if aid in batch or rec.agent_uri in uris:
                    commit()
                if adv.version != rec.record_version or not path or len(path) > MAX_PATH \
                        or any(len(g) != ID_SIZE for g in path) or len(set(path)) != len(path) \
                        or path[-1] != from_peer:
                    continue
                if self.gateway_id in path:
                    ch = self._drop_routes([VersionedId(aid, adv.version)], from_peer)
                    changed.extend(ch.advertised)
                    gone.extend(ch.withdrawn)
                    continue
                self._check_peer_limits(aid, path, from_peer, len(batch))
                if self.purge_held(adv, from_peer, now):
                    continue
                self._purged.pop(aid, None)
                cur = self._records.get(aid)
                if cur is not None and cur.expires_at <= now:
                    cur = None
                if cur is not None and (cur.local or adv.version < cur.version):
                    continue
                holder_id = self._by_uri.get(rec.agent_uri)
                evict: tuple[bytes, ...] = ()
                if holder_id is not None and holder_id != aid:
                    if self._records[holder_id].expires_at > now:
                        continue
                    evict = (holder_id,)
                route = Route(from_peer, path, adv.version, path[0])
                if cur is not None and adv.version == cur.version:
                    if self._add_route(cur, route):
                        changed.append(aid)
                    continue
                batch[aid] = (_Held(aid, rec.agent_uri, None, adv.record, math.inf, path[0],
                                    adv.version, path, from_peer), evict)
                uris.add(rec.agent_uri)
                changed.append(aid)
        finally:
            commit()
        return TableChanges(tuple(dict.fromkeys(changed)), tuple(gone))

    def purge_held(self, adv: Advertisement, from_peer: bytes, now: float) -> bool:
        """Whether :meth:`learn_many` ignores ``adv`` for now (Section 6.5): its version
        was purged within PURGE_HOLD and it does not come straight from its origin."""
        t = self._purged.get(adv.record.record.agent_id)
        return t is not None and now < t[1] and adv.version <= t[0] \
            and adv.path != (from_peer,)

    def holds(self, adv: Advertisement, from_peer: bytes) -> bool:
        """Whether learning ``adv`` from ``from_peer`` would change nothing (Section 6.5):
        this very record (the same signed octets) is held, learned, at ``adv``'s version,
        with a route of that version through ``from_peer`` over ``adv``'s path."""
        rec = adv.record
        cur = self._records.get(rec.record.agent_id)
        if cur is None or cur.local or cur.version != adv.version:
            return False
        r = self.routes.route_via(cur.agent_id, from_peer)
        return r is not None and r.version == adv.version and r.path == adv.path \
            and cur.signed.encode() == rec.encode()

    def _check_peer_limits(self, aid: bytes, path: tuple[bytes, ...], peer: bytes,
                           pending: int = 0) -> None:
        """The limits on what one peer may make this gateway learn (Section 10.7, BGP's
        maximum-prefix): a path longer than ``max_peer_path``, or a record beyond
        ``max_peer_records`` through ``peer`` (``pending`` more are decided, not yet
        committed), raises :class:`ProtocolError` (PATH_TOO_LONG, MAX_RECORDS_EXCEEDED),
        which closes the session with NOTIFY."""
        if len(path) > self.max_peer_path:
            raise ProtocolError(ErrorCode.PATH_TOO_LONG,
                                f"path of {len(path)} gateways exceeds {self.max_peer_path}")
        if self.routes.route_via(aid, peer) is None \
                and self.routes.count_via(peer) + pending >= self.max_peer_records:
            raise ProtocolError(ErrorCode.MAX_RECORDS_EXCEEDED,
                                f"more than {self.max_peer_records} records from this peer")

    def _add_route(self, cur: _Held, route: Route) -> bool:
        """Another route to a learned record of the same version."""
        aid = cur.agent_id
        before = self.routes.best(aid)
        candidates = [r for r in self.routes.routes(aid) if r.next_hop != route.next_hop]
        best = min([*candidates, route], key=Route.preference)
        if best != before:
            self._persist_route(cur, best)
        self.routes.add(aid, route)
        return best != before

    def _persist_route(self, cur: _Held, best: Route) -> None:
        self.store.set_routes([_route_row(cur.agent_id, best)], durable=False)
        cur.set_route(best)

    def withdraw(self, agent_id: bytes, version: int, from_peer: bytes) -> bool:
        """One WITHDRAW (:meth:`withdraw_many`); whether to propagate."""
        return bool(self.withdraw_many((VersionedId(agent_id, version),), from_peer))

    def withdraw_many(self, items: Sequence[VersionedId], from_peer: bytes) -> TableChanges:
        """WITHDRAWs from ``from_peer``: drop its route to each agent if that route's
        version is at most the one withdrawn (one commit).  The record goes when its last
        route goes.  Return what to propagate: records gone (``withdrawn``) and records
        whose best route changed (``advertised``)."""
        return self._drop_routes(items, from_peer)

    def purge_many(self, items: Sequence[VersionedId], now: float) -> TableChanges:
        """PURGEs (Section 6.5): remove each learned record held at the purged version or
        an older one, with every route, in one commit, and remember the purged version
        for PURGE_HOLD (:meth:`learn_many` then ignores it).  Records registered here
        are never purged.  Return the records removed (``purged``)."""
        until = now + self.purge_hold
        self._purged = {a: t for a, t in self._purged.items() if t[1] > now}
        gone: list[_Held] = []
        for item in items:
            t = self._purged.get(item.agent_id)
            if t is None or t[0] < item.version:
                self._purged[item.agent_id] = (item.version, until)
            cur = self._records.get(item.agent_id)
            if cur is not None and not cur.local and cur.version <= item.version:
                gone.append(cur)
        if gone:
            self.store.delete_many((c.agent_id for c in gone), durable=False)
            for c in gone:
                self._uninstall(c.agent_id)
        return TableChanges(purged=tuple(VersionedId(c.agent_id, c.version) for c in gone))

    def route_chunks_via(self, peer: bytes) -> Iterator[list[bytes]]:
        """The Agent IDs with a route through ``peer``, a few hundred at a time."""
        return self.routes.via_chunks(peer)

    def _drop_routes(self, items: Sequence[VersionedId], peer: bytes) -> TableChanges:
        gone: list[_Held] = []
        moved: list[tuple[_Held, Route]] = []
        for item in items:
            aid = item.agent_id
            cur = self._records.get(aid)
            if cur is None or cur.local:
                continue
            routes = self.routes.routes(aid)
            mine = [r for r in routes if r.next_hop == peer]
            if not mine or mine[0].version > item.version:
                continue
            rest = [r for r in routes if r.next_hop != peer]
            if not rest:
                gone.append(cur)
            elif rest[0] != routes[0]:
                moved.append((cur, rest[0]))
            else:
                self.routes.remove(aid, peer)
        if gone or moved:
            self.store.set_routes([_route_row(c.agent_id, b) for c, b in moved],
                                  [c.agent_id for c in gone], durable=False)
            for c in gone:
                self._uninstall(c.agent_id)
            for c, b in moved:
                c.set_route(b)
                self.routes.remove(c.agent_id, peer)
        return TableChanges(tuple(c.agent_id for c, _ in moved),
                            tuple(VersionedId(c.agent_id, c.version) for c in gone))

    def _exported(self, e: _Held, to_peer: bytes | None,
                  allow: Callable[[CapabilityRecord], bool] | None) -> bool:
        """Whether ``e`` is advertised to ``to_peer`` under ``allow``."""
        if to_peer is not None and to_peer in e.path:
            return False
        if len(e.path) >= MAX_PATH:
            return False
        return allow is None or allow(e.signed.record)

    def advertisement(self, agent_id: bytes, to_peer: bytes,
                      allow: Callable[[CapabilityRecord], bool] | None) -> Advertisement | None:
        """The ADVERTISE of one record towards ``to_peer`` (:meth:`advertisements_for`),
        None when it is not exported to that peer."""
        e = self._records.get(agent_id)
        if e is None or not self._exported(e, to_peer, allow):
            return None
        return Advertisement(e.version, (*e.path, self.gateway_id), e.signed)

    def advertisements_for(self, agent_ids: Iterable[bytes], to_peer: bytes | None = None,
                           allow: Callable[[CapabilityRecord], bool] | None = None
                           ) -> list[Advertisement]:
        """ADVERTISE items for ``agent_ids`` (unknown ids are skipped), each with this
        gateway appended to the path.  Skipped as well: with ``to_peer``, records whose
        path already holds that peer (it would discard them as a loop); with ``allow``
        (e.g. :func:`.policy.export_filter`), records it refuses; records whose path
        could not take one more gateway id."""
        out = []
        for aid in agent_ids:
            e = self._records.get(aid)
            if e is not None and self._exported(e, to_peer, allow):
                out.append(Advertisement(e.version, (*e.path, self.gateway_id), e.signed))
        return out
