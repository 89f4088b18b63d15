"""The gateway's registry: its records, capability index and routing table in memory,
registration and discovery (draft-dmsc-protocol-00, Sections 5.1, 5.2).

:class:`Registry` keeps the records in a :class:`RegistryStore` (the durable copy) and
mirrors them in memory: the records, a :class:`CapabilityIndex` for discovery and a
:class:`RoutingTable`.  Every change is committed to SQLite *first* and applied to
memory only after the commit, so an acknowledged change is durable and a failed write
leaves both copies as they were.  Input is checked before anything is written, so bad
input never costs a stored record.  :class:`~.core.GatewayCore` adds what is learned
from peers and exported to them (Sections 5.3, 6.5, 6.6).

No I/O besides the store, no clock: every method that depends on time takes ``now``
(seconds, the caller's clock).  Signatures, certificates, tokens and export policy are
*not* checked here: the security layer verifies a record, the sender's identity and
its authorization first.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from ..codec.cose import SignedRecord
from ..codec.registry import ID_SIZE, ErrorCode, Scope, timer
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..codec.wire import Result, VersionedId
from ..protocol.ports import RegisterOutcome
from ..protocol.terms import RecordTerms, TermCounts
from .index import CapabilityIndex
from .routing import Route, RoutingTable
from .shards import ShardedDict
from .store import RegistryStore, StoredRecord, StoredRow

#: Agent ids per chunk of :meth:`Registry.agent_id_chunks`.
WALK_CHUNK = 256

#: The DIAGNOSTIC of a REGISTER_ACK whose record was registered already, unchanged (a
#: retry of a REGISTER whose answer the agent did not get, Section 5.1): the lease is
#: extended, nothing else changes.
ALREADY_REGISTERED = "already registered: the same record was committed before"


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


class _Batch:
    """Registrations decided but not yet committed, and what they evict."""

    def __init__(self, core: Registry) -> None:
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


@contextmanager
def _collector_paused(tune_gc: bool) -> Iterator[None]:
    """GC tuning for a restart's load (opt-in: it acts on the whole process).  Nothing
    the load builds forms reference cycles, so the cyclic collector has no work in it:
    it is paused during the load (else its collections rescan the growing heap and
    make the load superlinear), and what was loaded is then moved to the permanent
    generation (``gc.freeze``), so that later collections do not stall a running
    gateway by rescanning the whole registry.  ``gc.freeze`` also freezes every other
    object then alive, garbage cycles included, never to be collected: only a process
    that is one gateway opts in (``dmsc gateway``), and :class:`Registry` freezes only
    when something was loaded.  ``tools/bench/registry.py`` measures both ways."""
    if not tune_gc:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Registry:
    """One gateway's records, index and routing table: registration and discovery
    (module doc)."""

    def __init__(self, gateway_id: bytes, domain: str, store: RegistryStore, *,
                 min_lease: int = int(timer("MIN_LEASE")),
                 max_lease: int = int(timer("MAX_LEASE")),
                 tune_gc: bool = False) -> None:
        if len(gateway_id) != ID_SIZE:
            raise ValueError(f"gateway id must be {ID_SIZE} octets")
        if not 0 < min_lease <= max_lease:
            raise ValueError("need 0 < min_lease <= max_lease")
        self.gateway_id = gateway_id
        self.domain = domain
        self.store = store
        self.min_lease = min_lease
        self.max_lease = max_lease
        self.index = CapabilityIndex(domain)
        self.routes = RoutingTable()
        #: One entry per record: grown a shard at a time (:mod:`.shards`).
        self._records: ShardedDict[bytes, _Held] = ShardedDict()
        self._by_uri: ShardedDict[str, bytes] = ShardedDict()
        self._local: set[bytes] = set()
        self._cold: list[bytes] = []
        #: Lapsed local registrations evicted when another agent took their name,
        #: kept (with their lease end) until :meth:`expire` reports them.
        self._lapsed: list[tuple[float, VersionedId]] = []
        # The restart path: index terms and routes only, no COSE decoding.
        with _collector_paused(tune_gc):
            for row in store.rows():
                self._install(_Held.load(row), row.terms)
            self._cold = list(self._records)
        if tune_gc and self._records:
            gc.freeze()

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

    def agent_id_chunks(self) -> Iterator[list[bytes]]:
        """Every agent id held, in ascending order, WALK_CHUNK at a time, each read from
        the store when reached (after the last id of the one before): a walk in slices
        never copies the whole table in one step, and a record held from the first
        chunk to the last is in exactly one.  In that order a peer learning the table
        writes it in its own store's key order: in hash order (the shards of
        :class:`ShardedDict`) its inserts land all over its table and cost it about
        twice the CPU (60 us a record instead of 29 at 30,000 records)."""
        after = b""
        while ids := self.store.agent_ids_after(after, WALK_CHUNK):
            after = ids[-1]  # the taker may empty the list
            yield ids

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
        stored = self.store.next_expiry()
        if not self._lapsed:  # asked for after every turn that ran the node
            return stored
        ends = [t for t, _ in self._lapsed]
        if stored is not None:
            ends.append(stored)
        return min(ends)

    # --- discovery (Section 5.2) ----------------------------------------------------------
    def discover(self, query: DiscoveryQuery, scope: Scope, max_results: int, now: float,
                 allow: Callable[[CapabilityRecord], bool] | None = None,
                 spend: Callable[[], None] = lambda: None) -> list[Result]:
        """DISCOVER: ranked records (see :mod:`.index` for the filter and the score).

        ``scope`` LOCAL answers from this gateway's registrations, DOMAIN from every
        record of this gateway's domain (a query naming another domain gets nothing),
        FEDERATED from every record it knows; the scope is a mandatory term of the
        filter.  Records whose lease has ended are never returned.  ``allow`` is the
        caller's policy, asked after scoring, before the limit; ``spend`` stops an
        evaluation over its budget (:meth:`.index.CapabilityIndex.match`).
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
                for m in self.index.match(query, max_results, permitted, within, spend)]

    # --- the domain's capability summary (Section 6.9, the SummarySource port) -----------
    @property
    def domain_terms(self) -> TermCounts:
        """The summary terms of the records of this gateway's domain, kept on write."""
        return self.index.domain_terms

    def domain_ids(self) -> list[bytes]:
        """The records of this gateway's domain, a snapshot."""
        return self.index.domain_ids()

    def take_domain_changes(self) -> Collection[bytes]:
        """The records of this gateway's domain changed since the last call."""
        return self.index.take_changes()

    def summary_terms(self, agent_id: bytes) -> RecordTerms | None:
        """The summary terms of a record of this gateway's domain (None: not held)."""
        return self.index.summary_terms(agent_id)

    def domain_record(self, agent_id: bytes) -> CapabilityRecord | None:
        """A record held (decoded on first use)."""
        e = self._records.get(agent_id)
        return None if e is None else e.signed.record
