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
  association has at most one request fed per event loop iteration while others wait,
  so one agent sending many costly requests at once delays another's by one of them,
  not by all (Section 10.7);
* ``machine.get_timer()`` is armed on the event loop (once per loop iteration; a timer
  already armed for an earlier deadline is kept) and ``handle_timer`` called when it
  fires; events (``machine.next_event()``) are handed to ``on_event`` in order.

The association a machine sees as a *handle* is an :class:`Association`: the
transport's connection (:class:`~dmscproto.transport.contract.Connection`) and the peer
identity the transport authenticated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from ..codec.errors import EncodeError
from ..codec.messages import Error, Message
from ..codec.registry import (
    ANSWER_TO,
    TRANSPORT_TIMEOUT_MARGIN,
    ErrorCode,
    MessageType,
    timer,
)
from ..protocol.machine import Handle, ProtocolError
from ..security.ca import Identity
from ..transport.contract import Connection

log = logging.getLogger(__name__)

#: How long a transaction this end starts may take at the transport before it is
#: abandoned: the longest protocol transaction timer (a requester's wait for a relayed
#: ROUTE_REQUEST or TRACE_REQUEST: the gateway's ROUTE_TIMEOUT plus REQUEST_TIMEOUT,
#: Section 9.3), plus a margin so the machine's own timer (which decides) fires first.
TRANSPORT_TIMEOUT = timer("REQUEST_TIMEOUT") + timer("ROUTE_TIMEOUT") + TRANSPORT_TIMEOUT_MARGIN


class Machine(Protocol):
    """The sans-I/O side: a gateway node, an agent endpoint."""

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


@dataclass(slots=True)
class _Waiting:
    request_type: MessageType
    future: asyncio.Future[Message]


def _give_up(future: asyncio.Future[Message], msg: Message) -> None:
    if not future.done():
        log.error("no answer to %s from the machine", msg.TYPE.name)
        future.set_result(Error(transaction_id=msg.transaction_id,
                                status=ErrorCode.INTERNAL_ERROR, offending_type=int(msg.TYPE),
                                diagnostic="no answer"))


