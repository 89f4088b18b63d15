"""Capability summaries (draft-dmsc-protocol-00, Section 6.9).

Per peer domain a gateway either replicates records (UPDATE, DIGEST: Sections 6.5, 6.6)
or exchanges only summaries.  Either way each domain's summary, a Bloom filter of the
capability terms of its records, is originated once per change by its originator (the
gateway with no established peer of its domain with a lower Gateway ID), with its
Gateway ID as origin, a TIMESTAMP as version and a PATH_VECTOR, and, where the
originator exchanges summaries with some peer domain (``inside``), reaches the other
gateways of its domain, which pass it on (a gateway whose export policy hides records
from a peer domain, or that holds no summary of its domain to pass on, originates its
own towards it).  What a summary covers is kept on write (:mod:`.shown`): originating
one never walks the records.  A gateway keeps, per origin, the
summary each peer advertised (the newest TIMESTAMP, then the shortest path, then the
lowest next hop is best) and re-advertises the best one to its other peers with its own
Gateway ID appended, under the transit rule of Section 6.3 applied to the summary's
domain, never to a peer on its path nor to the summary's own domain, at most once per
SUMMARY_INTERVAL per origin and peer (withdrawals at once); a summary whose path holds
the receiver is a loop and withdraws the sender's.  A SUMMARY without SUMMARY_FILTER
withdraws the origin's summary via that peer; a session that ends withdraws all of them.

The filter and the matching rule are in :mod:`.bloom`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from enum import Enum

from ..codec.messages import Summary
from ..codec.pdu import encode
from ..codec.registry import ID_SIZE, MAX_PATH, MAX_PDU_SIZE, TLV_HEADER_SIZE, limit, timer
from ..codec.values import DiscoveryQuery
from ..codec.wire import CapabilitySummaryFormat
from .bloom import Bloom, may_match
from .machine import Handle, Outbox, Refusal, earliest
from .peering import ExportFor
from .ports import SummarySource
from .shown import ShownTerms

#: Octets of SUMMARY_FILTER before the filter: hash functions and record count.
SUMMARY_FILTER_HEAD = CapabilitySummaryFormat.subcons[0].sizeof() \
    + CapabilitySummaryFormat.subcons[1].sizeof()


@dataclass(frozen=True, slots=True)
class SummaryRoute:
    """One peer's summary of an origin gateway's domain."""

    next_hop: bytes
    timestamp: int
    path: tuple[bytes, ...]
    domain: str
    bloom: Bloom

    def preference(self) -> tuple[int, int, bytes]:
        return (-self.timestamp, len(self.path), self.next_hop)


class SummaryTable:
    """The summaries learned from peers, per origin gateway (module doc)."""

    def __init__(self, self_id: bytes) -> None:
        self.self_id = self_id
        self._routes: dict[bytes, dict[bytes, SummaryRoute]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def best(self, origin: bytes) -> SummaryRoute | None:
        routes = self._routes.get(origin)
        return min(routes.values(), key=SummaryRoute.preference) if routes else None

    def origins(self) -> list[bytes]:
        return sorted(self._routes)

    def learn(self, msg: Summary, from_peer: bytes) -> bool:
        """A SUMMARY from ``from_peer``; returns whether the origin's best changed.
        Ignored: a malformed path (empty, too long, repeated or malformed ids, not
        starting with the origin or not ending with the sender), an older TIMESTAMP
        than the one held via that peer.  A path holding this gateway withdraws."""
        path, origin = msg.path, msg.gateway_id
        if not path or len(path) > MAX_PATH or len(set(path)) != len(path) \
                or any(len(g) != ID_SIZE for g in path) or path[0] != origin \
                or path[-1] != from_peer:
            return False
        held = self._routes.get(origin, {}).get(from_peer)
        if held is not None and held.timestamp > msg.timestamp:
            return False
        before = self.best(origin)
        routes = self._routes.setdefault(origin, {})
        if self.self_id in path or msg.summary is None:
            routes.pop(from_peer, None)
        else:
            routes[from_peer] = SummaryRoute(from_peer, msg.timestamp, path, msg.domain,
                                             Bloom(msg.summary))
        if not routes:
            del self._routes[origin]
        return self.best(origin) != before

    def drop_peer(self, peer: bytes) -> list[bytes]:
        """Forget every summary learned from ``peer``; the origins whose best changed."""
        changed = []
        for origin in list(self._routes):
            routes = self._routes[origin]
            if peer in routes:
                before = self.best(origin)
                del routes[peer]
                if not routes:
                    del self._routes[origin]
                if self.best(origin) != before:
                    changed.append(origin)
        return changed

    def matching(self, query: DiscoveryQuery,
                 keep: Callable[[SummaryRoute], bool] = lambda _r: True
                 ) -> list[SummaryRoute]:
        """The best summary of each origin that may match ``query`` and ``keep``
        accepts, by origin."""
        out = []
        for origin in self.origins():
            r = self.best(origin)
            if r is not None and keep(r) and may_match(query, r.domain, r.bloom):
                out.append(r)
        return out


class Replication(Enum):
    """What a gateway sends a peer domain's gateways (Section 6.9): records, or only
    summaries.  A gateway's own domain always gets records."""

    FULL = "full"
    SUMMARY = "summary"


