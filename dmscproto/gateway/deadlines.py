"""The earliest timer of a gateway's peer sessions and relays (draft-dmsc-state-machines-00)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """The earliest timer of the peer sessions (or of the relays), recomputed only for
    those marked stale by what may have moved their timers (a heap with lazy deletion,
    rebuilt when mostly stale: each change costs O(log n), not a walk of them all after
    each event)."""

    def __init__(self) -> None:
        self._at: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._stale: set[K] = set()
        self._order = itertools.count()  # ties never compare keys

    def stale(self, key: K) -> None:
        self._stale.add(key)

    def put(self, key: K, due: float | None) -> None:
        """``key``'s timer is ``due`` (None: it has none), known by the caller: what
        :meth:`earliest` would ask of a key marked stale, without marking it (a relay
        after each of its runs, twice a routed call)."""
        at, heap = self._at, self._heap
        if due is None:
            at.pop(key, None)
        elif at.get(key) != due:
            at[key] = due
            heapq.heappush(heap, (due, next(self._order), key))
        if len(heap) > 2 * len(at) + 64:  # ended keys' entries behind a long one
            heap[:] = [(due, next(self._order), key) for key, due in at.items()]
            heapq.heapify(heap)

    def earliest(self, timer_of: Callable[[K], float | None],
                 than: float | None = None) -> float | None:
        """The earliest deadline, or ``than`` if that is earlier (the node's other timers:
        no call of :func:`~dmscproto.protocol.machine.earliest` to compare them)."""
        # asked for after every turn that ran the node: nothing made, nothing walked
        # when nothing is stale or due (the sessions' timers, most of the time)
        if self._stale:
            for key in self._stale:
                self.put(key, timer_of(key))
            self._stale.clear()
        heap, at = self._heap, self._at
        while heap:
            due, _order, key = heap[0]
            if at.get(key) == due:
                return due if than is None or due < than else than
            heapq.heappop(heap)
        return than
