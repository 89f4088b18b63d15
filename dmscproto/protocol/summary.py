"""Capability summaries (draft-dmsc-protocol-00, Section 6.9).

Per peer domain a gateway either replicates records (UPDATE, DIGEST: Sections 6.5, 6.6)
or exchanges only summaries.  Either way each gateway originates, towards every peer of
another domain, a SUMMARY of its own domain: a Bloom filter of the capability terms of
the records of its domain it holds and exports to that peer's domain, with its Gateway
ID as origin, a TIMESTAMP as version and a PATH_VECTOR.  A gateway keeps, per origin,
the summary each peer advertised (the newest TIMESTAMP, then the shortest path, then
the lowest next hop is best) and re-advertises the best one to its other peers with
its own Gateway ID appended, under the transit rule of Section 6.3 applied to the
summary's domain, never to a peer on its path; a summary whose path holds the receiver
is a loop and withdraws the sender's.  A SUMMARY without SUMMARY_FILTER withdraws
the origin's summary via that peer; a session that ends withdraws all of them.

The filter (:class:`Bloom`): the terms of a record are ``s:`` + each skill id, ``t:``
+ each tag case-folded and ``w:`` + each word of its skills (Section 5.2.1: ids,
names, descriptions and tags), as UTF-8.  For ``m`` bits and ``k`` hash functions, a
term sets the bits ``(h1 + i * h2) mod m`` for ``i`` in ``0..k-1``, where ``h1`` and
``h2`` are the first and second 8 octets of its SHA-256 as big-endian integers, ``h2``
with its lowest bit set; bit ``b`` is ``0x80 >> (b % 8)`` of octet ``b // 8``.  With
``n`` distinct terms a sender takes ``m`` the smallest power of two at least
``max(64, 10 n)``, at most 65536, and ``k = floor(m * 693 / (1000 n) + 1/2)`` within
1..16 (1 when ``n`` is 0).  A query may match a summary (:func:`may_match`) unless its
domain is another, one of its skills is absent, or, for a query matched on tags and
intent words only (Section 5.2.1, filter step), none of them is present.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum

from ..codec.messages import Summary
from ..codec.pdu import encode
from ..codec.registry import (
    ID_SIZE,
    MAX_PDU_SIZE,
    SUMMARY_BITS_PER_ELEMENT,
    SUMMARY_MAX_BITS,
    SUMMARY_MAX_HASHES,
    SUMMARY_MIN_BITS,
    TLV_HEADER_SIZE,
    ConstraintOp,
    Scope,
    timer,
)
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..codec.wire import CapabilitySummary, CapabilitySummaryFormat
from ..gateway.core import GatewayCore
from ..gateway.index import IndexTerms, words
from ..gateway.routing import MAX_PATH
from .machine import Handle, Outbox, Refusal
from .peering import ExportFor

#: Octets of SUMMARY_FILTER before the filter: hash functions and record count.
SUMMARY_FILTER_HEAD = CapabilitySummaryFormat.subcons[0].sizeof() \
    + CapabilitySummaryFormat.subcons[1].sizeof()


def record_terms(record: CapabilityRecord) -> set[str]:
    """The summary terms of one record (module doc)."""
    t = IndexTerms.of(record)
    return ({"s:" + s for s in t.skills} | {"t:" + s for s in t.tags}
            | {"w:" + s for s in t.words})


def _indices(term: str, hashes: int, bits: int) -> Iterable[int]:
    d = hashlib.sha256(term.encode()).digest()
    h1, h2 = int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big") | 1
    return ((h1 + i * h2) % bits for i in range(hashes))


def filter_size(n: int) -> tuple[int, int]:
    """(bits, hash functions) for ``n`` distinct terms (module doc)."""
    bits = SUMMARY_MIN_BITS
    while bits < n * SUMMARY_BITS_PER_ELEMENT and bits < SUMMARY_MAX_BITS:
        bits *= 2
    if n == 0:
        return bits, 1
    return bits, max(1, min(SUMMARY_MAX_HASHES, (bits * 693 + 500 * n) // (1000 * n)))


@dataclass(frozen=True, slots=True)
class Bloom:
    """A capability summary's filter (module doc)."""

    value: CapabilitySummary

    @classmethod
    def of(cls, records: Iterable[CapabilityRecord]) -> Bloom:
        terms: set[str] = set()
        count = 0
        for r in records:
            terms |= record_terms(r)
            count += 1
        bits, hashes = filter_size(len(terms))
        out = bytearray(bits // 8)
        for term in terms:
            for b in _indices(term, hashes, bits):
                out[b >> 3] |= 0x80 >> (b & 7)
        return cls(CapabilitySummary(hashes, count, bytes(out)))

    def fold(self, octets: int) -> Bloom:
        """The filter halved (bit ``b`` of the result is bit ``b`` or ``b + m/2`` of this
        one) until it takes at most ``octets`` octets or is as small as allowed: the
        same terms test present, since ``m/2`` divides ``m``."""
        bits = self.value.bits
        while len(bits) > octets and len(bits) % 16 == 0:
            half = len(bits) // 2
            bits = bytes(a | b for a, b in zip(bits[:half], bits[half:], strict=True))
        return Bloom(replace(self.value, bits=bits))

    def __contains__(self, term: str) -> bool:
        v = self.value
        return all(v.bits[b >> 3] & (0x80 >> (b & 7))
                   for b in _indices(term, v.hashes, 8 * len(v.bits)))


def _tags_and_words_only(q: DiscoveryQuery) -> bool:
    """Whether the query has no mandatory term (Section 5.2.1, filter step)."""
    return not (q.skills or q.input_modes or q.output_modes or q.domain is not None
                or any(c.op not in (ConstraintOp.NE, ConstraintOp.EXISTS) or c.value
                       for c in q.constraints))


def may_match(query: DiscoveryQuery, domain: str, bloom: Bloom) -> bool:
    """Whether a record summarized by ``bloom`` (of ``domain``) may match ``query``."""
    if query.domain is not None and query.domain != domain:
        return False
    if not all("s:" + s in bloom for s in query.skills):
        return False
    if _tags_and_words_only(query) and (query.tags or query.intent):
        ws = words(query.intent) if query.intent else set()
        return any("t:" + t.casefold() in bloom for t in query.tags) \
            or any("w:" + w in bloom for w in ws)
    return True


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
    (module doc).  One-way messages only, no transaction: it is a table, not a machine.
    A change of the domain's records is originated at most once per ``interval``."""

    def __init__(self, outbox: Outbox, core: GatewayCore, *, export_for: ExportFor,
                 accepts: SummaryCheck = lambda _h, _d: None,
                 transit: SummaryTransit = lambda _p, _d: True,
                 pdu_limit: Callable[[Handle], int] = lambda _h: MAX_PDU_SIZE,
                 interval: float = timer("SUMMARY_INTERVAL"),
                 repeat: float = timer("DIGEST_INTERVAL")) -> None:
        self.outbox = outbox
        self.pdu_limit = pdu_limit
        self.core = core
        self.export_for = export_for
        self.accepts = accepts
        self.transit = transit
        self.interval = interval
        self.table = SummaryTable(core.gateway_id)
        self.peers: dict[bytes, SummaryPeer] = {}
        #: The peers each origin's summary is advertised to (to withdraw it from them).
        self._told: dict[bytes, set[bytes]] = {}
        self._version = 0
        self._sent_at = -math.inf
        #: When the pending origination is due (None: nothing changed).
        self.due: float | None = None
        #: Datagram peers (their PDU limit is below MAX_PDU_SIZE), where a SUMMARY may be
        #: lost: every summary advertised to them is repeated every ``repeat`` seconds.
        self.repeat = repeat
        self.next_repeat: float | None = None

    # --- inputs -------------------------------------------------------------------------
    def up(self, peer: SummaryPeer, now: float) -> None:
        """A session was established: send it our summary and every best summary."""
        self.peers[peer.gateway_id] = peer
        if self.next_repeat is None and self._lossy(peer):
            self.next_repeat = now + self.repeat
        if peer.domain != self.core.domain:
            self._originate_to(peer, self._version or self._next_version(now), now)
        for origin in self.table.origins():
            self._advertise(origin, peer, None)

    def down(self, gateway_id: bytes, now: float) -> None:
        """A session ended: its summaries are withdrawn."""
        if self.peers.pop(gateway_id, None) is None:
            return
        for told in self._told.values():
            told.discard(gateway_id)
        before = {o: self.table.best(o) for o in self.table.origins()}
        for origin in self.table.drop_peer(gateway_id):
            self._propagate(origin, before[origin])

    def receive(self, peer: SummaryPeer, msg: Summary, now: float) -> Refusal | None:
        """A SUMMARY on ``peer``'s session; returns the refusal of one it may not
        advertise (not learned; a withdrawal is never refused)."""
        if msg.summary is not None:
            refused = self.accepts(peer.handle, msg.domain)
            if refused is not None:
                return refused
        before = self.table.best(msg.gateway_id)
        if msg.gateway_id != self.core.gateway_id and self.table.learn(msg, peer.gateway_id):
            self._propagate(msg.gateway_id, before)
        return None

    def changed(self, now: float) -> None:
        """The domain's records changed: originate within ``interval``."""
        if self.due is None:
            self.due = max(now, self._sent_at + self.interval)

    def get_timer(self) -> float | None:
        return self.due if self.next_repeat is None or (
            self.due is not None and self.due < self.next_repeat) else self.next_repeat

    def handle_timer(self, now: float) -> None:
        if self.next_repeat is not None and now >= self.next_repeat:
            lossy = [p for p in self.peers.values() if self._lossy(p)]
            self.next_repeat = now + self.repeat if lossy else None
            for peer in lossy:
                self.peers.pop(peer.gateway_id)
                self.up(peer, now)  # our summary (same version) and every best one again
        if self.due is not None and now >= self.due:
            self.due = None
            self._sent_at = now
            version = self._next_version(now)
            built: dict[str, Bloom] = {}
            for peer in self.peers.values():
                if peer.domain != self.core.domain:
                    self._originate_to(peer, version, now, built)

    # --- output -------------------------------------------------------------------------
    def _lossy(self, peer: SummaryPeer) -> bool:
        return self.pdu_limit(peer.handle) < MAX_PDU_SIZE

    def _next_version(self, now: float) -> int:
        self._version = max(self._version + 1, int(now * 1000))
        return self._version

    def _originate_to(self, peer: SummaryPeer, version: int, now: float,
                      built: dict[str, Bloom] | None = None) -> None:
        """Our domain's summary, as exported to ``peer``'s domain (``built``: the
        summaries built already, by peer domain)."""
        bloom = None if built is None else built.get(peer.domain)
        if bloom is None:  # the domain's records only, from the index (not a full scan)
            own = self.core.discover(DiscoveryQuery(), Scope.DOMAIN, len(self.core), now,
                                     self.export_for(peer.domain))
            bloom = Bloom.of(r.record.record for r in own)
            if built is not None:
                built[peer.domain] = bloom
        self._send(peer, Summary(
            gateway_id=self.core.gateway_id, timestamp=version,
            path=(self.core.gateway_id,), domain=self.core.domain, summary=bloom.value))

    def _propagate(self, origin: bytes, before: SummaryRoute | None) -> None:
        for peer in self.peers.values():
            self._advertise(origin, peer, before)

    def _advertise(self, origin: bytes, peer: SummaryPeer,
                   before: SummaryRoute | None) -> None:
        """The best summary of ``origin`` to ``peer`` (never to a peer on its path, nor
        against the transit rule), or its withdrawal from a peer it was advertised to."""
        best = self.table.best(origin)
        told = self._told.setdefault(origin, set())
        if best is not None and best.domain != self.core.domain \
                and peer.gateway_id not in best.path \
                and self.transit(peer.domain, best.domain):
            told.add(peer.gateway_id)
            self._send(peer, Summary(
                gateway_id=origin, timestamp=best.timestamp,
                path=(*best.path, self.core.gateway_id), domain=best.domain,
                summary=best.bloom.value))
        elif peer.gateway_id in told:
            told.discard(peer.gateway_id)
            gone = best or before
            assert gone is not None
            self._send(peer, Summary(
                gateway_id=origin, timestamp=gone.timestamp,
                path=(*gone.path, self.core.gateway_id), domain=gone.domain))
        if not told:
            del self._told[origin]

    def _send(self, peer: SummaryPeer, msg: Summary) -> None:
        """Send ``msg``, its filter folded to fit the peer's PDU limit (Section 6.9)."""
        if msg.summary is not None:
            room = self.pdu_limit(peer.handle) - len(encode(replace(msg, summary=None))) \
                - TLV_HEADER_SIZE - SUMMARY_FILTER_HEAD
            msg = replace(msg, summary=Bloom(msg.summary).fold(room).value)
        self.outbox.send(peer.handle, msg)
