"""Records known only from relayed DISCOVER answers (draft-dmsc-protocol-00, 5.2.1).

A gateway that exchanges capability summaries with a peer instead of records (Section
6.9) learns a remote domain's records only by relaying a FEDERATED DISCOVER to it.  The
answers are kept for DISCOVERY_CACHE_TTL: each record with the peer it came from (the
next hop towards it, so that a ROUTE_REQUEST naming that agent can follow the answer's
way back), and each query's merged answer, so that the same query within the TTL is
answered without relaying again.  Nothing here is stored durably, advertised or
listed in a DIGEST.
"""

from __future__ import annotations

from ..codec.registry import MAX_PATH, ErrorCode, timer
from ..protocol.ports import Decision, Forward, Reject, Relayed


class RemoteDirectory:
    """Relayed answers by query and the records in them by Agent ID (module doc)."""

    def __init__(self, ttl: float = timer("DISCOVERY_CACHE_TTL")) -> None:
        self.ttl = ttl
        self._records: dict[bytes, tuple[float, Relayed]] = {}
        self._answers: dict[bytes, tuple[float, tuple[Relayed, ...], dict[bytes, int]]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def put(self, query_key: bytes, answers: tuple[Relayed, ...], now: float,
            reached: dict[bytes, int]) -> None:
        """Keep a relayed query's answers (``query_key``: the query and its limit,
        encoded), the next hops that gave them with the HOP_LIMIT each was sent, and
        their records until ``now + ttl``.  What is kept again moves to the end, so both
        tables stay in the order they expire (one TTL, a clock that does not go back)."""
        until = now + self.ttl
        self._answers.pop(query_key, None)
        self._answers[query_key] = (until, answers, reached)
        for a in answers:
            aid = a.record.record.agent_id
            self._records.pop(aid, None)
            self._records[aid] = (until, a)

    def answers(self, query_key: bytes, now: float,
                reach: tuple[tuple[bytes, int], ...] = ()) -> tuple[Relayed, ...] | None:
        """The answers kept for ``query_key``, None if none, expired, or kept from
        relaying that did not reach every (next hop, HOP_LIMIT) of ``reach`` (a DISCOVER
        whose PATH_VECTOR or HOP_LIMIT kept it from relaying as far)."""
        held = self._answers.get(query_key)
        if held is None or held[0] <= now \
                or any(held[2].get(gid, -1) < hops for gid, hops in reach):
            return None
        return held[1]

    def get(self, agent_id: bytes, now: float | None = None) -> Relayed | None:
        """The record of ``agent_id`` from a relayed answer (unexpired at ``now``)."""
        held = self._records.get(agent_id)
        if held is None or (now is not None and held[0] <= now):
            return None
        return held[1]

    def expire(self, now: float) -> None:
        """Forget what has outlived the TTL: O(what is forgotten), from the front of each
        table (:meth:`put`).  Lookups check the time themselves, so an entry a clock
        that went back left behind a later one is only forgotten late."""
        for table in (self._records, self._answers):
            while table:
                key = next(iter(table))
                if table[key][0] > now:
                    break
                del table[key]

    def decide(self, self_id: bytes, target: bytes, hop_limit: int, path: tuple[bytes, ...],
               now: float) -> Decision | None:
        """The forwarding decision towards a relayed answer's agent (the rules of
        Section 5.3 with its one next hop), None if no unexpired answer names it."""
        held = self.get(target, now)
        if held is None:
            return None
        if held.next_hop in path:
            return Reject(ErrorCode.LOOP_DETECTED)
        if hop_limit <= 0 or len(path) >= MAX_PATH:
            return Reject(ErrorCode.HOP_LIMIT_EXCEEDED)
        return Forward(held.next_hop, hop_limit - 1, (*path, self_id))
