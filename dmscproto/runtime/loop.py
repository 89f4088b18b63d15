"""Event loop choice for DMSC processes: asyncio's own by default, uvloop on request.

Measured with tools/bench/route.py on a quiet 2-core box, uvloop *lowers* the routed
call rate (x0.73: 2,770 vs 3,470 calls/s, gateway and agents on the same loop kind)
while it raises a plain aioquic echo's (x1.2, one send per request, where uvloop's
cheaper sends pay).  Why the routed path is slower on uvloop is not pinned down; with
both loops in one process it is not (x1.2 there).  So uvloop is not the default."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

LoopName = Literal["asyncio", "uvloop"]


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run(coro: Coroutine[Any, Any, T], loop: LoopName = "asyncio") -> T:
    """``asyncio.run(coro)`` on asyncio's loop or on uvloop."""
    if loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)
