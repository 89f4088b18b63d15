"""Asyncio glue between a sans-I/O DMSC machine and its associations.

In aioquic's style the machine decides and this module only moves messages and timers:

* a message from the network goes to ``machine.receive(handle, msg, now)``;
* what ``machine.messages_to_send()`` returns is sent: an *answer* to a request
  received on an association (same association and transaction id, the request's
  answer type or ERROR) completes that request's
  transaction (on QUIC, the response on the request's stream, Section 9.1); a new
  *request* is sent as its own transaction and its answer (or the transport's
  failure, as an ERROR) is fed back to the machine; anything else is sent one-way;
* requests from different associations are fed round robin (:class:`Turns`): an
  association's first request in a turn of the event loop is fed at once, the others
  at the end of the turn, alternately with those of every other association that has
  several, for at most FAIR_ROUND_QUANTUM (then in the next turn), so one agent
  sending many costly requests at once delays another's by one of them, not by all,
  and one alone is never held back (Section 10.7);
* ``machine.get_timer()`` is armed on the event loop by the transports' one driver
  (:class:`~dmscproto.transport.driver.Driver`: once per loop iteration; a timer
  already armed for an earlier deadline is kept) and ``handle_timer`` called when it
  fires; events (``machine.next_event()``) are handed to ``on_event`` in order.

Nothing here runs a task or a timer per transaction: a request is answered through the
:class:`~dmscproto.transport.peer.Answer` :meth:`Pump.deliver` returns (its transport
sends the answer in the call that gives it, not a loop turn later), and a
transaction the machine starts reports back through the transport's ``start_request``
callback.  The machines' own timers are the transaction timers (Section 8): the pump
only stops a transport transaction when its transaction time has passed
(:func:`~dmscproto.transport.contract.transaction_time_of`, the longest its requester
machine waits, Section 9.3), so that an answer that never comes holds nothing.
The machine's clock is the driver's (seconds since the epoch, kept by the event loop's
clock: :mod:`dmscproto.transport.driver`).

The association a machine sees as a *handle* is an :class:`Association`: the
transport's connection (:class:`~dmscproto.transport.contract.Connection`) and the peer
identity the transport authenticated.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from ..codec.errors import EncodeError
from ..codec.messages import Error, Message
from ..codec.registry import ANSWER_TO, FAIR_ROUND_QUANTUM, ErrorCode, MessageType
from ..protocol.machine import Handle, ProtocolError
from ..security.ca import Identity
from ..transport.contract import Connection, transaction_time_of
from ..transport.driver import Driver, end_of_turn, epoch_clock
from ..transport.peer import Answer

log = logging.getLogger(__name__)


class Machine(Protocol):
    """The sans-I/O side: a gateway node, an agent endpoint.  One that also has
    ``has_output()`` (whether messages or events wait to be drained) is asked it after
    its events are handed over, instead of drained once more for what their handlers
    may have made it queue."""

    def receive(self, source: Handle, msg: Message, now: float) -> None: ...

    def messages_to_send(self) -> list[tuple[Handle, Message]]: ...

    def next_event(self) -> object | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


@dataclass(eq=False)
class Association:
    """One association, the handle machines address messages to.  ``identity`` is the
    one the transport authenticated; in lab mode (Section 9.4) it is None until the
    gateway's lab guard binds what the protocol proved (:mod:`.lab`)."""

    link: Connection
    identity: Identity | None
    #: The peer's certificate, for checks made after the handshake (Section 10).
    certificate: x509.Certificate | None = None

    def __repr__(self) -> str:
        return f"<{self.identity.uri if self.identity else 'unauthenticated'}>"


def _failure(msg: Message, exc: Exception) -> Error:
    """The ERROR a machine is fed when its request's transport transaction failed."""
    default = (ErrorCode.TARGET_UNREACHABLE if isinstance(exc, ConnectionError)
               else ErrorCode.INTERNAL_ERROR)  # else: a malformed answer (DecodeError)
    return Error(transaction_id=msg.transaction_id, status=getattr(exc, "code", default),
                 offending_type=int(msg.TYPE), diagnostic=str(exc))


