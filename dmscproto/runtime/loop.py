"""Event loop choice for DMSC processes: uvloop when it is installed (it raises the
routed request rate, see tools/bench/route.py), else asyncio's own."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

LoopName = Literal["auto", "asyncio", "uvloop"]


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run(coro: Coroutine[Any, Any, T], loop: LoopName = "auto") -> T:
    """``asyncio.run(coro)`` on uvloop (``auto``: if installed) or on asyncio's loop."""
    if loop == "uvloop" or (loop == "auto" and have_uvloop()):
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)
