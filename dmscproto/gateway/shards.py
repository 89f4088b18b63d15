"""A dict whose growth costs bounded time per insertion, for the tables that hold one
entry per record (the registry, the capability index, the routing table).

A CPython dict grows by rebuilding its whole hash table: at 87,381 entries one
insertion into a dict of 16-octet keys rebuilds 131,072 slots (about 4 ms of CPU), and
every table holding one entry per record rebuilds at the same record, inside the one
record install that crosses the size; a gateway learning a peer's table would stall
its event loop that long (Section 6.5.1 slices the work, but a slice cannot split one
insertion).  :class:`ShardedDict` is made of small dicts instead (linear hashing,
W. Litwin, VLDB 1980): when the entries exceed ``LOAD`` per shard on average, one more
shard is split in two, in the order of the shards, so an insertion rebuilds at most a
shard of about ``2 * LOAD`` entries whatever the number of entries.  Shards are
addressed by the low bits of ``hash(key)`` (randomised per process for bytes and str,
so a peer cannot choose keys that crowd one shard).  Shards are not merged again when
entries are deleted, as a dict does not shrink.  Iteration visits the shards in order
(not insertion order); a shard split during an iteration raises as a dict would.
"""

from __future__ import annotations

from collections.abc import Hashable, ItemsView, Iterable, Iterator, MutableMapping, ValuesView
from typing import TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")
_MISSING = object()


class ShardedDict(MutableMapping[K, V]):
    """A mapping that grows a shard at a time (module doc)."""

    __slots__ = ("_high", "_len", "_limit", "_low", "_shards", "_split")

    #: Entries per shard, on average, above which one more shard is split.
    LOAD = 256

    def __init__(self, items: Iterable[tuple[K, V]] = ()) -> None:
        self._shards: list[dict[K, V]] = [{}]
        #: A key's shard is ``hash & _low``, or ``hash & _high`` if that is below
        #: ``_split`` (the shards already split in this round).
        self._low, self._high, self._split = 0, 1, 0
        self._len = 0
        #: Split the next shard when ``_len`` exceeds this.
        self._limit = self.LOAD
        for k, v in items:
            self[k] = v

    def _shard(self, key: K) -> dict[K, V]:
        h = hash(key)  # the methods called per record repeat these three lines inline
        i = h & self._low
        return self._shards[h & self._high if i < self._split else i]

    def _grow(self) -> None:
        """Split the next shard: its keys whose next hash bit is set move to a new one."""
        old, new, high = self._shards[self._split], len(self._shards), self._high
        stay: dict[K, V] = {}
        moved: dict[K, V] = {}
        for k, v in old.items():
            (moved if hash(k) & high == new else stay)[k] = v
        self._shards[self._split] = stay
        self._shards.append(moved)
        self._split += 1
        self._limit += self.LOAD
        if self._split > self._low:  # every shard split: address one more bit
            self._low, self._high, self._split = high, (high << 1) | 1, 0

    def __getitem__(self, key: K) -> V:
        h = hash(key)
        i = h & self._low
        return self._shards[h & self._high if i < self._split else i][key]

    def __setitem__(self, key: K, value: V) -> None:
        h = hash(key)
        i = h & self._low
        shard = self._shards[h & self._high if i < self._split else i]
        if key not in shard:
            self._len += 1
            if self._len > self._limit:
                shard[key] = value
                self._grow()
                return
        shard[key] = value

    def __delitem__(self, key: K) -> None:
        del self._shard(key)[key]
        self._len -= 1

    def __contains__(self, key: object) -> bool:
        return key in self._shard(key)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[K]:
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return self._len

    def key_chunks(self) -> Iterator[list[K]]:
        """The keys a shard at a time, each shard's copied when it is reached: a walk over
        every key in bounded steps, without a copy of them all.  A key added meanwhile
        may be missed; one moved by a split meanwhile may come twice (a split moves
        keys into a shard added at the end), none is missed."""
        i = 0
        while i < len(self._shards):
            yield list(self._shards[i])
            i += 1

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        h = hash(key)
        i = h & self._low
        return self._shards[h & self._high if i < self._split else i].get(key, default)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, default: object = _MISSING) -> object:
        h = hash(key)
        i = h & self._low
        shard = self._shards[h & self._high if i < self._split else i]
        if key in shard:
            self._len -= 1
            return shard.pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def clear(self) -> None:
        self._shards, self._low, self._high, self._split = [{}], 0, 1, 0
        self._len, self._limit = 0, self.LOAD

    def items(self) -> ItemsView[K, V]:
        return _Items(self)

    def values(self) -> ValuesView[V]:
        return _Values(self)


class _Items(ItemsView[K, V]):
    _mapping: ShardedDict[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        for shard in self._mapping._shards:
            yield from shard.items()


class _Values(ValuesView[V]):
    _mapping: ShardedDict[object, V]

    def __iter__(self) -> Iterator[V]:
        for shard in self._mapping._shards:
            yield from shard.values()
