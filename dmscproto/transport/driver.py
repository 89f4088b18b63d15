"""The one driver of sans-I/O objects on asyncio (draft-dmsc-protocol-00, Section 8).

Everything that keeps time here is sans-I/O in aioquic's style: a protocol machine
(:class:`~dmscproto.gateway.node.GatewayNode`, the agent's client), aioquic's
``QuicConnection``, the datagram transports' channel and reliability layer.  Each says
when it next needs the time (``get_timer()``), is told when that time has come
(``handle_timer(now)``) and queues what it has to send.  :class:`Driver` is the one
piece that runs them on the event loop:

* **clock**: one clock, the event loop's (monotonic): ``now`` for the object is the
  loop's time (:meth:`Driver.now`), for the protocol machines (which put it in TIMESTAMP
  TLVs, records and token checks) shifted to seconds since the epoch by their loop's
  :class:`EpochClock` offset, and every timer is armed on the loop's clock at the
  deadline less that offset.  The offset is read again only when the system clock has
  been stepped (by more than CLOCK_STEP): the machines' time then follows it, and the
  timers already armed still run out when they were due;
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
  re-armed once per turn); a link's socket reader holds it while it handles the
  datagrams it read, and runs it when done;
* **budget**: :func:`turn_budget` is the CPU time one turn of the loop gives to work that
  can wait for the next turn (:class:`TurnBudget`), so that no turn, and no wait of a
  timer or a datagram for its turn, lasts long: a QUIC socket's waiting datagrams are
  read, and large requests decoded a step at a time, while it lasts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

from ..codec.registry import limit

log = logging.getLogger(__name__)


class Timed(Protocol):
    """A sans-I/O object's timer interface (aioquic's ``get_timer``/``handle_timer``)."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class EndOfTurn:
    """Work deferred to the end of the current event-loop turn, each piece once (the
    module docstring's flush): one loop callback for all of it.  While a socket's
    reader holds it (:attr:`held`), work is not given a callback of its own: it runs
    when the reader is done (:meth:`release`), in the same turn, so that the answers to
    the datagrams read leave without another pass of the event loop (a poll of the
    sockets and a callback per turn saved); :meth:`follow` does the same for a task
    woken by what was read."""

    __slots__ = ("_due", "_follow", "_handle", "_loop", "held")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Callable[[], None], None] = {}
        self._handle: asyncio.Handle | None = None
        #: Whether a socket's reader holds the work added (it sets this, and the one
        #: that set it calls :meth:`release`; a reader further down finds it set and
        #: leaves both to that one): an attribute, not a method's call, at every
        #: datagram read.
        self.held = False
        self._follow = False

    def add(self, work: Callable[[], None]) -> None:
        self._due[work] = None
        if self._handle is None and not self.held:
            self._handle = self._loop.call_soon(self._run)

    def follow(self) -> None:
        """Have the next run come after the loop callbacks scheduled so far (a task a
        future's result just woke, say), so that the work they add runs in their loop
        turn, not in one more; while held, it is scheduled when released, after every
        callback the reader's datagrams scheduled.  Work already due moves with the run:
        called from a callback queued ahead of that run, it runs one turn later (at most:
        a datagram's :meth:`release` runs it)."""
        if self.held:
            self._follow = True
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_soon(self._run)

    def release(self) -> None:
        """Run the work due now (that of the loop callback already scheduled too), then
        schedule the run a :meth:`follow` while held asked for."""
        self.held = False
        due = self._due
        if due:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self._due = {}
            for work in due:
                try:
                    work()
                except Exception:  # as if each had a callback of its own: log, go on
                    log.exception("deferred work failed: %r", work)
        if self._follow:
            self._follow = False
            self.follow()

    def _run(self) -> None:
        """The loop callback: :meth:`release`'s run (nothing holds the work while a loop
        callback runs, and no :meth:`follow` waits for a release)."""
        self._handle = None
        self.release()


_T = TypeVar("_T")


def _of_loop(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T],
             loop: asyncio.AbstractEventLoop,
             make: Callable[[asyncio.AbstractEventLoop], _T]) -> _T:
    """``loop``'s one object of ``table``, made by ``make`` on first use."""
    got = table.get(loop)
    if got is None:
        got = table[loop] = make(loop)
    return got


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndOfTurn] = (
    weakref.WeakKeyDictionary())


def end_of_turn(loop: asyncio.AbstractEventLoop) -> EndOfTurn:
    """The :class:`EndOfTurn` of ``loop``."""
    return _of_loop(_TURNS, loop, EndOfTurn)


