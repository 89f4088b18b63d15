"""The earliest timer of a gateway's sessions and relays (:mod:`dmscproto.gateway.deadlines`)."""

from __future__ import annotations

from dmscproto.gateway.deadlines import Deadlines


def test_earliest_follows_the_keys_marked_stale_only() -> None:
    timers: dict[str, float | None] = {"a": 5.0, "b": 3.0}
    asked: list[str] = []

    def timer_of(key: str) -> float | None:
        asked.append(key)
        return timers[key]

    deadlines = Deadlines[str]()
    assert deadlines.earliest(timer_of) is None  # nothing marked yet
    assert asked == []
    deadlines.stale("a")
    deadlines.stale("b")
    assert deadlines.earliest(timer_of) == 3.0
    assert sorted(asked) == ["a", "b"]
    timers["b"] = 9.0  # not marked: the old deadline stands, no timer asked for
    assert deadlines.earliest(timer_of) == 3.0
    assert len(asked) == 2
    deadlines.stale("b")
    assert deadlines.earliest(timers.get) == 5.0
    timers["a"] = None
    deadlines.stale("a")
    assert deadlines.earliest(timers.get) == 9.0
    timers["b"] = 1.0  # moved earlier
    deadlines.stale("b")
    assert deadlines.earliest(timers.get) == 1.0
    timers["b"] = None
    deadlines.stale("b")
    assert deadlines.earliest(timers.get) is None


def test_many_ended_keys_behind_a_long_one_are_dropped() -> None:
    timers: dict[int, float | None] = {0: 1000.0}
    deadlines = Deadlines[int]()
    deadlines.stale(0)
    for key in range(1, 500):  # each answered after the next began
        timers[key] = 1000.0 + key
        deadlines.stale(key)
        assert deadlines.earliest(timers.get) == 1000.0
        timers[key] = None
        deadlines.stale(key)
    assert deadlines.earliest(timers.get) == 1000.0
    assert len(deadlines._heap) <= 2 * len(deadlines._at) + 64
    timers[0] = None
    deadlines.stale(0)
    assert deadlines.earliest(timers.get) is None
    assert deadlines._heap == []


def test_put_is_what_earliest_finds_for_a_key_marked_stale() -> None:
    """A deadline put (known by the caller) against the same deadlines marked stale and
    asked for, through new, moved (earlier, later), unchanged and ended keys, and many
    ended keys behind a long one (the heap stays bounded)."""
    steps: list[tuple[int, float | None]] = [(0, 5.0), (1, 3.0), (1, 3.0), (1, 7.0), (0, 1.0),
                                             (2, 2.0), (0, None), (2, None), (1, None)]
    steps += [(k, 100.0 + k) for k in range(3, 400)] + [(k, None) for k in range(4, 400)]
    put, marked = Deadlines[int](), Deadlines[int]()
    timers: dict[int, float | None] = {}
    for key, due in steps:
        put.put(key, due)
        timers[key] = due
        marked.stale(key)
        assert put.earliest(timers.get) == marked.earliest(timers.get)
        assert len(put._heap) <= 2 * len(put._at) + 64
    assert put.earliest(timers.get) == 103.0


def test_earliest_than_another_deadline() -> None:
    """``than``, the node's other timers, is given back when earlier or the only one."""
    deadlines = Deadlines[str]()
    assert deadlines.earliest({}.get, None) is None
    assert deadlines.earliest({}.get, 4.0) == 4.0
    deadlines.put("a", 5.0)
    assert deadlines.earliest({}.get, None) == 5.0
    assert deadlines.earliest({}.get, 4.0) == 4.0
    assert deadlines.earliest({}.get, 6.0) == 5.0
