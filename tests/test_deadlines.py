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