#: May a peer (its association) advertise summaries of this domain?  A refusal or None.
SummaryCheck = Callable[[Handle, str], Refusal | None]
#: Is a summary of ``domain`` (second) re-advertised to a peer of ``peer_domain`` (first)?
SummaryTransit = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class SummaryPeer:
    """An ESTABLISHED peer session, as the exchange sees it."""

    handle: Handle
    gateway_id: bytes
    domain: str


class SummaryExchange:
    """Originates, learns and re-advertises SUMMARYs on a gateway's peer sessions
    (module doc; Section 6.9).  One-way messages only, no transaction: it is a table,
    not a machine.

    Damping: a change of the domain's records is originated SUMMARY_INTERVAL after it
    (later changes coalesce), and only towards peer domains whose filter it changed; a
    summary of an origin is re-advertised to a peer at most once per SUMMARY_INTERVAL
    (the later best is sent when the interval ends), never twice the same, while a
    withdrawal goes at once, as does the withdrawal of an advertised path whose
    replacement is held back (ghost flushing)."""

    def __init__(self, outbox: Outbox, source: SummarySource, *, export_for: ExportFor,
                 withheld: Callable[[], Collection[bytes]] = lambda: (),
                 inside: bool = False,
                 accepts: SummaryCheck = lambda _h, _d: None,
                 transit: SummaryTransit = lambda _p, _d: True,
                 pdu_limit: Callable[[Handle], int] = lambda _h: MAX_PDU_SIZE,
                 interval: float = timer("SUMMARY_INTERVAL"),
                 own_wait: float = timer("OWN_SUMMARY_WAIT"),
                 repeat: float = timer("DIGEST_INTERVAL"),
                 slice_clock: Callable[[], float] | None = None,
                 slice_s: float = limit("WORK_SLICE")) -> None:
        self.outbox = outbox
        self.pdu_limit = pdu_limit
        self.self_id = source.gateway_id
        self.domain = source.domain
        self.export_for = export_for
        #: Whether our domain's originator sends its summary to our domain's gateways
        #: (the gateway exchanges summaries with some peer domain; Section 6.9).
        self.inside = inside
        #: What each target is shown, kept on write.
        self.shown = ShownTerms(source, export_for, withheld, slice_clock, slice_s)
        self.accepts = accepts
        self.transit = transit
        self.interval = interval
        self.own_wait = own_wait
        self.table = SummaryTable(self.self_id)
        self.peers: dict[bytes, SummaryPeer] = {}
        #: What each peer was last sent of each origin (ours included), to send nothing
        #: twice and withdraw only what was advertised: origin -> peer -> SUMMARY.
        self._told: dict[bytes, dict[bytes, Summary]] = {}
        #: When each (origin, peer) was last advertised, and re-advertisements held back.
        self._sent_at: dict[tuple[bytes, bytes], float] = {}
        self._held: dict[tuple[bytes, bytes], float] = {}
        self._held_heap: list[tuple[float, bytes, bytes]] = []
        #: Our summary per target (a peer domain, or ours for our own gateways).
        self._own: dict[str, Summary] = {}
        self._version = 0
        #: When the pending origination is due (None: nothing changed).
        self.due: float | None = None
        #: Until when a summary of our domain from its originator is awaited before we
        #: originate for lack of one to pass on (None: not awaited; Section 6.9).
        self.await_own: float | None = None
        #: Datagram peers (their PDU limit is below MAX_PDU_SIZE), where a SUMMARY may be
        #: lost: what they were told is repeated every ``repeat`` seconds.
        self.repeat = repeat
        self.next_repeat: float | None = None

    # --- inputs -------------------------------------------------------------------------
    def up(self, peer: SummaryPeer, now: float) -> None:
        """A session was established: send it our summary and every best summary."""
        self.peers[peer.gateway_id] = peer
        if self.next_repeat is None and self._lossy(peer):
            self.next_repeat = now + self.repeat
        if self.inside and peer.domain == self.domain and peer.gateway_id < self.self_id:
            self.await_own = now + self.own_wait
        self.changed(now)  # our summary, once the sessions coming up with it are up
        for origin in self.table.origins():
            self._advertise(origin, peer, now)

    def down(self, gateway_id: bytes, now: float) -> None:
        """A session ended: its summaries are withdrawn."""
        if self.peers.pop(gateway_id, None) is None:
            return
        for origin in list(self._told):
            self._forget(origin, gateway_id)
        for key in [k for k in self._sent_at if k[1] == gateway_id]:
            del self._sent_at[key]
            self._held.pop(key, None)
        for origin in self.table.drop_peer(gateway_id):
            self._propagate(origin, now)
        self._originate(now, fresh=False)  # we may have become our domain's originator

    def receive(self, peer: SummaryPeer, msg: Summary, now: float) -> Refusal | None:
        """A SUMMARY on ``peer``'s session; returns the refusal of one it may not
        advertise (not learned; a withdrawal is never refused)."""
        if msg.summary is not None:
            refused = self.accepts(peer.handle, msg.domain)
            if refused is not None:
                return refused
        if msg.gateway_id != self.self_id and self.table.learn(msg, peer.gateway_id):
            self._propagate(msg.gateway_id, now)
            if msg.domain == self.domain:  # we may now pass it on instead of our own
                self._originate(now, fresh=False)
        return None

    def changed(self, now: float) -> None:
        """The domain's records changed: originate SUMMARY_INTERVAL later."""
        if self.due is None:
            self.due = now + self.interval

    def released(self, agent_ids: Collection[bytes], now: float) -> None:
        """Records withheld after a restart are shown again."""
        self.shown.reconsider(agent_ids)
        self.changed(now)

    def get_timer(self) -> float | None:
        while self._held_heap and self._held.get(
                (self._held_heap[0][1], self._held_heap[0][2])) != self._held_heap[0][0]:
            heapq.heappop(self._held_heap)
        return earliest(self.due, self.next_repeat, self.await_own,
                        self._held_heap[0][0] if self._held_heap else None)

    def handle_timer(self, now: float) -> None:
        if self.next_repeat is not None and now >= self.next_repeat:
            lossy = [p for p in self.peers.values() if self._lossy(p)]
            self.next_repeat = now + self.repeat if lossy else None
            for peer in lossy:  # everything it was told, again
                for told in self._told.values():
                    if peer.gateway_id in told:
                        self._send(peer, told[peer.gateway_id])
        while self._held_heap and self._held_heap[0][0] <= now:
            due, origin, gid = heapq.heappop(self._held_heap)
            if self._held.get((origin, gid)) == due:
                del self._held[(origin, gid)]
                to = self.peers.get(gid)
                if to is not None:
                    self._advertise(origin, to, now)
        if self.due is not None and now >= self.due and self.shown.gather():
            self.due = None
            self._originate(now, fresh=True)
        if self.await_own is not None and now >= self.await_own:
            self.await_own = None
            self._originate(now, fresh=False)

    # --- origination ----------------------------------------------------------------------
    def foreign(self) -> bool:
        """Whether a summary of another domain is held (relayed discovery can use it)."""
        return any(r is not None and r.domain != self.domain
                   for r in map(self.table.best, self.table.origins()))

    def originator(self) -> bool:
        """Whether this gateway originates its domain's summary for its domain: no
        established peer of its domain has a lower Gateway ID (Section 6.9)."""
        return all(p.gateway_id > self.self_id for p in self.peers.values()
                   if p.domain == self.domain)

    def _holds_own(self) -> bool:
        """Whether a summary of our domain from another gateway of it is held."""
        return any(r is not None and r.domain == self.domain
                   for r in map(self.table.best, self.table.origins()))

    def _target(self, peer: SummaryPeer, now: float) -> str | None:
        """What we originate towards ``peer``: the target whose summary it gets (its
        domain, ours for a gateway of our domain), or None.  The originator sends its
        summary to its own domain's gateways, which pass it on, where ``inside``; a
        gateway also originates itself towards a domain it does not show every record,
        or when it holds no summary of its domain to pass on and awaits none from its
        originator any more (Section 6.9)."""
        if peer.domain == self.domain:
            return self.domain if self.inside and self.originator() else None
        if self.originator() or self.export_for(peer.domain) is not None:
            return peer.domain
        if not self._holds_own() and (self.await_own is None or now >= self.await_own):
            return peer.domain
        return None

    def _originate(self, now: float, *, fresh: bool) -> None:
        """Our summary to every peer that should have it, our withdrawal from every peer
        that should not any more.  ``fresh``: rebuilt from the records (a new version
        where the filter changed), else the last one built (built now if none)."""
        changed: set[str] = set()
        built: dict[str, Bloom] = {}
        targets: set[str] = set()
        for peer in list(self.peers.values()):
            target = self._target(peer, now)
            if target is None:
                if peer.gateway_id in self._told.get(self.self_id, {}):
                    self._withdraw(self.self_id, peer)
                continue
            targets.add(target)
            held = self._own.get(target)
            if held is None or (fresh and target not in built):
                if target not in built:
                    bloom = self.shown.bloom(target)
                    if bloom is None:  # still gathered: originated when it is
                        self.due = now if self.due is None else min(self.due, now)
                        continue
                    built[target] = bloom
                if held is None or held.summary != built[target].value:
                    if not changed:
                        self._version = max(self._version + 1, int(now * 1000))
                    changed.add(target)
                    self._own[target] = Summary(
                        gateway_id=self.self_id, timestamp=self._version,
                        path=(self.self_id,), domain=self.domain,
                        summary=built[target].value)
            msg = self._own[target]
            if self._told.get(self.self_id, {}).get(peer.gateway_id) != msg:
                self._told.setdefault(self.self_id, {})[peer.gateway_id] = msg
                self._send(peer, msg)
        self.shown.keep(targets)

    # --- re-advertisement ----------------------------------------------------------------
    def _lossy(self, peer: SummaryPeer) -> bool:
        return self.pdu_limit(peer.handle) < MAX_PDU_SIZE

    def _propagate(self, origin: bytes, now: float) -> None:
        for peer in list(self.peers.values()):
            self._advertise(origin, peer, now)

    def _shows(self, best: SummaryRoute, peer: SummaryPeer) -> bool:
        """Whether ``peer`` is given the best summary (Section 6.9): never on its path;
        one of our domain to our gateways, and to a peer domain we show every record;
        another domain's to a peer of a third domain, under the transit rule."""
        if peer.gateway_id in best.path:
            return False
        if best.domain == self.domain:
            return peer.domain == self.domain or self.export_for(peer.domain) is None
        return peer.domain != best.domain and self.transit(peer.domain, best.domain)

    def _advertise(self, origin: bytes, peer: SummaryPeer, now: float) -> None:
        """The best summary of ``origin`` to ``peer`` (damped: class doc), or its
        withdrawal from a peer it was advertised to."""
        best = self.table.best(origin)
        told = self._told.get(origin, {}).get(peer.gateway_id)
        if best is None or not self._shows(best, peer):
            if told is not None:
                self._withdraw(origin, peer)
            return
        msg = Summary(gateway_id=origin, timestamp=best.timestamp,
                      path=(*best.path, self.self_id), domain=best.domain,
                      summary=best.bloom.value)
        if told == msg:
            return
        key = (origin, peer.gateway_id)
        ready = self._sent_at.get(key, -math.inf) + self.interval
        if now < ready:
            if key not in self._held:
                self._held[key] = ready
                heapq.heappush(self._held_heap, (ready, origin, peer.gateway_id))
            if told is not None and told.timestamp >= best.timestamp:
                self._withdraw(origin, peer)  # not newer: flush the path it holds now
            return
        self._held.pop(key, None)
        self._sent_at[key] = now
        self._told.setdefault(origin, {})[peer.gateway_id] = msg
        self._send(peer, msg)

    def _withdraw(self, origin: bytes, peer: SummaryPeer) -> None:
        told = self._told[origin].pop(peer.gateway_id)
        if not self._told[origin]:
            del self._told[origin]
        self._send(peer, replace(told, summary=None))

    def _forget(self, origin: bytes, gateway_id: bytes) -> None:
        told = self._told[origin]
        told.pop(gateway_id, None)
        if not told:
            del self._told[origin]

    def _send(self, peer: SummaryPeer, msg: Summary) -> None:
        """Send ``msg``, its filter folded to fit the peer's PDU limit (Section 6.9)."""
        if msg.summary is not None:
            room = self.pdu_limit(peer.handle) - len(encode(replace(msg, summary=None))) \
                - TLV_HEADER_SIZE - SUMMARY_FILTER_HEAD
            msg = replace(msg, summary=Bloom(msg.summary).fold(room).value)
        self.outbox.send(peer.handle, msg)
