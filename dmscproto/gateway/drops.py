"""The routes of closed peer sessions, dropped in slices (draft-dmsc-protocol-00,
Section 6.1), and the memory of their sync machines freed in slices.

When a session ends, every route through that peer goes (records whose last route it
was are removed, the others move to their next best route).  Through one peer that can
be the whole table: :class:`PeerDrops` drops them in commits of ``CHUNK`` records,
for at most WORK_SLICE per step of the gateway (the caller's ``more``), so that a closed
session does not stall the gateway.  A session with the same peer established again
before the end stops the drop: its table transfer sweeps the routes it does not
confirm (Section 6.5.3).  What an ended session's sync machines remembered (at
100,000 records, about 20 ms to free at once) is freed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ..codec.changes import TableChanges
from ..codec.wire import VersionedId
from .core import MAX_VERSION, GatewayCore

#: Records dropped in one commit, the least a step does: 32 take about 2 ms (WORK_SLICE)
#: whatever the table size (256 took 13-20 ms in tools/bench/bulk_sync.py's teardown).
CHUNK = 32


class Shed(Protocol):
    def shed(self, more: Callable[[], bool]) -> bool:
        """Free some memory (one part at least) until ``more()`` says no; whether all
        is freed."""


class PeerDrops:
    """The routes still to drop, per peer whose session ended, and the ended sessions'
    sync machines to free (module doc)."""

    def __init__(self) -> None:
        #: Per peer, its routes' Agent IDs still to drop: the ones taken from the
        #: table (a shard at a time: no step copies them all) and the rest of the table's.
        self._left: dict[bytes, tuple[list[bytes], Iterator[list[bytes]]]] = {}
        self._shed: list[Shed] = []

    def __bool__(self) -> bool:
        return bool(self._left or self._shed)

    def free(self, sync: Shed) -> None:
        """An ended session's sync machine, to free."""
        self._shed.append(sync)

    def start(self, peer: bytes, agent_ids: Iterable[list[bytes]]) -> None:
        """The session with ``peer`` ended: drop its routes to ``agent_ids`` (lists of
        them, taken one at a time: :meth:`.GatewayCore.route_chunks_via`)."""
        self._left[peer] = ([], iter(agent_ids))

    def cancel(self, peer: bytes) -> None:
        """A session with ``peer`` is established again."""
        self._left.pop(peer, None)

    def work(self, core: GatewayCore, more: Callable[[], bool]) -> TableChanges:
        """Drop routes, a chunk at a time, then free memory, until ``more()`` says no;
        what changed."""
        advertised: list[bytes] = []
        withdrawn: list[VersionedId] = []
        while self._left:
            peer, (left, rest) = next(iter(self._left.items()))
            if not left:  # the next shard's, if any
                taken = next(rest, None)
                if taken is None:
                    del self._left[peer]
                else:
                    self._left[peer] = (taken, rest)
                continue
            chunk = [VersionedId(a, MAX_VERSION) for a in left[-CHUNK:]]
            del left[-CHUNK:]
            ch = core.withdraw_many(chunk, peer)
            advertised += ch.advertised
            withdrawn += ch.withdrawn
            if not more():
                return TableChanges(tuple(advertised), tuple(withdrawn))
        while self._shed and self._shed[-1].shed(more):
            self._shed.pop()
        return TableChanges(tuple(advertised), tuple(withdrawn))
