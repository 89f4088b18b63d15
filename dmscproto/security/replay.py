"""Freshness and replay checks for REGISTER, REFRESH and DEREGISTER (draft Sections 5.1,
8 and 10.4).

A request's TIMESTAMP (milliseconds since the epoch) must be within FRESHNESS_WINDOW of
the gateway's clock (STALE_TIMESTAMP), and its NONCE must not have been accepted before
from the same agent (REPLAY).  An accepted nonce is remembered until its timestamp
leaves the freshness window (at most twice the window after it arrived); after that the
timestamp check alone refuses a replay.

Memory is bounded two ways, both refusing rather than forgetting (forgetting a live
nonce would reopen the replay hole): at most ``per_agent`` (REPLAY_PER_AGENT) live
nonces per agent (RATE_LIMITED, so one agent cannot crowd out the others) and at most
``capacity`` (REPLAY_CAPACITY) in all (RESOURCE_EXHAUSTED).  Callers record a nonce only
after the request is authenticated (:mod:`.proof`), so unauthenticated traffic cannot
fill the cache.
"""

from __future__ import annotations

import heapq
from collections import Counter

from ..codec.registry import ErrorCode, limit, timer
from .errors import SecurityError

#: FRESHNESS_WINDOW (Section 8) in milliseconds.
FRESHNESS_WINDOW_MS = int(timer("FRESHNESS_WINDOW") * 1000)


def check_fresh(timestamp_ms: int, now_ms: int, window_ms: int = FRESHNESS_WINDOW_MS) -> None:
    """STALE_TIMESTAMP unless ``|now - timestamp| <= window`` (Section 5.1)."""
    skew = timestamp_ms - now_ms
    if abs(skew) > window_ms:
        raise SecurityError(ErrorCode.STALE_TIMESTAMP,
                            f"timestamp is {skew / 1000:+.0f} s from this gateway's clock, "
                            f"the window is {window_ms / 1000:.0f} s")


class ReplayCache:
    """Nonces accepted within the freshness window, keyed by (entity id, nonce)."""

    def __init__(self, *, window_ms: int = FRESHNESS_WINDOW_MS,
                 capacity: int = int(limit("REPLAY_CAPACITY")),
                 per_agent: int = int(limit("REPLAY_PER_AGENT"))) -> None:
        if window_ms <= 0 or capacity <= 0 or per_agent <= 0:
            raise ValueError("window, capacity and per_agent must be positive")
        self.window_ms = window_ms
        self.capacity = capacity
        self.per_agent = per_agent
        self._until: dict[tuple[bytes, bytes], int] = {}
        self._heap: list[tuple[int, bytes, bytes]] = []
        self._count: Counter[bytes] = Counter()

    def __len__(self) -> int:
        return len(self._until)

    def _purge(self, now_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] < now_ms:
            _, entity, nonce = heapq.heappop(heap)
            del self._until[(entity, nonce)]
            self._count[entity] -= 1
            if not self._count[entity]:
                del self._count[entity]

    def seen(self, entity: bytes, nonce: bytes, now_ms: int) -> bool:
        """Whether ``nonce`` from ``entity`` is still remembered."""
        self._purge(now_ms)
        return (entity, nonce) in self._until

    def check(self, entity: bytes, nonce: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Freshness, then REPLAY if the nonce is remembered; records nothing."""
        check_fresh(timestamp_ms, now_ms, self.window_ms)
        if self.seen(entity, nonce, now_ms):
            raise SecurityError(ErrorCode.REPLAY, "nonce already used")
        if self._count[entity] >= self.per_agent:
            raise SecurityError(ErrorCode.RATE_LIMITED,
                                f"more than {self.per_agent} requests within the window")
        if len(self._until) >= self.capacity:
            raise SecurityError(ErrorCode.RESOURCE_EXHAUSTED, "replay cache is full")

    def accept(self, entity: bytes, nonce: bytes, timestamp_ms: int, now_ms: int) -> None:
        """:meth:`check`, then remember the nonce until ``timestamp + window``."""
        self.check(entity, nonce, timestamp_ms, now_ms)
        until = timestamp_ms + self.window_ms
        self._until[(entity, nonce)] = until
        heapq.heappush(self._heap, (until, entity, nonce))
        self._count[entity] += 1