class Turns:
    """Round robin between associations (module doc): an association that has had no
    turn in this loop iteration and has none queued goes at once (:meth:`first`); the
    others queue (:meth:`later`), and at the end of the turn the queues are served one
    ``go`` of each association at a time, round robin, until they are empty or
    FAIR_ROUND_QUANTUM has passed (the rest in the next turn)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._turn = end_of_turn(loop)
        self._served: set[Handle] = set()
        self._queues: dict[Handle, deque[Callable[[], bool]]] = {}
        self._scheduled = False

    def first(self, source: Handle) -> bool:
        """Whether ``source`` goes at once (it has had no turn in this loop iteration and
        has none queued): then this is its turn, and the caller goes."""
        if source in self._served or source in self._queues:
            return False
        self._served.add(source)
        self._schedule()
        return True

    def later(self, source: Handle, go: Callable[[], bool]) -> None:
        """Queue ``go`` for ``source``'s next turn; it returns False if it gave its turn
        away (its request was cancelled meanwhile)."""
        self._queues.setdefault(source, deque()).append(go)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:  # with the transmits at the end of this loop turn
            self._scheduled = True
            self._turn.add(self._round)

    def _round(self) -> None:
        self._scheduled = False
        self._served.clear()
        if not self._queues:  # no association had a second request in the turn
            return
        until = time.perf_counter() + FAIR_ROUND_QUANTUM
        while self._queues:
            for source in list(self._queues):
                queue = self._queues[source]
                go = queue.popleft()
                if not queue:
                    del self._queues[source]
                if go():  # a cancelled request gives its turn away
                    self._served.add(source)
            if time.perf_counter() >= until:
                break
        if self._served or self._queues:
            self._schedule()


class Pump:
    """Drives one sans-I/O machine (module docstring); its ``now`` is in seconds since
    the epoch (the machines put it in TIMESTAMP TLVs)."""

    def __init__(self, machine: Machine, *, on_event: Callable[[object], None] | None = None,
                 on_send: Callable[[Handle, Message], None] | None = None,
                 on_receive: Callable[[Handle, Message], None] | None = None) -> None:
        self.machine = machine
        self.on_event = on_event
        #: Called for every message sent and received (tracing, the demo's display).
        self.on_send = on_send
        self.on_receive = on_receive
        self._loop = asyncio.get_running_loop()
        #: Requests received and not answered yet, by (handle, txid): the type of their
        #: answer (besides ERROR) and its future.
        self._waiting: dict[tuple[Handle, int], tuple[MessageType, Answer]] = {}
        #: The transport transactions of requests the machine sent, by (handle, txid):
        #: the transport's key and when the pump stops it (its transaction time).
        self._outgoing: dict[tuple[Handle, int], tuple[int, float]] = {}
        #: Those times, earliest first: a heap of (time, order, key); an entry whose
        #: transaction ended stays until it comes up, or until the heap is rebuilt
        #: from ``_outgoing`` when it holds more than twice as many (:meth:`_start`).
        self._stops: list[tuple[float, int, tuple[Handle, int]]] = []
        self._order = itertools.count()
        self._turns = Turns(self._loop)
        self._has_output: Callable[[], bool] | None = getattr(machine, "has_output", None)
        self._driver = Driver(self, epoch=True, lazy=True, loop=self._loop)
        #: The driver's ``arm_soon`` without its frame (a flush ends with it, 4 a
        #: routed call at the agents): its arm added to the end of the turn directly.
        self._arm, self._at_end = self._driver.arm, end_of_turn(self._loop).add
        #: The driver's clock, read directly (asked for with every message).
        self._clock = epoch_clock(self._loop)
        #: The machine's methods of every message and flush, bound once, not loaded
        #: through ``self.machine`` each time (a gateway node, sans I/O: 361.4k -> 359.2k
        #: instructions a routed call, callgrind).
        self._receive, self._to_send = machine.receive, machine.messages_to_send
        self._next_event, self._timer = machine.next_event, machine.get_timer
        self._flushing = 0
        self._closed = False

    # --- input -----------------------------------------------------------------------
    def deliver(self, source: Handle, msg: Message) -> Answer:
        """A message received from ``source``: the future of the machine's answer to a
        request, done with None at once for anything else.  A transport sends the
        answer when it is given (cancelling the future gives up on it)."""
        future = Answer(loop=self._loop)
        answer_type = ANSWER_TO.get(msg.TYPE)
        if answer_type is None:
            self.feed(source, msg)
            future.set_result(None)
            return future
        key = (source, msg.transaction_id)
        if key in self._waiting:  # a duplicate while the first is being answered
            future.set_result(Error(transaction_id=msg.transaction_id,
                                    status=ErrorCode.UNEXPECTED_MESSAGE,
                                    offending_type=int(msg.TYPE),
                                    diagnostic="transaction id already outstanding"))
            return future
        # The machine's own timers answer every request (module docstring).
        self._waiting[key] = (answer_type, future)
        if self._turns.first(source):
            self.feed(source, msg)
        else:
            self._turns.later(source, functools.partial(self._admit, key, msg, future))
        return future

    def _admit(self, key: tuple[Handle, int], msg: Message, future: Answer) -> bool:
        if future.done():  # the transport gave up on it (its connection closed)
            self._waiting.pop(key, None)
            return False
        self.feed(key[0], msg)
        return True

    def feed(self, source: Handle, msg: Message) -> None:
        """Give ``msg`` to the machine without waiting for an answer."""
        if self._closed:
            return
        if self.on_receive is not None:
            self.on_receive(source, msg)
        try:
            self._receive(source, msg, self._clock.now())
        except ProtocolError as err:  # the machine queued the draft's answer, if any
            log.info("refused %s from %r: %s", msg.TYPE.name, source, err)
        self.flush()

    def now(self) -> float:
        """The machine's clock: seconds since the epoch (module docstring)."""
        return self._clock.now()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A local call on the machine, then send what it queued."""
        try:
            return fn(*args, **kwargs)
        finally:
            self.flush()

    # --- output ----------------------------------------------------------------------
    def flush(self) -> None:
        """Send what the machine queued, hand over its events, re-arm its timer."""
        to_send, next_event = self._to_send, self._next_event
        self._flushing += 1
        try:
            while True:
                for dest, msg in to_send():
                    self._send(dest, msg)
                event = next_event()
                if event is None:
                    break
                while event is not None:  # a handler may make local calls: loop again
                    if self.on_event is not None:
                        self.on_event(event)
                    event = next_event()
                if self._has_output is not None and not self._has_output():
                    break
        finally:
            self._flushing -= 1
        self._at_end(self._arm)  # once per loop iteration, however many flushes

    def _send(self, dest: Handle, msg: Message) -> None:
        if self.on_send is not None:
            self.on_send(dest, msg)
        key = (dest, msg.transaction_id)
        waiting = self._waiting.get(key)
        if waiting is not None:
            answer_type, future = waiting
            if msg.TYPE is answer_type or msg.TYPE is MessageType.ERROR:
                del self._waiting[key]
                if not future.done():
                    future.give(msg)  # the transport sends it in this call
                return
        if not isinstance(dest, Association):
            log.error("cannot send %s to %r: not an association", msg.TYPE.name, dest)
            return
        if msg.TYPE in ANSWER_TO:
            self._start(dest, msg, key)
            return
        try:
            dest.link.send(msg)
        except ConnectionError as exc:
            log.info("cannot send %s to %r: %s", msg.TYPE.name, dest, exc)
        except EncodeError as exc:  # e.g. over a datagram's limit: never into a timer
            log.error("cannot send %s to %r: %s", msg.TYPE.name, dest, exc)

    def _start(self, dest: Association, msg: Message, key: tuple[Handle, int]) -> None:
        """A request of the machine's, as a transport transaction of its own; ``key`` is
        ``(dest, msg.transaction_id)``, as :meth:`_send` made it."""
        try:
            token = dest.link.start_request(msg, functools.partial(self._answered, key, msg))
        except Exception as exc:  # fed back later, as an answer would be, not in this flush
            self._loop.call_soon(self.feed, dest, _failure(msg, exc))
            return
        at = self._clock.now() + transaction_time_of(msg)
        self._outgoing[key] = (token, at)
        if len(self._stops) > 2 * len(self._outgoing) + 64:  # mostly ended: rebuild
            self._stops = [(t, next(self._order), k) for k, (_tok, t) in self._outgoing.items()]
            heapq.heapify(self._stops)
        else:
            heapq.heappush(self._stops, (at, next(self._order), key))

    def _answered(self, key: tuple[Handle, int], msg: Message,
                  outcome: Message | Exception) -> None:
        """A transaction of the machine's ended (called by the transport)."""
        if self._outgoing.pop(key, None) is None:
            return
        answer = _failure(msg, outcome) if isinstance(outcome, Exception) else outcome
        if self._flushing:  # the transport ended it inside a flush (its connection closed)
            self._loop.call_soon(self.feed, key[0], answer)
        else:
            self.feed(key[0], answer)

    def abandon(self, dest: Handle, txid: int) -> None:
        """Stop the transport transaction of the request ``txid`` sent to ``dest`` (the
        machine abandoned it): on QUIC its stream is stopped (STOP_SENDING), so the
        answer is not even received."""
        outgoing = self._outgoing.pop((dest, txid), None)
        if outgoing is not None and isinstance(dest, Association):
            dest.link.stop_request(outgoing[0])

    # --- timers, for the driver ------------------------------------------------------
    def get_timer(self) -> float | None:
        at = self._timer()
        if not self._outgoing:  # none running: the stops left are of ended ones (a
            self._stops.clear()  # routed call's, when its answer came), none is due
            return at
        stop = self._next_stop()
        if stop is not None and (at is None or stop < at):
            at = stop
        return at

    def _next_stop(self) -> float | None:
        """When the next transport transaction running is stopped (the heap's entries of
        ended ones on top are dropped)."""
        stops, outgoing = self._stops, self._outgoing
        while stops:
            at, _order, key = stops[0]
            running = outgoing.get(key)
            if running is not None and running[1] == at:
                return at
            heapq.heappop(stops)
        return None

    def handle_timer(self, now: float) -> None:
        """The machine's timers, then the transport transactions past their transaction
        time (their requester machines gave up on them before)."""
        if self._closed:
            return
        self.machine.handle_timer(now)
        while (at := self._next_stop()) is not None and at <= now:
            key = heapq.heappop(self._stops)[2]
            token = self._outgoing.pop(key)[0]
            assert isinstance(key[0], Association)
            key[0].link.stop_request(token, ErrorCode.TRANSACTION_TIMEOUT)
        self.flush()

    # --- shutdown --------------------------------------------------------------------
    async def close(self) -> None:
        """Stop the timer, stop the transactions in flight and give up on the requests
        not answered yet."""
        self._closed = True
        self._driver.stop()
        for _answer_type, future in self._waiting.values():
            if not future.done():
                future.cancel()
        outgoing, self._outgoing, self._stops = self._outgoing, {}, []
        for (dest, _txid), (token, _at) in outgoing.items():
            if isinstance(dest, Association):
                dest.link.stop_request(token)
