"""Gateway sync on an ESTABLISHED peer session (draft-dmsc-protocol-00, Sections 6.5, 6.6).

Each direction of a session is one ordered stream of *sequenced* messages (UPDATE and
DIGEST, numbered by SEQUENCE from 0 modulo 2**32): the receiver applies them strictly in
that order on every transport, holding one that arrives early until the gap before it
fills (or REORDER_TIMEOUT passes), and acknowledges what it applied with SYNC_ACK; the
sender keeps at most SYNC_WINDOW UPDATEs beyond the acknowledged ones (Section 6.5.1).

:class:`~.sync_out.SyncOut` is the sending half.  It remembers what it advertised to the peer (the
records' versions in a :class:`~dmscproto.codec.digest.DigestTree` and their paths), so
it never sends the same ADVERTISE twice, withdraws only what it advertised, and answers
the peer's DIGEST_REQUEST from that tree.  When the session is established it sends its
whole exportable table (bulk sync), packed into as many UPDATEs as needed, then a DIGEST
that closes the table.  Changes are queued per record (a record changed twice before it
is sent is sent once), ADVERTISEs of one record are at least MIN_ADVERTISEMENT_INTERVAL
apart, WITHDRAW and PURGE go at once, and every message fits the transport's PDU limit.

:class:`~.sync_in.SyncIn` is the receiving half.  It mirrors in its own tree what the peer
advertised (records it refused included, so a refused record is not requested again
until its version changes), compares the peer's DIGESTs with it, and on a difference
walks the peer's tree with DIGEST_REQUEST down to the leaves that differ, then asks for
the records it lacks with SYNC_REQUEST, asking again for those an answer left out.
:class:`PeerSync` puts both halves on one session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..codec.changes import TableChanges
from ..codec.messages import Message
from ..codec.registry import MAX_PDU_SIZE, limit, timer
from .machine import Handle, Outbox, TransactionIds, earliest
from .ports import ExportFilter, SyncLink, SyncTable
from .registration import RecordVerifier
from .sync_in import SyncIn
from .sync_in_inputs import Purged
from .sync_out import SyncOut
from .sync_out_inputs import Changed, Start, TableSent


@dataclass
class SyncPeer:
    """The session gateway sync runs on (a :class:`~.ports.SyncLink`)."""

    handle: Handle
    gateway_id: bytes
    domain: str
    #: Sends a message on the session (the session tracks it for its keepalive timer).
    send: Callable[[Message, float], None]
    #: The export filter towards this peer (None: export everything).
    allow: ExportFilter = None
    #: The largest PDU the session's transport carries (Section 9).
    pdu_limit: int = MAX_PDU_SIZE


class PeerSync:
    """Both halves of gateway sync on one ESTABLISHED session (module doc)."""

    def __init__(self, outbox: Outbox, table: SyncTable, link: SyncLink,
                 txids: TransactionIds, verifier: RecordVerifier, *,
                 digest_interval: float = timer("DIGEST_INTERVAL"),
                 request_timeout: float = timer("REQUEST_TIMEOUT"),
                 min_interval: float = timer("MIN_ADVERTISEMENT_INTERVAL"),
                 slice_clock: Callable[[], float] | None = None,
                 learn_slice: float = limit("LEARN_SLICE"),
                 work_slice: float = limit("WORK_SLICE"),
                 learn_budget: Callable[[float], float] | None = None) -> None:
        self.out = SyncOut(outbox, table, link, txids, digest_interval=digest_interval,
                           min_interval=min_interval, slice_clock=slice_clock,
                           work_slice=work_slice)
        self.inc = SyncIn(outbox, table, link, txids, verifier,
                          request_timeout=request_timeout, slice_clock=slice_clock,
                          learn_slice=learn_slice, learn_budget=learn_budget)

    def start(self, now: float) -> None:
        """The session is established: send the table (bulk sync), then a DIGEST."""
        self.out.run(Start(), now)
        self._settle(now)

    def announce(self, changes: TableChanges, now: float) -> None:
        """Records changed (local call): tell the peer what concerns it."""
        if changes:
            if changes.purged:
                self.inc.run(Purged(changes.purged), now)
            self.out.run(Changed(changes), now)
            self._settle(now)

    def receive(self, msg: Message, now: float) -> None:
        """A sync message on the session; :class:`ProtocolError` for any other (the
        session answers NOTIFY)."""
        if msg.TYPE in SyncOut.MESSAGE_INPUTS:
            self.out.receive(msg, now)
        else:
            self.inc.receive(msg, now)
        self._settle(now)

    def _settle(self, now: float) -> None:
        while (held := self.inc.next_held()) is not None:
            self.inc.receive(held, now)
        if self.out.table_sent:
            self.out.run(TableSent(), now)

    def shed(self, more: Callable[[], bool]) -> bool:
        """Free both halves' memory of an ended session, a part at a time until
        ``more()`` says no; whether all is freed."""
        return self.out.shed(more) and self.inc.tree.shed(more)

    def get_timer(self) -> float | None:
        return earliest(self.out.get_timer(), self.inc.get_timer())

    def handle_timer(self, now: float) -> None:
        for inp in list(self.inc.due(now)):
            self.inc.run(inp, now)
        for due in list(self.out.due(now)):
            self.out.run(due, now)
        self._settle(now)
