"""Event loop choice for DMSC processes: asyncio's own by default, uvloop on request.

tools/bench/route.py measures both.  On this project's shared 2-core box, uvloop's
effect on routed calls through a gateway process varied from x0.73 to x1.22 between
runs (no consistent gain), while it sped up a plain aioquic echo, which sends one
datagram per request, by up to x2.  So uvloop is not the default."""

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
