"""The containers that keep a record install bounded: ShardedDict and the posting
bitmaps (dmscproto/gateway/shards.py, postings.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dmscproto.gateway.postings import (
    BLOCK,
    Ordinals,
    bits,
    count,
    difference,
    intersection,
    ordinals,
    union,
)
from dmscproto.gateway.shards import ShardedDict


class Small(ShardedDict[int, int]):
    LOAD = 2  # many splits from a few keys


ops = st.lists(st.tuples(st.sampled_from(["set", "del", "pop", "get"]),
                         st.integers(-40, 40), st.integers()), max_size=150)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_sharded_dict_behaves_as_a_dict(script: list[tuple[str, int, int]]) -> None:
    d, ref = Small(), dict[int, int]()
    peak = 0
    for op, k, v in script:
        if op == "set":
            d[k] = ref[k] = v
        elif op == "del" and k in ref:
            del d[k], ref[k]
        elif op == "pop":
            assert d.pop(k, None) == ref.pop(k, None)
        assert d.get(k) == ref.get(k) and (k in d) == (k in ref)
        peak = max(peak, len(ref))
        assert len(d) == len(ref) and dict(d.items()) == ref
        assert sorted(d.values()) == sorted(ref.values())
    # grown a shard per LOAD entries: no shard rebuilt at an insertion holds them all
    assert len(d._shards) >= peak // Small.LOAD


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(0, 200), max_size=60), st.lists(st.integers(201, 400)),
       st.integers(0, 30))
def test_key_chunks_miss_no_key_held_throughout(first: set[int], added: list[int],
                                                 gone: int) -> None:
    """A walk a shard at a time (the routes a closed session drops) meets every key held
    from its start to its end, however many keys are deleted or added (shards split)
    meanwhile."""
    d = Small((k, 0) for k in first)
    walk = d.key_chunks()
    met: list[int] = []
    for i, chunk in enumerate(walk):
        met += chunk
        if i < len(added):
            d[added[i]] = 0
        for k in sorted(first)[i * gone:(i + 1) * gone]:
            d.pop(k, None)
    assert set(d) - set(added) <= set(met)


members = st.sets(st.integers(0, 3 * BLOCK - 1), max_size=200)


@settings(max_examples=100, deadline=None)
@given(members, members, st.sets(st.integers(0, 3 * BLOCK - 1), min_size=60, max_size=300))
def test_bitmap_set_algebra(a: set[int], b: set[int], dense: set[int]) -> None:
    ba, bb, bd = bits(a), bits(b), bits(dense)
    assert set(ordinals(intersection(ba, bb))) == a & b
    assert set(ordinals(union([ba, bb, bd]))) == a | b | dense
    assert set(ordinals(difference(ba, bb))) == a - b
    assert count(ba) == len(a) and set(ordinals(bd)) == dense
    assert all(intersection(ba, bb).values())  # no empty block kept


def test_ordinals_are_given_again() -> None:
    o = Ordinals()
    first = [o.add(bytes([i])) for i in range(3)]
    assert first == [0, 1, 2]
    o.remove(1)
    assert o.add(b"x") == 1
    assert o.agent_ids(bits([0, 1, 2])) == [b"\0", b"x", b"\2"]
