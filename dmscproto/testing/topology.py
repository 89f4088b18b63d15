"""Topologies for the federation simulator (:mod:`.simulator`): edges between gateway
names."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

Edge = tuple[str, str]


def chain(names: Sequence[str]) -> list[Edge]:
    return list(itertools.pairwise(names))


def ring(names: Sequence[str]) -> list[Edge]:
    return [*chain(names), (names[-1], names[0])] if len(names) > 2 else chain(names)


def full_mesh(names: Sequence[str]) -> list[Edge]:
    return list(itertools.combinations(names, 2))


def random_graph(names: Sequence[str], degree: float, rng: random.Random) -> list[Edge]:
    """A connected random graph: a random spanning tree, then random extra edges until
    the mean degree is ``degree``."""
    order = list(names)
    rng.shuffle(order)
    edges = {(rng.choice(order[:i]), order[i]) for i in range(1, len(order))}
    seen = {frozenset(e) for e in edges}
    want = min(int(degree * len(order) / 2), len(order) * (len(order) - 1) // 2)
    while len(edges) < want:
        a, b = rng.sample(order, 2)
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            edges.add((a, b))
    return sorted(edges)

