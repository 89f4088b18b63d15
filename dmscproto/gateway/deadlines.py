"""The earliest timer of a gateway's peer sessions (draft-dmsc-state-machines-00)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from ..protocol.machine import Handle


class SessionDeadlines:
    """The earliest timer of the peer sessions, recomputed only for the sessions marked
    stale by what may have moved their timers (a heap with lazy deletion: each change
    costs O(log n), not a walk of every session after each event)."""

    def __init__(self) -> None:
        self._at: dict[Handle, float] = {}
        self._heap: list[tuple[float, int, Handle]] = []
        self._stale: set[Handle] = set()
        self._order = itertools.count()  # ties never compare handles

    def stale(self, handle: Handle) -> None:
        self._stale.add(handle)

    def earliest(self, timer_of: Callable[[Handle], float | None]) -> float | None:
        for handle in self._stale:
            due = timer_of(handle)
            if due is None:
                self._at.pop(handle, None)
            elif self._at.get(handle) != due:
                self._at[handle] = due
                heapq.heappush(self._heap, (due, next(self._order), handle))
        self._stale.clear()
        heap, at = self._heap, self._at
        while heap and at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None
