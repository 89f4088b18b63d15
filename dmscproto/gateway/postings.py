"""Posting sets of the capability index as bitmaps over record ordinals (Section 5.2).

Every record held by the index has an ordinal, a small integer (an ordinal freed by a
removal is given again), and a posting set (the records carrying one term) is a
:data:`Bits`: block number -> the bits of the ordinals in that block, ``BLOCK`` of
them, as a non-zero int.  Adding or removing a record rewrites one block of each of its
terms (a ``BLOCK / 8``-octet int), whatever the size of the set: a set of agent ids
would instead rebuild its whole hash table at the insertion that crosses its size (at
78,643 entries, 2.7 ms), and the ~17 terms records of one kind share all cross at the
same record.  Set operations work block by block on whole ints; a few hundred octets
per block for 100,000 records, where a set of agent ids took 40 octets per record per
term.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, MutableMapping
from typing import Generic, TypeVar

from .shards import ShardedDict

#: block number -> bits of the ordinals ``block * BLOCK`` .. ``block * BLOCK + BLOCK - 1``
#: that are members (bit ``o % BLOCK``); a block without members has no entry.
Bits = dict[int, int]
#: Ordinals per block (a power of two).
BLOCK = 4096
_SHIFT = BLOCK.bit_length() - 1
_MASK = BLOCK - 1
_OCTETS = BLOCK // 8
#: The bit positions set in each octet value.
_SET_IN = tuple(tuple(i for i in range(8) if v >> i & 1) for v in range(256))
K = TypeVar("K", bound=Hashable)


def intersection(a: Bits, b: Bits) -> Bits:
    if len(b) < len(a):
        a, b = b, a
    out: Bits = {}
    for blk, word in a.items():
        both = word & b.get(blk, 0)
        if both:
            out[blk] = both
    return out


def union(sets: Iterable[Bits]) -> Bits:
    out: Bits = {}
    for s in sets:
        for blk, word in s.items():
            out[blk] = out.get(blk, 0) | word
    return out


def difference(a: Bits, b: Bits) -> Bits:
    out: Bits = {}
    for blk, word in a.items():
        rest = word & ~b.get(blk, 0)
        if rest:
            out[blk] = rest
    return out


def count(a: Bits) -> int:
    return sum(word.bit_count() for word in a.values())


def ordinals(a: Bits) -> Iterator[int]:
    """The members, block by block (each in ascending order)."""
    for blk, word in a.items():
        base = blk << _SHIFT
        if word.bit_count() < 64:  # sparse: bit by bit
            while word:
                low = word & -word
                yield base + low.bit_length() - 1
                word ^= low
            continue
        for i, octet in enumerate(word.to_bytes(_OCTETS, "little")):
            if octet:
                for j in _SET_IN[octet]:
                    yield base + 8 * i + j


def bits(members: Iterable[int]) -> Bits:
    """The set of these ordinals."""
    out: Bits = {}
    for o in members:
        out[o >> _SHIFT] = out.get(o >> _SHIFT, 0) | 1 << (o & _MASK)
    return out


class Ordinals:
    """Record ordinals: ordinal -> agent id (the caller keeps the other way), ordinals
    of removed records given again first."""

    __slots__ = ("_free", "_ids")

    def __init__(self) -> None:
        #: ordinal -> agent id, one list of BLOCK per block (None: free).
        self._ids: list[list[bytes | None]] = []
        self._free: list[int] = []

    def add(self, agent_id: bytes) -> int:
        """A free ordinal, now ``agent_id``'s."""
        if not self._free:
            o = len(self._ids) << _SHIFT
            self._ids.append([None] * BLOCK)
            self._free.extend(range(o + BLOCK - 1, o - 1, -1))
        o = self._free.pop()
        self._ids[o >> _SHIFT][o & _MASK] = agent_id
        return o

    def remove(self, ordinal: int) -> None:
        self._ids[ordinal >> _SHIFT][ordinal & _MASK] = None
        self._free.append(ordinal)

    def agent_ids(self, a: Bits) -> list[bytes]:
        """The agent ids of the members of ``a``."""
        ids = self._ids
        return [ids[o >> _SHIFT][o & _MASK] for o in ordinals(a)]  # type: ignore[misc]


class Postings(Generic[K]):
    """term -> the records carrying it, as :data:`Bits`.  The terms are a dict, which
    grows with the vocabulary of the records (skill ids, tags, words, modes); with
    ``per_record``, a :class:`ShardedDict`, for terms that may be as many as the
    records (attribute values: a version, a price)."""

    __slots__ = ("sets",)

    def __init__(self, per_record: bool = False) -> None:
        self.sets: MutableMapping[K, Bits] = ShardedDict() if per_record else {}

    def add(self, terms: Iterable[K], ordinal: int) -> None:
        blk, bit = ordinal >> _SHIFT, 1 << (ordinal & _MASK)
        for t in terms:
            s = self.sets.get(t)
            if s is None:
                self.sets[t] = {blk: bit}
            else:
                s[blk] = s.get(blk, 0) | bit

    def remove(self, terms: Iterable[K], ordinal: int) -> None:
        blk, bit = ordinal >> _SHIFT, 1 << (ordinal & _MASK)
        for t in terms:
            s = self.sets[t]
            word = s[blk] ^ bit
            if word:
                s[blk] = word
            elif len(s) > 1:
                del s[blk]
            else:
                del self.sets[t]

    def get(self, term: K) -> Bits:
        return self.sets.get(term, _NONE)


_NONE: Bits = {}