class TurnBudget:
    """``seconds`` of CPU time a turn of the event loop gives to work that can wait for
    the next turn (module docstring's **budget**), shared by everything on the loop:
    reading a socket's waiting datagrams, decoding large PDUs, a gateway's learning of
    records.  A turn is counted in the loop thread's CPU time from its start (a
    callback first in each turn while the budget is in use), so work that cannot wait
    spends it too.  Reading and decoding ask :meth:`fits` with a piece's expected cost:
    they take at most half of the turn (the rest is left to the work they feed), but
    the first piece of a turn always runs, so each turn makes progress; a piece that
    does not fit waits for the next turn.  Other work asks :meth:`left`."""

    __slots__ = ("_claimed", "_clock", "_loop", "_marked", "_start", "_used", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self._loop = loop
        self.seconds = seconds
        self._clock = clock
        self._start = 0.0
        #: Whether the turn marker is scheduled, a piece ran in this turn, the budget was
        #: asked about in this turn (the marker keeps running while it is).
        self._marked = self._claimed = self._used = False

    def _mark(self) -> None:
        """The first callback of a turn: the turn's count starts."""
        self._start = self._clock()
        self._claimed = False
        if self._used:
            self._used = False
            self._loop.call_soon(self._mark)
        else:
            self._marked = False

    def left(self) -> float:
        """CPU seconds left in this turn (negative: overspent)."""
        self._used = True
        if not self._marked:  # the first use after idle turns: counted from now
            self._marked = True
            self._start = self._clock()
            self._claimed = False
            self._loop.call_soon(self._mark)
        return self.seconds - (self._clock() - self._start)

    def fits(self, cost: float) -> bool:
        """Whether a piece of reading or decoding expected to cost ``cost`` runs in this
        turn (class docstring)."""
        if self.left() - self.seconds / 2 >= cost or not self._claimed:
            self._claimed = True
            return True
        return False


_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary())


def turn_budget(loop: asyncio.AbstractEventLoop) -> TurnBudget:
    """The :class:`TurnBudget` of ``loop``: LEARN_SLICE a turn unless its owner sets
    ``seconds`` (a gateway: its configured LEARN_SLICE)."""
    return _of_loop(_BUDGETS, loop, _learn_slice_budget)


def _learn_slice_budget(loop: asyncio.AbstractEventLoop) -> TurnBudget:
    return TurnBudget(loop, limit("LEARN_SLICE"))


#: Seconds the system clock may drift from the machines' clock before it counts as
#: stepped and they follow it (both are slewed alike by NTP: only a step parts them).
CLOCK_STEP = 1.0


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``: asyncio's is ``time.monotonic()``, called here without its method
    (a Python call at every datagram received, every transmit, every machine's ``now``)."""
    if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


class EpochClock:
    """The machines' clock on one loop (module docstring): the loop's time plus
    ``offset``, seconds since the epoch at the loop's time zero."""

    __slots__ = ("_time", "offset")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._time = loop_clock(loop)
        self.offset = time.time() - self._time()

    def now(self) -> float:
        clock = self._time  # self._time() is never specialised (~100 instructions more)
        at = clock()
        now = at + self.offset
        wall = time.time()
        if abs(wall - now) > CLOCK_STEP:  # the system clock was stepped: follow it
            self.offset = wall - at
            return wall
        return now


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EpochClock] = (
    weakref.WeakKeyDictionary())


def epoch_clock(loop: asyncio.AbstractEventLoop) -> EpochClock:
    """The :class:`EpochClock` of ``loop``."""
    return _of_loop(_CLOCKS, loop, EpochClock)


class Driver:
    """Runs one sans-I/O object's timer on the event loop (module docstring).  ``after``
    runs after each ``handle_timer`` (send what it queued), unless the object's own
    ``handle_timer`` does; with ``epoch`` the object's time is seconds since the epoch
    (a protocol machine's), else the loop's."""

    __slots__ = ("_after", "_at", "_clock", "_handle", "_lazy", "_loop", "_stopped",
                 "_turn", "target")

    def __init__(self, target: Timed, after: Callable[[], None] | None = None, *,
                 epoch: bool = False, lazy: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.target = target
        self._after = after
        self._clock = epoch_clock(self._loop) if epoch else None
        self._lazy = lazy
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._stopped = False
        #: The loop's EndOfTurn, looked up once (a pump's arm_soon() runs on every flush,
        #: several times a routed call).
        self._turn = end_of_turn(self._loop)

    def now(self) -> float:
        """The object's time (module docstring)."""
        return self._loop.time() if self._clock is None else self._clock.now()

    def arm(self) -> None:
        """Arm the timer at the object's ``get_timer()``, or keep one armed for an
        earlier deadline (``lazy``); none when the object needs none."""
        if self._stopped:
            return
        at = self.target.get_timer()
        armed = self._at
        if at != armed and (armed is None or at is None or at < armed or not self._lazy):
            self._arm_at(at)

    def _arm_at(self, at: float | None) -> None:
        """Arm the timer at ``at`` (none: disarmed), in place of the one armed."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = at
        if at is None:
            return
        self._handle = self._loop.call_at(
            at if self._clock is None else at - self._clock.offset, self._fire)

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
