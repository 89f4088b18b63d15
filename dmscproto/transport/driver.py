"""The one driver of sans-I/O objects on asyncio (draft-dmsc-protocol-00, Section 8).

Everything that keeps time here is sans-I/O in aioquic's style: a protocol machine
(:class:`~dmscproto.gateway.node.GatewayNode`, the agent's client), aioquic's
``QuicConnection``, the datagram transports' channel and reliability layer.  Each says
when it next needs the time (``get_timer()``), is told when that time has come
(``handle_timer(now)``) and queues what it has to send.  :class:`Driver` is the one
piece that runs them on the event loop:

* **clock**: one clock, the event loop's (monotonic): ``now`` for the object is the
  loop's time (:meth:`Driver.now`), for the protocol machines (which put it in TIMESTAMP
  TLVs and records) shifted to seconds since the epoch by the loop's
  :func:`epoch_offset`, read once; a deadline is a loop time less that offset, so no
  second clock is read and a step of the system clock moves no timer (the machines see
  it when the process starts again);
* **timers**: one event-loop timer per object, armed at ``get_timer()``; when it fires
  the object gets ``handle_timer(now)`` with ``now`` never before the deadline asked
  for (asyncio may run a timer a clock resolution early), then ``after`` (what the
  owner does with the output) runs and the timer is armed afresh.  ``lazy`` keeps a
  timer already armed for an earlier deadline (when it fires before the object's
  deadline, it is only armed afresh: nothing is due yet), for objects whose deadline
  moves often;
* **flush**: :func:`end_of_turn` runs work once at the end of the current event-loop
  turn, after everything that ran in the turn queued its output, however often it was
  asked for (QUIC transmits of every connection of the loop together, a machine's timer
  re-armed once per turn).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Timed(Protocol):
    """A sans-I/O object's timer interface (aioquic's ``get_timer``/``handle_timer``)."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class EndOfTurn:
    """Work deferred to the end of the current event-loop turn, each piece once (the
    module docstring's flush): one loop callback for all of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Callable[[], None], None] = {}
        self._handle: asyncio.Handle | None = None

    def add(self, work: Callable[[], None]) -> None:
        self._due[work] = None
        if self._handle is None:
            self._handle = self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._handle = None
        due, self._due = self._due, {}
        for work in due:
            try:
                work()
            except Exception:  # as if each had a callback of its own: log, go on
                log.exception("deferred work failed: %r", work)


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndOfTurn] = (
    weakref.WeakKeyDictionary())


def end_of_turn(loop: asyncio.AbstractEventLoop) -> EndOfTurn:
    """The :class:`EndOfTurn` of ``loop``."""
    turn = _TURNS.get(loop)
    if turn is None:
        turn = _TURNS[loop] = EndOfTurn(loop)
    return turn


_OFFSETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = (
    weakref.WeakKeyDictionary())


def epoch_offset(loop: asyncio.AbstractEventLoop) -> float:
    """Seconds since the epoch at ``loop``'s time zero, read once per loop: the loop's time
    plus this is the machines' clock (module docstring)."""
    offset = _OFFSETS.get(loop)
    if offset is None:
        offset = _OFFSETS[loop] = time.time() - loop.time()
    return offset


class Driver:
    """Runs one sans-I/O object's timer on the event loop (module docstring).  ``after``
    runs after each ``handle_timer`` (send what it queued), unless the object's own
    ``handle_timer`` does; with ``epoch`` the object's time is seconds since the epoch
    (a protocol machine's), else the loop's."""

    __slots__ = ("_after", "_at", "_handle", "_lazy", "_loop", "_offset", "_stopped",
                 "_turn", "target")

    def __init__(self, target: Timed, after: Callable[[], None] | None = None, *,
                 epoch: bool = False, lazy: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.target = target
        self._after = after
        self._offset = epoch_offset(self._loop) if epoch else 0.0
        self._lazy = lazy
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._stopped = False
        #: The loop's EndOfTurn, looked up once (a pump's arm_soon() runs on every flush,
        #: several times a routed call).
        self._turn = end_of_turn(self._loop)

    def now(self) -> float:
        """The object's time (module docstring)."""
        return self._loop.time() + self._offset

    def arm(self) -> None:
        """Arm the timer at the object's ``get_timer()``, or keep one armed for an
        earlier deadline (``lazy``); none when the object needs none."""
        if not self._stopped:
            self._arm_at(self.target.get_timer())

    def _arm_at(self, at: float | None) -> None:
        if at == self._at or (
                self._lazy and self._at is not None and at is not None and at >= self._at):
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = at
        if at is None:
            return
        self._handle = self._loop.call_at(at - self._offset, self._fire)

    def arm_soon(self) -> None:
        """:meth:`arm` once, at the end of this event-loop turn."""
        self._turn.add(self.arm)

    def _fire(self) -> None:
        at = self._at or 0.0
        self._handle = self._at = None
        if self._stopped:
            return
        if self._lazy:  # armed for a deadline that has since moved later: re-arm only
            due = self.target.get_timer()
            if due is None or due > at:
                self._arm_at(due)
                return
        self.target.handle_timer(max(self.now(), at))
        if self._after is not None:
            self._after()
        self.arm()

    def stop(self) -> None:
        """Disarm for good."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None
