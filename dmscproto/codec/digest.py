"""The digest tree (draft-dmsc-protocol-00, Section 6.6.1).

A session's digest covers the (Agent ID, version) entries one gateway advertised to the
other: each entry hashes to ``SHA-256(agent id || version as uint64)``, and a node of the
tree summarises the entries whose Agent ID starts with the node's index (``4 * level``
bits; DIGEST_FANOUT children per node, leaves at DIGEST_LEAF_LEVEL) by their count and
the XOR of their hashes.  XOR makes the tree cheap to keep on write: adding or removing
an entry changes one node per level (:meth:`DigestTree.put`, :meth:`DigestTree.discard`),
and a summary is read, never computed over the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from .registry import DIGEST_FANOUT, DIGEST_LEAF_LEVEL
from .wire import DigestNode, DigestSummary, VersionedId

#: Bits of an Agent ID each level of the tree consumes.
_BITS = DIGEST_FANOUT.bit_length() - 1
#: Bits of the Agent ID that select a leaf.
_LEAF_BITS = _BITS * DIGEST_LEAF_LEVEL
ROOT = DigestNode(0, 0)
EMPTY = DigestSummary(0, bytes(32))


def entry_hash(agent_id: bytes, version: int) -> int:
    """An entry's hash as an integer (XORed into every node above it)."""
    return int.from_bytes(hashlib.sha256(agent_id + version.to_bytes(8, "big")).digest())


def leaf_of(agent_id: bytes) -> int:
    """The index of the leaf an Agent ID falls into."""
    return int.from_bytes(agent_id[:4]) >> (32 - _LEAF_BITS)


def valid(node: DigestNode) -> bool:
    """Whether ``node`` names a node of the tree."""
    return 0 <= node.level <= DIGEST_LEAF_LEVEL and 0 <= node.index < DIGEST_FANOUT ** node.level


def children_of(node: DigestNode) -> list[DigestNode]:
    """The children of an inner node, in index order."""
    return [DigestNode(node.level + 1, node.index * DIGEST_FANOUT + j)
            for j in range(DIGEST_FANOUT)]


def leaves_under(node: DigestNode) -> range:
    """The leaf indexes a node covers."""
    span = DIGEST_FANOUT ** (DIGEST_LEAF_LEVEL - node.level)
    return range(node.index * span, (node.index + 1) * span)


class DigestTree:
    """A set of (Agent ID, version) entries with the summary of every tree node kept on
    write (module doc): O(DIGEST_LEAF_LEVEL) per change, O(1) per summary.  Only the
    leaves holding entries have a dict (one tree per session and direction: an empty
    tree costs two lists of node summaries, not 4096 dicts)."""

    __slots__ = ("_counts", "_hashes", "_leaves")

    def __init__(self) -> None:
        self._counts = [[0] * DIGEST_FANOUT ** lv for lv in range(DIGEST_LEAF_LEVEL + 1)]
        self._hashes = [[0] * DIGEST_FANOUT ** lv for lv in range(DIGEST_LEAF_LEVEL + 1)]
        self._leaves: dict[int, dict[bytes, int]] = {}

    def _apply(self, leaf: int, h: int, delta: int) -> None:
        for lv in range(DIGEST_LEAF_LEVEL, -1, -1):
            self._counts[lv][leaf] += delta
            self._hashes[lv][leaf] ^= h
            leaf //= DIGEST_FANOUT

    def put(self, agent_id: bytes, version: int) -> None:
        """Set the entry of ``agent_id`` to ``version``."""
        leaf = leaf_of(agent_id)
        entries = self._leaves.setdefault(leaf, {})
        old = entries.get(agent_id)
        if old == version:
            return
        if old is not None:
            self._apply(leaf, entry_hash(agent_id, old), -1)
        entries[agent_id] = version
        self._apply(leaf, entry_hash(agent_id, version), 1)

    def discard(self, agent_id: bytes) -> int | None:
        """Remove the entry of ``agent_id``; return its version (None if absent)."""
        leaf = leaf_of(agent_id)
        entries = self._leaves.get(leaf)
        old = None if entries is None else entries.pop(agent_id, None)
        if old is not None:
            self._apply(leaf, entry_hash(agent_id, old), -1)
        return old

    def shed(self, more: Callable[[], bool]) -> bool:
        """Free the entries of a tree no longer used, a leaf at a time (one at least)
        until ``more()`` says no (freeing a large tree at once stalls its caller);
        whether it is empty.  The node summaries are not updated: the tree is not to be
        read again."""
        leaves = self._leaves
        while leaves:
            leaves.popitem()
            if not more():
                break
        return not leaves

    def get(self, agent_id: bytes) -> int | None:
        entries = self._leaves.get(leaf_of(agent_id))
        return None if entries is None else entries.get(agent_id)

    def __len__(self) -> int:
        return self._counts[0][0]

    def __contains__(self, agent_id: object) -> bool:
        return isinstance(agent_id, bytes) and agent_id in self._leaves.get(leaf_of(agent_id), ())

    def summary(self, node: DigestNode = ROOT) -> DigestSummary:
        """The count and hash of ``node``."""
        return DigestSummary(self._counts[node.level][node.index],
                             self._hashes[node.level][node.index].to_bytes(32))

    def children(self, node: DigestNode) -> tuple[DigestSummary, ...]:
        """The summaries of an inner node's children."""
        return tuple(self.summary(c) for c in children_of(node))

    def entries(self, node: DigestNode = ROOT) -> Iterator[VersionedId]:
        """The entries under ``node``, sorted by Agent ID."""
        for leaf in leaves_under(node):
            items = self._leaves.get(leaf, {})
            for aid in sorted(items):
                yield VersionedId(aid, items[aid])


def summarize(entries: Iterable[VersionedId]) -> DigestSummary:
    """The summary of a set of entries (what :meth:`DigestTree.summary` gives for a tree
    holding exactly them)."""
    n, h = 0, 0
    for e in entries:
        n += 1
        h ^= entry_hash(e.agent_id, e.version)
    return DigestSummary(n, h.to_bytes(32))
