"""Event loop choice for DMSC processes: asyncio's own by default, uvloop on request.

tools/bench/route.py measures both.  On this project's shared 2-core box, uvloop's
effect on routed calls through a gateway process varied from x0.73 to x1.22 between
runs (no consistent gain), while it sped up a plain aioquic echo, which sends one
datagram per request, by up to x2.  So uvloop is not the default.

Also here: :class:`LoopLag`, a probe of the event loop's longest stall, and
:class:`HeapFreezer`, which keeps the cyclic garbage collector from stalling the loop
as the registry grows."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

LoopName = Literal["asyncio", "uvloop"]


def run(coro: Coroutine[Any, Any, T], loop: LoopName = "asyncio") -> T:
    """``asyncio.run(coro)`` on asyncio's loop or on uvloop."""
    if loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


class LoopLag:
    """The longest the running event loop was kept busy, measured from inside: a task
    sleeps ``period`` at a time and notes how much later than asked it woke up, and how
    much CPU time the loop's thread used meanwhile (``worst_cpu``: what the stall cost
    the process, whatever else the machine ran).  Costs about a thousand wake-ups a
    second: a probe for benchmarks and diagnosis."""

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        #: The longest stall seen, and the last one, in seconds.
        self.worst = 0.0
        self.last = 0.0
        #: The most thread CPU time between two wake-ups, in seconds.
        self.worst_cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The ticking task, while it runs."""
        return self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last, last_cpu = loop.time(), time.thread_time()
        while True:
            await asyncio.sleep(self.period)
            now, cpu = loop.time(), time.thread_time()
            self.last = now - last - self.period
            self.worst = max(self.worst, self.last)
            self.worst_cpu = max(self.worst_cpu, cpu - last_cpu)
            last, last_cpu = now, cpu

    async def stop(self) -> float:
        """Stop the probe; the longest stall in milliseconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.worst * 1000


class HeapFreezer:
    """Keeps a growing registry out of the cyclic garbage collector's full collections.

    A full collection visits every tracked object, about 0.3 us each: at 100,000 learned
    records (several objects each) that stalls the loop for a second or more, and
    CPython runs one whenever the heap has grown by a quarter.  So every ``every``
    records learned, the garbage is collected (cheap: only what is not frozen yet is
    visited) and what survives is frozen (``gc.freeze``): never visited again, still
    freed by reference counting when the registry drops it.  Only reference cycles that
    are alive at a freeze and die later are never collected; the collection just before
    each freeze keeps that to what is in use at that moment.

    A collection costs what was allocated since the last freeze and still lives:
    every 100 records decoded or learned (a learner counts each record twice, a
    sender once), up to about 2 ms (every 250 learned took up to 4-6 ms, every 1,000
    5-17 ms of CPU in ``tools/bench/bulk_sync.py`` on a loaded machine), for the same
    CPU in all.  ``defer`` runs it: a gateway gives ``loop.call_soon``, so that it is an
    event-loop callback of its own, not added to the step that learned the records;
    by default it runs at once.
    """

    def __init__(self, every: int = 100,
                 defer: Callable[[Callable[[], None]], object] = lambda f: f()) -> None:
        self.every = every
        self._defer = defer
        self._grown = 0
        self._due = False

    def grew(self, n: int) -> None:
        """``n`` more records (or record versions) are held."""
        self._grown += n
        if self._grown >= self.every and not self._due:
            self._due = True
            self._defer(self.freeze)

    def freeze(self) -> None:
        """Collect, then freeze what survives (also once when a gateway has started, so
        that the first collection here does not visit every module's objects)."""
        self._grown = 0
        self._due = False
        gc.collect()
        gc.freeze()
