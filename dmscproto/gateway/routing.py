"""The routing table and forwarding decisions (draft-dmsc-protocol-00, 5.3, 6.5).

A gateway knows a route to each agent registered with it (local) and to each agent a
peer advertised, one route per peer that advertised it.  The best route is the local
one if any, else the one with the shortest path, then the lowest next-hop gateway id
(bytewise).

Forwarding (:meth:`RoutingTable.decide`), in this order:

1. the gateway's own id is already in the request's path vector: ``LOOP_DETECTED``;
2. the target is local: deliver it (local delivery consumes no hop);
3. no route whose next hop is absent from the path: ``NO_ROUTE`` (``LOOP_DETECTED``
   if routes exist but every next hop is already in the path);
4. the hop limit is checked *before* it is decremented: a request that must be
   forwarded with hop limit 0 is rejected with ``HOP_LIMIT_EXCEEDED``; otherwise it is
   forwarded with hop limit ``h - 1`` and path ``path + (own id,)``.  A path vector
   holds at most 255 ids (its count is one octet), so a path that is already full is
   also ``HOP_LIMIT_EXCEEDED``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..codec.registry import MAX_PATH, ErrorCode
from ..protocol.ports import Decision, DeliverLocal, Forward, Reject
from .shards import ShardedDict

__all__ = ["MAX_PATH", "Decision", "DeliverLocal", "Forward", "Reject", "Route", "RoutingTable"]


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach an agent: locally (``next_hop`` None) or through a peer gateway."""

    next_hop: bytes | None
    path: tuple[bytes, ...] = ()
    version: int = 0
    origin_gateway: bytes | None = None

    @property
    def local(self) -> bool:
        return self.next_hop is None

    def preference(self) -> tuple[int, int, bytes]:
        """Sort key: smaller is better (local, then shorter path, then lower next hop)."""
        if self.next_hop is None:
            return (0, 0, b"")
        return (1, len(self.path), self.next_hop)


class RoutingTable:
    """agent id -> routes, keyed by next hop (None for the local route), and the
    reverse map next hop -> agent ids, so that a peer's routes are found without a
    pass over the table."""

    def __init__(self) -> None:
        #: One entry per record, and per record through each peer: grown a shard at a
        #: time (:mod:`.shards`); ``_via`` values are sets (a key's value is None).
        self._routes: ShardedDict[bytes, dict[bytes | None, Route]] = ShardedDict()
        self._via: dict[bytes, ShardedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._routes

    def add(self, agent_id: bytes, route: Route) -> bool:
        """Install ``route`` (replacing the one via the same next hop).
        Return whether the best route changed."""
        if route.next_hop is not None:
            agents = self._via.get(route.next_hop)
            if agents is None:
                agents = self._via[route.next_hop] = ShardedDict()
            agents[agent_id] = None
        routes = self._routes.get(agent_id)
        if routes is None:  # the common case: the first route to an agent
            self._routes[agent_id] = {route.next_hop: route}
            return True
        before = self.best(agent_id)
        routes[route.next_hop] = route
        return self.best(agent_id) != before

    def add_local(self, agent_id: bytes, version: int) -> bool:
        return self.add(agent_id, Route(None, (), version, None))

    def _unlink(self, agent_id: bytes, next_hop: bytes | None) -> None:
        if next_hop is not None:
            agents = self._via[next_hop]
            agents.pop(agent_id, None)
            if not agents:
                del self._via[next_hop]

    def remove(self, agent_id: bytes, next_hop: bytes | None) -> bool:
        """Remove the route via ``next_hop``; return whether the best route changed."""
        routes = self._routes.get(agent_id)
        if routes is None or next_hop not in routes:
            return False
        before = self.best(agent_id)
        del routes[next_hop]
        self._unlink(agent_id, next_hop)
        if not routes:
            del self._routes[agent_id]
        return self.best(agent_id) != before

    def remove_agent(self, agent_id: bytes) -> bool:
        routes = self._routes.pop(agent_id, None)
        if routes is None:
            return False
        for next_hop in routes:
            self._unlink(agent_id, next_hop)
        return True

    def routes(self, agent_id: bytes) -> list[Route]:
        """All routes to ``agent_id``, best first."""
        return sorted(self._routes.get(agent_id, {}).values(), key=Route.preference)

    def route_via(self, agent_id: bytes, peer: bytes) -> Route | None:
        """The route to ``agent_id`` through ``peer``, if any."""
        return self._routes.get(agent_id, {}).get(peer)

    def best(self, agent_id: bytes) -> Route | None:
        routes = self._routes.get(agent_id)
        if not routes:
            return None
        return min(routes.values(), key=Route.preference)

    def count_via(self, peer: bytes) -> int:
        """How many agents have a route through ``peer``."""
        return len(self._via.get(peer, ()))

    def via_chunks(self, peer: bytes) -> Iterator[list[bytes]]:
        """Agents with a route through ``peer``, a few hundred at a time, in no
        particular order (:meth:`.ShardedDict.key_chunks`): whoever walks them (a
        session that ends drops them, one that begins confirms them) does so in slices,
        not with a copy of them all in one step (about 4 ms at 100,000)."""
        agents = self._via.get(peer)
        return iter(()) if agents is None else agents.key_chunks()

    def decide(self, self_id: bytes, target: bytes, hop_limit: int,
               path: tuple[bytes, ...]) -> Decision:
        """The forwarding decision for a request to ``target`` (module doc)."""
        if self_id in path:
            return Reject(ErrorCode.LOOP_DETECTED)
        held = self._routes.get(target)
        if not held:
            return Reject(ErrorCode.NO_ROUTE)
        if None in held:  # the local route, the best there is: no sort
            return DeliverLocal(target)
        best = min((r for r in held.values() if r.next_hop not in path),
                   key=Route.preference, default=None)
        if best is None:
            return Reject(ErrorCode.LOOP_DETECTED)
        if hop_limit <= 0 or len(path) >= MAX_PATH:
            return Reject(ErrorCode.HOP_LIMIT_EXCEEDED)
        nh = best.next_hop
        assert nh is not None
        return Forward(nh, hop_limit - 1, (*path, self_id))
