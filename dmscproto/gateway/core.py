"""The gateway core: registry, discovery, routing and sync state (draft Sections 5, 6).

:class:`GatewayCore` keeps the registry in a :class:`RegistryStore` (the durable copy)
and mirrors it in memory: the records, a :class:`CapabilityIndex` for discovery and a
:class:`RoutingTable`.  Every change is committed to SQLite *first* and applied to
memory only after the commit, so an acknowledged change is durable and a failed write
leaves both copies as they were.  Input is checked before anything is written, so bad
input never costs a stored record.

No I/O besides the store, no clock: every method that depends on time takes ``now``
(seconds, the caller's clock).  Signatures, certificates, tokens and export policy are
*not* checked here: the security layer verifies a record, the sender's identity and
its authorization before calling :meth:`GatewayCore.register` or
:meth:`GatewayCore.learn`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from ..codec.cose import SignedRecord
from ..codec.registry import ID_SIZE, ErrorCode, Scope, limit, timer
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..codec.wire import Advertisement, Result, VersionedId
from .changes import TableChanges
from .directory import RemoteDirectory
from .index import CapabilityIndex
from .routing import MAX_PATH, Decision, Route, RoutingTable
from .store import RegistryStore, StoredRecord, StoredRow

#: The DIAGNOSTIC of a REGISTER_ACK whose record was registered already, unchanged (a
#: retry of a REGISTER whose answer the agent did not get, Section 5.1): the lease is
#: extended, nothing else changes.
ALREADY_REGISTERED = "already registered: the same record was committed before"
#: Largest record version (a u64 on the wire, Section 6.5).
MAX_VERSION = 2**64 - 1


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """The answer to REGISTER or REFRESH: a status and, on success, the lease granted."""

    status: ErrorCode
    lease: int = 0
    diagnostic: str | None = None


class _Held:
    """A registry entry in memory.  Its signed record is decoded on first use: a
    restart only reads the index terms and routing columns (:meth:`RegistryStore.rows`)."""

    __slots__ = ("_raw", "_signed", "agent_id", "agent_uri", "expires_at", "next_hop",
                 "origin", "path", "version")

    def __init__(self, agent_id: bytes, agent_uri: str, raw: bytes | None,
                 signed: SignedRecord | None, expires_at: float, origin: bytes | None,
                 version: int, path: tuple[bytes, ...], next_hop: bytes | None) -> None:
        self.agent_id, self.agent_uri = agent_id, agent_uri
        self._raw, self._signed = raw, signed
        self.expires_at, self.origin, self.version = expires_at, origin, version
        self.path, self.next_hop = path, next_hop

    @classmethod
    def load(cls, r: StoredRow) -> _Held:
        return cls(r.agent_id, r.agent_uri, r.record, None, r.expires_at, r.origin,
                   r.version, r.path, r.next_hop)

    @property
    def signed(self) -> SignedRecord:
        if self._signed is None:
            self.decode()
            assert self._signed is not None
        return self._signed

    @property
    def cold(self) -> bool:
        """Not decoded yet."""
        return self._signed is None

    def decode(self) -> None:
        """Decode the stored octets (once; the octets are then dropped)."""
        if self._raw is not None:
            self._signed = SignedRecord.decode(self._raw)
            self._raw = None

    @property
    def local(self) -> bool:
        return self.origin is None

    def stored(self) -> StoredRecord:
        return StoredRecord(self.agent_id, self.signed, self.expires_at, self.origin,
                            self.version, self.path, self.next_hop)

    def set_route(self, best: Route) -> None:
        self.origin, self.path, self.next_hop = best.origin_gateway, best.path, best.next_hop


def _route_row(agent_id: bytes, r: Route) -> tuple[bytes, bytes, tuple[bytes, ...], bytes]:
    """The store's route columns for a learned record's best route."""
    assert r.next_hop is not None and r.origin_gateway is not None
    return (agent_id, r.origin_gateway, r.path, r.next_hop)


class _Batch:
    """Registrations decided but not yet committed, and what they evict."""

    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.entries: dict[bytes, _Held] = {}
        self.by_uri: dict[str, bytes] = {}
        self.released: set[str] = set()
        self.evict: set[bytes] = set()

    def current(self, agent_id: bytes) -> _Held | None:
        if agent_id in self.entries:
            return self.entries[agent_id]
        if agent_id in self.evict:
            return None
        return self.core._records.get(agent_id)

    def holder(self, uri: str) -> _Held | None:
        if uri in self.by_uri:
            return self.entries[self.by_uri[uri]]
        holder_id = self.core._by_uri.get(uri)
        if holder_id is None or uri in self.released:
            return None
        return self.current(holder_id)

    def add(self, entry: _Held, old: _Held | None, holder: _Held | None) -> None:
        uri = entry.agent_uri
        if old is not None and old.agent_uri != uri:
            self.by_uri.pop(old.agent_uri, None)
            self.released.add(old.agent_uri)
        if holder is not None and holder.agent_id != entry.agent_id:
            self.evict.add(holder.agent_id)
        self.entries[entry.agent_id] = entry
        self.by_uri[uri] = entry.agent_id
        self.released.discard(uri)


class GatewayCore:
    """One gateway's registry, index, routing table and sync state (module doc)."""

    def __init__(self, gateway_id: bytes, domain: str, store: RegistryStore, *,
                 min_lease: int = int(timer("MIN_LEASE")),
                 max_lease: int = int(timer("MAX_LEASE")),
                 max_peer_records: int = int(limit("PEER_MAX_RECORDS")),
                 max_peer_path: int = int(limit("PEER_MAX_PATH")),
                 purge_hold: float = timer("PURGE_HOLD")) -> None:
        if len(gateway_id) != ID_SIZE:
            raise ValueError(f"gateway id must be {ID_SIZE} octets")
        if not 0 < min_lease <= max_lease:
            raise ValueError("need 0 < min_lease <= max_lease")
        self.gateway_id = gateway_id
        self.domain = domain
        self.store = store
        self.min_lease = min_lease
        self.max_lease = max_lease
        #: What one peer may make this gateway learn (:meth:`learn`, Section 10.7).
        self.max_peer_records = max_peer_records
        self.max_peer_path = max_peer_path
        self.purge_hold = purge_hold
        self.index = CapabilityIndex()
        self.routes = RoutingTable()
        #: Records known only from relayed DISCOVER answers (Section 5.2.1).
        self.remote = RemoteDirectory()
        self._records: dict[bytes, _Held] = {}
        self._by_uri: dict[str, bytes] = {}
        self._local: set[bytes] = set()
        #: Purged record versions (Section 6.5): agent id -> (version, until).
        self._purged: dict[bytes, tuple[int, float]] = {}
        self._cold: list[bytes] = []
        #: Lapsed local registrations evicted when another agent took their name,
        #: kept (with their lease end) until :meth:`expire` reports them.
        self._lapsed: list[tuple[float, VersionedId]] = []
        # The restart path: index terms and routes only, no COSE decoding.  Nothing
        # built here forms reference cycles, so the cyclic collector has no work in it:
        # it is paused during the load (else its collections rescan the growing heap
        # and make the load superlinear) and the loaded objects are then moved to the
        # permanent generation (gc.freeze), so that later collections do not stall a
        # running gateway by rescanning the whole registry.  Only when something was
        # loaded: gc.freeze() also freezes every other object then alive, garbage
        # cycles included, which is then never collected (a process that makes many
        # cores on empty stores leaked them all; found by fuzzing).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for row in store.rows():
                self._install(_Held.load(row), row.terms)
            self._cold = list(self._records)
        finally:
            if self._records:
                gc.freeze()
            if gc_was_enabled:
                gc.enable()

    def warm(self, limit: int) -> int:
        """Decode up to ``limit`` of the records loaded at start and not decoded yet
        (records are otherwise decoded on first use, e.g. in a discovery answer or
        under an export filter).  A gateway calls this when idle after a restart.
        Return how many may still be cold."""
        while self._cold and limit > 0:
            e = self._records.get(self._cold.pop())
            if e is not None and e.cold:
                e.decode()
                limit -= 1
        return len(self._cold)

    # --- memory mirror ------------------------------------------------------------------
    def _install(self, e: _Held, terms: bytes) -> None:
        """Mirror a committed entry; ``terms`` are its encoded index terms."""
        if self._lapsed:  # registered again: no WITHDRAW for its lapsed predecessor
            self._lapsed = [x for x in self._lapsed if x[1].agent_id != e.agent_id]
        self._uninstall(e.agent_id)
        self._records[e.agent_id] = e
        self._by_uri[e.agent_uri] = e.agent_id
        if e.local:
            self._local.add(e.agent_id)
        self.index.add_encoded(e.agent_id, terms)
        self.routes.add(e.agent_id, Route(e.next_hop, e.path, e.version, e.origin))

    def _uninstall(self, agent_id: bytes) -> _Held | None:
        e = self._records.pop(agent_id, None)
        if e is None:
            return None
        if self._by_uri.get(e.agent_uri) == agent_id:
            del self._by_uri[e.agent_uri]
        self._local.discard(agent_id)
        self.index.remove(agent_id)
        self.routes.remove_agent(agent_id)
        return e

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._records

    def get(self, agent_id: bytes) -> StoredRecord | None:
        e = self._records.get(agent_id)
        return None if e is None else e.stored()

    def agent_ids(self, *, local_only: bool = False) -> list[bytes]:
        """Known agent ids in ascending order."""
        return sorted(a for a, e in self._records.items() if e.local or not local_only)

    def _lease(self, requested: int) -> int:
        return min(max(requested, self.min_lease), self.max_lease)

    # --- registration (Section 5.1) -----------------------------------------------------
    def register(self, signed: SignedRecord, requested_lease: int,
                 now: float) -> RegisterOutcome:
        """REGISTER: store ``signed`` (already verified by the security layer).

        SUCCESS is returned only after the record is committed.  The lease is
        ``requested_lease`` clamped to ``[min_lease, max_lease]``.  Refused, with
        nothing written:

        * POLICY_DENIED: the record's domain is not this gateway's;
        * NAME_CONFLICT: another agent id (another key) holds the agent URI with an
          unexpired lease, or as a learned record (an expired holder is evicted);
        * REPLAY: the gateway holds a higher record version of this agent;
        * INVALID_TLV_VALUE: the gateway holds the same record version with a
          different payload (a changed record must carry a new version, or peers,
          which compare versions only, would never learn the change).

        The same version with the same payload re-registers (a retransmission or an
        agent restart) and renews the lease.  A live record of this agent, local or
        learned, is replaced.  An expired one counts as absent.
        """
        return self.register_many(((signed, requested_lease),), now)[0]

    def register_many(self, requests: Iterable[tuple[SignedRecord, int]],
                      now: float) -> list[RegisterOutcome]:
        """Group commit: decide every REGISTER in order as :meth:`register` would, then
        commit all accepted records in one transaction (one fsync).  Outcomes are
        returned, and may be acknowledged, only after that commit."""
        batch = _Batch(self)
        outcomes = [self._admit(signed, lease, now, batch) for signed, lease in requests]
        if batch.entries:
            entries = list(batch.entries.values())
            terms = self.store.put_many((e.stored() for e in entries), batch.evict)
            for aid in batch.evict:
                self._evicted(aid)
            for entry, t in zip(entries, terms, strict=True):
                self._install(entry, t)
        return outcomes

    def _admit(self, signed: SignedRecord, requested_lease: int, now: float,
               batch: _Batch) -> RegisterOutcome:
        rec = signed.record
        if rec.domain != self.domain:
            return RegisterOutcome(ErrorCode.POLICY_DENIED, 0,
                                   f"record domain {rec.domain!r} is not {self.domain!r}")
        old = batch.current(rec.agent_id)
        if old is not None and old.expires_at > now:
            if rec.record_version < old.version:
                return RegisterOutcome(ErrorCode.REPLAY, 0,
                                       f"record version {rec.record_version} is older "
                                       f"than the registered {old.version}")
            if rec.record_version == old.version and signed.payload != old.signed.payload:
                return RegisterOutcome(ErrorCode.INVALID_TLV_VALUE, 0,
                                       "record changed without a new record version")
        holder = batch.holder(rec.agent_uri)
        if holder is not None and holder.agent_id != rec.agent_id \
                and holder.expires_at > now:
            return RegisterOutcome(ErrorCode.NAME_CONFLICT, 0,
                                   f"{rec.agent_uri} is held by another key")
        lease = self._lease(requested_lease)
        entry = _Held(rec.agent_id, rec.agent_uri, None, signed, now + lease, None,
                      rec.record_version, (), None)
        batch.add(entry, old, holder)
        if old is not None and old.local and old.expires_at > now \
                and signed.payload == old.signed.payload:
            return RegisterOutcome(ErrorCode.SUCCESS, lease, ALREADY_REGISTERED)
        return RegisterOutcome(ErrorCode.SUCCESS, lease)

    def refresh(self, agent_id: bytes, requested_lease: int, now: float) -> RegisterOutcome:
        """REFRESH: extend a local agent's lease (committed before SUCCESS).

        UNKNOWN_AGENT if the agent is not registered here; LEASE_EXPIRED if its lease
        has ended (it must REGISTER again; :meth:`expire` removes it).
        """
        e = self._records.get(agent_id)
        if e is None or not e.local:
            return RegisterOutcome(ErrorCode.UNKNOWN_AGENT)
        if e.expires_at <= now:
            return RegisterOutcome(ErrorCode.LEASE_EXPIRED)
        lease = self._lease(requested_lease)
        self.store.touch(agent_id, now + lease)
        e.expires_at = now + lease
        return RegisterOutcome(ErrorCode.SUCCESS, lease)

    def deregister(self, agent_id: bytes, now: float) -> ErrorCode:
        """DEREGISTER: remove a local agent (committed before SUCCESS), whether or not
        its lease has ended.  UNKNOWN_AGENT if it is not registered here."""
        e = self._records.get(agent_id)
        if e is None or not e.local:
            return ErrorCode.UNKNOWN_AGENT
        self.store.delete(agent_id)
        self._uninstall(agent_id)
        return ErrorCode.SUCCESS

    def _evicted(self, agent_id: bytes) -> None:
        """A lapsed registration was deleted to free its name (already committed)."""
        e = self._uninstall(agent_id)
        if e is not None and e.local:
            self._lapsed.append((e.expires_at, VersionedId(agent_id, e.version)))

    def expire(self, now: float) -> list[VersionedId]:
        """Remove every local registration whose lease ended at or before ``now``;
        return them with their versions (what to WITHDRAW from peers), by agent id.
        Lapsed registrations already deleted because another agent took their name
        (:meth:`register`, :meth:`learn`) are reported here too."""
        out = [v for _, v in self._lapsed]
        self._lapsed.clear()
        for aid in self.store.expire(now):
            e = self._uninstall(aid)
            if e is not None:
                out.append(VersionedId(aid, e.version))
        return sorted(out, key=lambda v: v.agent_id)

    def next_expiry(self) -> float | None:
        """The earliest lease end, for the caller's timer (None when nothing expires);
        in the past while :meth:`expire` has lapsed registrations to report."""
        ends = [t for t, _ in self._lapsed]
        stored = self.store.next_expiry()
        if stored is not None:
            ends.append(stored)
        return min(ends, default=None)

    # --- discovery (Section 5.2) ----------------------------------------------------------
    def discover(self, query: DiscoveryQuery, scope: Scope, max_results: int, now: float,
                 allow: Callable[[CapabilityRecord], bool] | None = None) -> list[Result]:
        """DISCOVER: ranked records (see :mod:`.index` for the filter and the score).

        ``scope`` LOCAL answers from this gateway's registrations, DOMAIN from every
        record of this gateway's domain (a query naming another domain gets nothing),
        FEDERATED from every record it knows; the scope is a mandatory term of the
        filter.  Records whose lease has ended are never returned.  ``allow`` is the
        caller's policy, asked after scoring, before the limit.
        """
        if scope is Scope.DOMAIN:  # a mandatory term, so answered from the index
            if query.domain not in (None, self.domain):
                return []
            query = replace(query, domain=self.domain)
        records = self._records

        def permitted(aid: bytes) -> bool:
            e = records[aid]
            return e.expires_at > now and (allow is None or allow(e.signed.record))

        within = self._local if scope is Scope.LOCAL else None
        return [Result(m.score, records[m.agent_id].signed)
                for m in self.index.match(query, max_results, permitted, within)]

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
        purged or until :meth:`drop_peer`.
        """
        changed: list[bytes] = []
        gone: list[VersionedId] = []
        batch: dict[bytes, tuple[_Held, tuple[bytes, ...]]] = {}
        uris: set[str] = set()

        def commit() -> None:
            if batch:
                held = list(batch.values())
                terms = self.store.put_many((e.stored() for e, _ in held),
                                            [h for _, ev in held for h in ev])
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

    def _check_peer_limits(self, aid: bytes, path: tuple[bytes, ...], peer: bytes,
                           pending: int = 0) -> None:
        """The limits on what one peer may make this gateway learn (Section 10.7, BGP's
        maximum-prefix): a path longer than ``max_peer_path``, or a record beyond
        ``max_peer_records`` through ``peer`` (``pending`` more are decided, not yet
        committed), raises :class:`ProtocolError` (PATH_TOO_LONG, MAX_RECORDS_EXCEEDED),
        which closes the session with NOTIFY."""
        from ..protocol.machine import ProtocolError  # protocol imports this module
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
        self.store.set_routes([_route_row(cur.agent_id, best)])
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
            self.store.delete_many(c.agent_id for c in gone)
            for c in gone:
                self._uninstall(c.agent_id)
        return TableChanges(purged=tuple(VersionedId(c.agent_id, c.version) for c in gone))

    def drop_peer(self, peer: bytes) -> TableChanges:
        """The session with ``peer`` ended: drop every route through it (one commit)."""
        return self._drop_routes([VersionedId(a, MAX_VERSION) for a in self.routes.via(peer)],
                                 peer)

    def routes_via(self, peer: bytes) -> list[bytes]:
        """The Agent IDs with a route through ``peer``."""
        return list(self.routes.via(peer))

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
                                  [c.agent_id for c in gone])
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

    def agent_ids_unordered(self) -> list[bytes]:
        """Every agent id held, in no particular order (a snapshot)."""
        return list(self._records)

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
