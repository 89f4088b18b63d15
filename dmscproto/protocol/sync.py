"""Gateway sync on an ESTABLISHED peer session (draft-dmsc-protocol-00, Sections 6.3-6.6).

UPDATE advertises records (with their version and path) and withdraws them; DIGEST, every
DIGEST_INTERVAL and at once when the session is established, summarises the records a
gateway exports to the peer, and the peer pulls only what differs with SYNC_REQUEST,
answered by UPDATE.  Loops are prevented by the path vector: the core never accepts a
record whose path holds its own id, appends its own id when advertising, never advertises
a record to a peer on its path, and instead withdraws from that peer a record whose best
route now runs through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from ..codec.digest import summarize
from ..codec.messages import Digest, Message, SyncRequest, Update
from ..codec.registry import (
    HEADER_SIZE,
    ID_SIZE,
    MAX_PDU_SIZE,
    TLV_HEADER_SIZE,
    MessageType,
    timer,
)
from ..codec.values import CapabilityRecord
from ..codec.wire import (
    Advertisement,
    DigestEntry,
    DigestSummary,
    DigestSummaryFormat,
    VersionedId,
)
from ..gateway.core import GatewayCore
from .events import RecordRefused, TableChanged
from .machine import Handle, Machine, Outbox, TransactionIds, earliest, expect
from .registration import RecordVerifier

#: Digest entries in one DIGEST (one DIGEST_ENTRIES TLV next to the DIGEST_SUMMARY) and
#: agent ids in one SYNC_REQUEST (one AGENT_IDS TLV), so that each fits into a PDU.
ENTRIES_PER_PDU = (MAX_PDU_SIZE - HEADER_SIZE - (TLV_HEADER_SIZE + DigestSummaryFormat.sizeof())
                   - (TLV_HEADER_SIZE + 2)) // DigestEntry.sizeof()
IDS_PER_PDU = (MAX_PDU_SIZE - HEADER_SIZE - (TLV_HEADER_SIZE + 2)) // ID_SIZE
#: Room for ADVERTISE and WITHDRAW TLVs in one UPDATE.
_UPDATE_BUDGET = MAX_PDU_SIZE - HEADER_SIZE
_WITHDRAW_SIZE = TLV_HEADER_SIZE + DigestEntry.sizeof()


def _ad_size(ad: Advertisement) -> int:
    """Octets of an ADVERTISE TLV: version (8), path count (1), path, record (Section 6.5)."""
    return TLV_HEADER_SIZE + 8 + 1 + ID_SIZE * len(ad.path) + len(ad.record.encode())


def pack_updates(ads: Sequence[Advertisement], withdraw: Sequence[VersionedId],
                 txids: Callable[[], int]) -> list[Update]:
    """ADVERTISEs and WITHDRAWs in as few UPDATEs as fit into PDUs (none if empty)."""
    out: list[Update] = []
    batch: list[Advertisement] = []
    gone: list[VersionedId] = []
    used = 0

    def flush() -> None:
        nonlocal batch, gone, used
        if batch or gone:
            out.append(Update(transaction_id=txids(), advertise=tuple(batch),
                              withdraw=tuple(gone)))
        batch, gone, used = [], [], 0

    for ad in ads:
        size = _ad_size(ad)
        if used + size > _UPDATE_BUDGET:
            flush()
        batch.append(ad)
        used += size
    for vid in withdraw:
        if used + _WITHDRAW_SIZE > _UPDATE_BUDGET:
            flush()
        gone.append(vid)
        used += _WITHDRAW_SIZE
    flush()
    return out


@dataclass
class SyncPeer:
    """The session a sync machine runs on."""

    handle: Handle
    gateway_id: bytes
    domain: str
    #: Sends a message on the session (the session tracks it for its keepalive timer).
    send: Callable[[Message, float], None]
    #: The export filter towards this peer (None: export everything).
    allow: Callable[[CapabilityRecord], bool] | None = None


class SyncState(Enum):
    READY = "READY"
    PULLING = "PULLING"


class SyncInput(Enum):
    UPDATE = "UPDATE"
    UPDATE_ANSWER = "UPDATE [answers our SYNC_REQUEST]"
    DIGEST_PARTIAL = "DIGEST [more runs to come]"
    DIGEST_SAME = "DIGEST [summary equal]"
    DIGEST_STALE = "DIGEST [differs, nothing to pull]"
    DIGEST_PULL = "DIGEST [differs, records to pull]"
    SYNC_REQUEST = "SYNC_REQUEST"
    ERROR = "ERROR [answers our SYNC_REQUEST]"
    CHANGE = "announce()"
    DIGEST_DUE = "digest timer"
    PULL_TIMEOUT = "request timer"


class SyncAction(Enum):
    APPLY = ("learn the ADVERTISEs that pass the record check (each refused one is "
             "reported, RecordRefused), apply WITHDRAWs; report TableChanged")
    APPLY_ANSWER = "learn ADVERTISEs (as APPLY); stop request timer"
    COLLECT = "keep the run of entries"
    NOTHING = "nothing (in sync)"
    DROP_STALE = ("remove routes through the peer for ids absent from the entries, except "
                  "those learned since the previous complete DIGEST")
    PULL = ("remove stale routes; send SYNC_REQUEST for ids unknown or older here; "
            "start request timer")
    ANSWER_SYNC = "answer UPDATE with an ADVERTISE per requested record exported to the peer"
    END_PULL = "stop request timer (the next DIGEST repeats what is missing)"
    SEND_UPDATE = ("send UPDATE: ADVERTISE changed records, WITHDRAW removed ones and ones "
                   "whose best path now holds the peer")
    SEND_DIGEST = "send DIGEST of the records exported to the peer; restart digest timer"


_S, _I, _A = SyncState, SyncInput, SyncAction


class PeerSync(Machine):
    """Record exchange with one ESTABLISHED peer (Sections 6.5, 6.6)."""

    NAME = "gateway-sync"
    TITLE = "Gateway sync on an established session"
    State, Input, Action = SyncState, SyncInput, SyncAction
    INITIAL = SyncState.READY
    TIMERS = ("DIGEST_INTERVAL", "REQUEST_TIMEOUT")
    MESSAGE_INPUTS = {
        MessageType.UPDATE: (_I.UPDATE, _I.UPDATE_ANSWER),
        MessageType.DIGEST: (_I.DIGEST_PARTIAL, _I.DIGEST_SAME, _I.DIGEST_STALE,
                             _I.DIGEST_PULL),
        MessageType.SYNC_REQUEST: (_I.SYNC_REQUEST,),
        MessageType.ERROR: (_I.ERROR,),
    }
    TABLE = {
        **{(s, _I.UPDATE): (_A.APPLY, s) for s in _S},
        (_S.PULLING, _I.UPDATE_ANSWER): (_A.APPLY_ANSWER, _S.READY),
        **{(s, _I.DIGEST_PARTIAL): (_A.COLLECT, s) for s in _S},
        **{(s, _I.DIGEST_SAME): (_A.NOTHING, s) for s in _S},
        **{(s, _I.DIGEST_STALE): (_A.DROP_STALE, s) for s in _S},
        (_S.READY, _I.DIGEST_PULL): (_A.PULL, _S.PULLING),
        (_S.PULLING, _I.DIGEST_PULL): (_A.DROP_STALE, _S.PULLING),
        **{(s, _I.SYNC_REQUEST): (_A.ANSWER_SYNC, s) for s in _S},
        (_S.PULLING, _I.ERROR): (_A.END_PULL, _S.READY),
        (_S.PULLING, _I.PULL_TIMEOUT): (_A.END_PULL, _S.READY),
        **{(s, _I.CHANGE): (_A.SEND_UPDATE, s) for s in _S},
        **{(s, _I.DIGEST_DUE): (_A.SEND_DIGEST, s) for s in _S},
    }

    def __init__(self, outbox: Outbox, core: GatewayCore, peer: SyncPeer,
                 txids: TransactionIds, verifier: RecordVerifier, *,
                 digest_interval: float = timer("DIGEST_INTERVAL"),
                 request_timeout: float = timer("REQUEST_TIMEOUT")) -> None:
        super().__init__(outbox)
        self.core = core
        self.peer = peer
        self._txids = txids
        self.verifier = verifier
        self.digest_interval = digest_interval
        self.request_timeout = request_timeout
        self.next_digest: float | None = None
        self._pending: tuple[int, float] | None = None      # (transaction id, deadline)
        self._runs: tuple[DigestSummary, list[VersionedId]] | None = None
        self._want: list[bytes] = []
        self._stale: list[VersionedId] = []
        #: Agent ids learned from the peer since the last complete DIGEST: the next DIGEST
        #: may have been generated before the UPDATE that advertised them (Section 6.6).
        self._fresh: set[bytes] = set()
        self._change: tuple[Sequence[bytes], Sequence[VersionedId]] = ((), ())

    # --- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """The session is established: send a DIGEST at once (the peer pulls what it lacks)."""
        self.step(_I.DIGEST_DUE, now)

    def announce(self, advertised: Iterable[bytes], withdrawn: Iterable[VersionedId],
                 now: float) -> None:
        """Records changed locally (local call): tell the peer."""
        self._change = (tuple(advertised), tuple(withdrawn))
        if self._change != ((), ()):
            self.step(_I.CHANGE, now)

    def receive(self, msg: Message, now: float) -> None:
        """UPDATE, DIGEST, SYNC_REQUEST or ERROR on the session; :class:`ProtocolError`
        otherwise (the session answers NOTIFY)."""
        self.step(self._classify(msg), now, msg)

    def _classify(self, msg: Message) -> SyncInput:
        pending = self._pending is not None and msg.transaction_id == self._pending[0]
        if msg.TYPE is MessageType.UPDATE:
            return _I.UPDATE_ANSWER if pending else _I.UPDATE
        if msg.TYPE is MessageType.SYNC_REQUEST:
            return _I.SYNC_REQUEST
        if msg.TYPE is MessageType.ERROR and pending:
            return _I.ERROR
        if msg.TYPE is MessageType.DIGEST:
            return self._compare(expect(msg, Digest))
        raise self.unexpected(msg)

    def _compare(self, d: Digest) -> SyncInput:
        """The guard on DIGEST: collect runs, then compare with the routes through the peer."""
        if self._runs is None or self._runs[0] != d.summary:
            self._runs = (d.summary, [])
        collected = self._runs[1]
        for run in d.entries:
            collected.extend(run)
        if len(collected) < d.summary.count:
            return _I.DIGEST_PARTIAL
        self._runs = None
        fresh, self._fresh = self._fresh, set()
        mine = self.routes_via_peer()
        if summarize(mine) == d.summary:
            return _I.DIGEST_SAME
        listed = {e.agent_id for e in collected}
        # A route the DIGEST omits goes only if it was held at the previous DIGEST: one
        # learned since may be newer than this DIGEST's snapshot (QUIC streams and
        # datagrams are not ordered); the next DIGEST settles it.
        self._stale = [e for e in mine if e.agent_id not in listed and e.agent_id not in fresh]
        self._want = self.core.missing_from(collected)
        return _I.DIGEST_PULL if self._want else _I.DIGEST_STALE

    def routes_via_peer(self) -> list[VersionedId]:
        """(agent id, version) of the routes through the peer, sorted by agent id."""
        out = []
        for aid in self.core.routes.via(self.peer.gateway_id):
            for r in self.core.routes.routes(aid):
                if r.next_hop == self.peer.gateway_id:
                    out.append(VersionedId(aid, r.version))
        return sorted(out, key=lambda e: e.agent_id)

    def get_timer(self) -> float | None:
        return earliest(self.next_digest, None if self._pending is None else self._pending[1])

    def handle_timer(self, now: float) -> None:
        if self._pending is not None and now >= self._pending[1]:
            self.step(_I.PULL_TIMEOUT, now)
        if self.next_digest is not None and now >= self.next_digest:
            self.step(_I.DIGEST_DUE, now)

    # --- actions ------------------------------------------------------------------------------
    def _apply(self, now: float, msg: Message | None) -> None:
        up = expect(msg, Update)
        peer = self.peer.gateway_id
        learned = []
        for ad in up.advertise:
            aid = ad.record.record.agent_id
            refused = self.verifier(self.peer.handle, ad.record, now)
            if refused is not None:
                self.outbox.emit(RecordRefused(self.peer.handle, aid, refused.code,
                                               refused.diagnostic))
            elif self.core.learn(ad, peer, now):
                learned.append(aid)
                self._fresh.add(aid)
        self._report(learned, [w for w in up.withdraw
                               if self.core.withdraw(w.agent_id, w.version, peer)])

    def _report(self, changed: Iterable[bytes], dropped: Iterable[VersionedId]) -> None:
        """Report what changed: records still held have a new version or best route,
        the others are gone."""
        advertised = list(changed)
        withdrawn = []
        for vid in dropped:
            if vid.agent_id in self.core:
                advertised.append(vid.agent_id)
            else:
                withdrawn.append(vid)
        if advertised or withdrawn:
            self.outbox.emit(TableChanged(self.peer.handle, tuple(advertised),
                                          tuple(withdrawn)))

    def _apply_answer(self, now: float, msg: Message | None) -> None:
        self._pending = None
        self._apply(now, msg)

    def _collect(self, now: float, msg: Message | None) -> None:
        """The runs are kept by the guard."""

    def _nothing(self, now: float, msg: Message | None) -> None:
        """In sync."""

    def _drop_stale(self, now: float, msg: Message | None) -> None:
        peer = self.peer.gateway_id
        self._report((), [v for v in self._stale
                          if self.core.withdraw(v.agent_id, v.version, peer)])

    def _pull(self, now: float, msg: Message | None) -> None:
        self._drop_stale(now, msg)
        txid = self._txids()
        self._pending = (txid, now + self.request_timeout)
        self.peer.send(SyncRequest(transaction_id=txid,
                                   agent_ids=(tuple(self._want[:IDS_PER_PDU]),)), now)

    def _answer_sync(self, now: float, msg: Message | None) -> None:
        req = expect(msg, SyncRequest)
        ids = [aid for run in req.agent_ids for aid in run]
        ads = self.core.advertisements_for(ids, self.peer.gateway_id, self.peer.allow)
        # What fits into one UPDATE; the requester asks again for the rest (Section 6.6.2).
        first = pack_updates(ads, (), lambda: req.transaction_id)[:1]
        self.peer.send(first[0] if first else Update(transaction_id=req.transaction_id), now)

    def _end_pull(self, now: float, msg: Message | None) -> None:
        self._pending = None

    def _send_update(self, now: float, msg: Message | None) -> None:
        ids, withdrawn = self._change
        ads = self.core.advertisements_for(ids, self.peer.gateway_id, self.peer.allow)
        sent = {ad.record.record.agent_id for ad in ads}
        # Held but not advertised to this peer (its id is on the path, or policy): the
        # peer must not keep a route through us.
        poisoned = []
        for aid in ids:
            held = self.core.get(aid)
            if aid not in sent and held is not None:
                poisoned.append(VersionedId(aid, held.version))
        for up in pack_updates(ads, [*withdrawn, *poisoned], self._txids):
            self.peer.send(up, now)

    def _send_digest(self, now: float, msg: Message | None) -> None:
        self.next_digest = now + self.digest_interval
        entries = sorted((VersionedId(ad.record.record.agent_id, ad.version) for ad in
                          self.core.advertisements_for(self.core.agent_ids(),
                                                       self.peer.gateway_id, self.peer.allow)),
                         key=lambda e: e.agent_id)
        summary = summarize(entries)
        for i in range(0, max(len(entries), 1), ENTRIES_PER_PDU):
            run = tuple(entries[i:i + ENTRIES_PER_PDU])
            self.peer.send(Digest(transaction_id=self._txids(), summary=summary,
                                  entries=(run,) if run else ()), now)