class Turns:
    """Round robin between associations (module doc): :meth:`turn` returns at once for
    an association that has had no turn in this loop iteration and none queued; the
    others queue, and each later iteration wakes the first waiting request of every
    association that has one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._served: set[Handle] = set()
        self._queues: dict[Handle, deque[asyncio.Future[None]]] = {}
        self._scheduled = False

    async def turn(self, source: Handle) -> None:
        if source not in self._served and source not in self._queues:
            self._served.add(source)
            self._schedule()
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._queues.setdefault(source, deque()).append(waiter)
        self._schedule()
        await waiter

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._round)

    def _round(self) -> None:
        self._scheduled = False
        self._served.clear()
        for source in list(self._queues):
            queue = self._queues[source]
            waiter = queue.popleft()
            if not queue:
                del self._queues[source]
            if not waiter.done():  # a cancelled request gives its turn away
                waiter.set_result(None)
                self._served.add(source)
        if self._served:
            self._schedule()


class Pump:
    """Drives one sans-I/O machine (module docstring).  ``clock`` gives ``now`` in
    seconds since the epoch (the machines put it in TIMESTAMP TLVs)."""

    def __init__(self, machine: Machine, *, on_event: Callable[[object], None] | None = None,
                 on_send: Callable[[Handle, Message], None] | None = None,
                 on_receive: Callable[[Handle, Message], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.machine = machine
        self.on_event = on_event
        #: Called for every message sent and received (tracing, the demo's display).
        self.on_send = on_send
        self.on_receive = on_receive
        self.clock = clock
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[tuple[Handle, int], _Waiting] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The transport transactions of requests the machine sent, by (handle, txid).
        self._outgoing: dict[tuple[Handle, int], asyncio.Task[None]] = {}
        self._turns = Turns(self._loop)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._arm_soon = False
        self._closed = False

    # --- input -----------------------------------------------------------------------
    async def deliver(self, source: Handle, msg: Message) -> Message | None:
        """A message received from ``source``.  For a request, wait until the machine
        answers it and return the answer; for anything else return None at once."""
        if msg.TYPE not in ANSWER_TO:
            self.feed(source, msg)
            return None
        key = (source, msg.transaction_id)
        if key in self._waiting:  # a duplicate while the first is being answered
            return Error(transaction_id=msg.transaction_id,
                         status=ErrorCode.UNEXPECTED_MESSAGE,
                         offending_type=int(msg.TYPE),
                         diagnostic="transaction id already outstanding")
        future: asyncio.Future[Message] = self._loop.create_future()
        self._waiting[key] = _Waiting(msg.TYPE, future)
        # The machine's own timers answer every request; this is only a safety net.
        guard = self._loop.call_later(TRANSPORT_TIMEOUT, _give_up, future, msg)
        try:
            await self._turns.turn(source)
            self.feed(source, msg)
            return await future
        finally:
            guard.cancel()
            self._waiting.pop(key, None)

    def feed(self, source: Handle, msg: Message) -> None:
        """Give ``msg`` to the machine without waiting for an answer."""
        if self._closed:
            return
        if self.on_receive is not None:
            self.on_receive(source, msg)
        try:
            self.machine.receive(source, msg, self.clock())
        except ProtocolError as err:  # the machine queued the draft's answer, if any
            log.info("refused %s from %r: %s", msg.TYPE.name, source, err)
        self.flush()

    def now(self) -> float:
        return self.clock()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A local call on the machine, then send what it queued."""
        try:
            return fn(*args, **kwargs)
        finally:
            self.flush()

    # --- output ----------------------------------------------------------------------
    def flush(self) -> None:
        """Send what the machine queued, hand over its events, re-arm its timer."""
        machine = self.machine
        while True:
            messages = machine.messages_to_send()
            for dest, msg in messages:
                self._send(dest, msg)
            event = machine.next_event()
            if event is None and not messages:
                break
            while event is not None:  # a handler may make local calls: loop again
                if self.on_event is not None:
                    self.on_event(event)
                event = machine.next_event()
        if not self._arm_soon:  # once per loop iteration, however many flushes
            self._arm_soon = True
            self._loop.call_soon(self._arm)

    def _send(self, dest: Handle, msg: Message) -> None:
        if self.on_send is not None:
            self.on_send(dest, msg)
        waiting = self._waiting.get((dest, msg.transaction_id))
        if waiting is not None and (msg.TYPE is MessageType.ERROR
                                    or msg.TYPE is ANSWER_TO[waiting.request_type]):
            if not waiting.future.done():
                waiting.future.set_result(msg)
            return
        if not isinstance(dest, Association):
            log.error("cannot send %s to %r: not an association", msg.TYPE.name, dest)
            return
        if msg.TYPE in ANSWER_TO:
            key = (dest, msg.transaction_id)
            task = self._loop.create_task(self._transact(dest, msg))
            self._tasks.add(task)
            self._outgoing[key] = task
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda t: self._outgoing.pop(key, None)
                                   if self._outgoing.get(key) is t else None)
            return
        try:
            dest.link.send(msg)
        except ConnectionError as exc:
            log.info("cannot send %s to %r: %s", msg.TYPE.name, dest, exc)
        except EncodeError as exc:  # e.g. over a datagram's limit: never into a timer
            log.error("cannot send %s to %r: %s", msg.TYPE.name, dest, exc)

    def abandon(self, dest: Handle, txid: int) -> None:
        """Stop the transport transaction of the request ``txid`` sent to ``dest`` (the
        machine abandoned it): on QUIC its stream is stopped (STOP_SENDING), so the
        answer is not even received."""
        task = self._outgoing.pop((dest, txid), None)
        if task is not None:
            task.cancel()

    async def _transact(self, dest: Association, msg: Message) -> None:
        try:
            answer = await dest.link.request(msg, TRANSPORT_TIMEOUT)
        except ConnectionError as exc:  # TransportError: code says why
            code = getattr(exc, "code", ErrorCode.TARGET_UNREACHABLE)
            answer = Error(transaction_id=msg.transaction_id, status=code,
                           offending_type=int(msg.TYPE), diagnostic=str(exc))
        except Exception as exc:  # a malformed answer (DecodeError)
            code = getattr(exc, "code", ErrorCode.INTERNAL_ERROR)
            answer = Error(transaction_id=msg.transaction_id, status=code,
                           offending_type=int(msg.TYPE), diagnostic=str(exc))
        self.feed(dest, answer)

    # --- timers ----------------------------------------------------------------------
    def _arm(self) -> None:
        self._arm_soon = False
        if self._closed:
            return
        at = self.machine.get_timer()
        if at is None or (self._timer_at is not None and at >= self._timer_at):
            # A timer armed for an earlier deadline stays: firing early is harmless
            # (handle_timer runs only what is due, then the timer is armed afresh), and
            # re-arming on every deadline change would cost more than it saves.
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_later(max(0.0, at - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        if self._closed:
            return
        self.machine.handle_timer(self.clock())
        self.flush()

    # --- shutdown --------------------------------------------------------------------
    async def close(self) -> None:
        """Stop the timer, cancel transactions in flight and wait for them to end."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for waiting in self._waiting.values():
            if not waiting.future.done():
                waiting.future.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
