"""Event-loop helpers of a gateway process: the stall probe and the heap freezer."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

import pytest

from dmscproto.runtime.loop import HeapFreezer, LoopLag


def test_loop_lag_sees_a_blocked_loop() -> None:
    async def main() -> float:
        lag = LoopLag()
        lag.start()
        await asyncio.sleep(0.01)
        time.sleep(0.05)  # the loop is blocked
        await asyncio.sleep(0.01)
        return await lag.stop()

    assert asyncio.run(main()) >= 45


def test_heap_freezer_collects_then_freezes_every_n_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda: calls.append("collect"))
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    freezer = HeapFreezer(every=10)
    freezer.grew(6)
    assert calls == []
    freezer.grew(6)
    assert calls == ["collect", "freeze"]
    freezer.grew(9)
    assert calls == ["collect", "freeze"]
    deferred: list[Callable[[], None]] = []  # a gateway's: a loop callback of its own
    later = HeapFreezer(every=10, defer=deferred.append)
    later.grew(12)
    later.grew(12)
    assert calls == ["collect", "freeze"] and len(deferred) == 1  # due once
    deferred[0]()
    assert calls == ["collect", "freeze"] * 2
