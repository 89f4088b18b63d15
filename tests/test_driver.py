"""The one driver of sans-I/O objects (dmscproto.transport.driver, draft Sections 8 and
9.3) and the pump that drives a machine with it over real QUIC connections: timers on
the object's clock, the transaction timeout, no task per transaction."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from transport_support import Pki, StubMachine, echo, loop_turns, reply_to

from dmscproto.codec.messages import EchoReply, EchoRequest, Message, RouteRequest
from dmscproto.codec.registry import MessageType, timer, transaction_time
from dmscproto.host.pump import Association, Pump
from dmscproto.protocol.machine import Handle
from dmscproto.security.ca import Kind
from dmscproto.testing.examples import examples
from dmscproto.transport.driver import Driver, EndOfTurn, TurnBudget, turn_budget
from dmscproto.transport.peer import PeerInfo as AnyPeer
from dmscproto.transport.peer import dispatch
from dmscproto.transport.quic import DmscConnection, PeerInfo, connect, serve
from dmscproto.transport.tls import TlsIdentity


def test_the_transaction_timeout_is_the_drafts_on_every_transport() -> None:
    """Section 9.3: REQUEST_TIMEOUT, and for relayed requests the gateway's own
    transaction time (TIMEOUT, else ROUTE_TIMEOUT) plus REQUEST_TIMEOUT."""
    request, route = timer("REQUEST_TIMEOUT"), timer("ROUTE_TIMEOUT")
    assert transaction_time(MessageType.DISCOVER) == request
    assert transaction_time(MessageType.ROUTE_REQUEST) == route + request
    assert transaction_time(MessageType.TRACE_REQUEST) == route + request
    assert transaction_time(MessageType.ROUTE_REQUEST, 2500) == 2.5 + request
    assert transaction_time(MessageType.ECHO_REQUEST, request_timeout=1) == 1


def test_one_clock_a_machines_timer_fires_once_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machines' time is the loop's clock plus an offset: seconds since the epoch; a
    step of the system clock is followed, and moves no timer already armed.  handle_timer
    never gets a time before the deadline asked for; a lazy timer armed for an earlier
    deadline is kept, and when it fires before the object's deadline it is only
    re-armed: handle_timer is not called before anything is due."""

    class Timed:
        def __init__(self) -> None:
            self.at: float | None = None
            self.fired: list[float] = []

        def get_timer(self) -> float | None:
            return self.at

        def handle_timer(self, now: float) -> None:
            self.fired.append(now)
            if self.at is not None and now >= self.at:
                self.at = None

    async def scenario() -> None:
        timed = Timed()
        driver = Driver(timed, epoch=True, lazy=True)
        assert abs(driver.now() - time.time()) < 0.5
        timed.at = driver.now() + 0.02
        driver.arm()
        first = timed.at
        timed.at += 0.03  # later: the armed timer is kept and fires early, harmlessly
        driver.arm()
        assert abs(driver.now() - first) < 0.5
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 3600)  # the system clock steps
        assert abs(driver.now() - first - 3600) < 0.5  # followed
        await asyncio.sleep(0.1)  # fired early once: re-armed only, then once due
        assert len(timed.fired) == 1 and timed.fired[0] >= first + 3600 and timed.at is None
        driver.stop()
    asyncio.run(scenario())


@pytest.mark.parametrize("lazy", [False, True])
def test_a_timer_is_armed_afresh_only_when_its_deadline_moves(lazy: bool) -> None:
    """The event-loop timer after each ``arm()``: armed at the object's deadline, left
    alone when that did not move (the same handle, no cancel and no new one), moved
    when it did (a lazy one only when it moved earlier), disarmed when there is none."""

    class Timed:
        at: float | None = None

        def get_timer(self) -> float | None:
            return self.at

        def handle_timer(self, now: float) -> None:
            raise AssertionError("not run")

    loop = asyncio.new_event_loop()
    try:
        timed = Timed()
        driver = Driver(timed, loop=loop, lazy=lazy)
        armed: list[float | None] = []
        handles = set()
        for at in (None, 10.0, 10.0, 20.0, 20.0, 5.0, 7.0, None, None, 3.0):
            timed.at = at
            driver.arm()
            handle = driver._handle
            armed.append(None if handle is None else handle.when())
            assert handle is None or not handle.cancelled()
            handles.add(handle)
        later = [10.0, 10.0] if lazy else [20.0, 20.0]  # 20 after 10
        assert armed == [None, 10.0, 10.0, *later, 5.0, 5.0 if lazy else 7.0, None, None, 3.0]
        assert len(handles) == len(set(armed))  # a new handle only when the time moved
        assert sum(not h.cancelled() for h in loop._scheduled) == 1  # type: ignore[attr-defined]
    finally:
        loop.close()


class _Relay(StubMachine):
    """A machine that answers each ECHO_REQUEST with the answer ``far`` gives to an
    ECHO_REQUEST of its own (a relay, as a gateway's ROUTE_REQUEST is)."""

    def __init__(self) -> None:
        super().__init__()
        self.far: Handle | None = None
        self._ids = itertools.count(1)
        self._relayed: dict[int, tuple[Handle, EchoRequest]] = {}

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        if isinstance(msg, EchoRequest):
            assert self.far is not None
            txid = next(self._ids)
            self._relayed[txid] = (source, msg)
            self.out.append((self.far, echo(msg.sequence, txid, msg.payload)))
        elif isinstance(msg, EchoReply):
            origin, request = self._relayed.pop(msg.transaction_id)
            self.out.append((origin, EchoReply(
                transaction_id=request.transaction_id, sequence=msg.sequence,
                timestamp=0, gateway_id=bytes(16), payload=msg.payload)))


def test_a_pump_relays_over_quic_without_a_task_per_transaction(pki: Pki) -> None:
    """Issue 18: a relayed request is received, sent on, answered and answered back
    through callbacks and futures: no task is created for any of it."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        relay = _Relay()
        pump = Pump(relay)
        assocs: dict[DmscConnection, Association] = {}

        def assoc(conn: DmscConnection) -> Association:
            return assocs.setdefault(conn, Association(conn, conn.peer.identity,
                                                       conn.peer.certificate))

        def deliver(msg: Message, peer: PeerInfo) -> asyncio.Future[Message | None]:
            return pump.deliver(assoc(peer.connection), msg)

        def far_end(msg: Message, peer: PeerInfo) -> asyncio.Future[Message | None]:
            assert isinstance(msg, EchoRequest)
            answer: asyncio.Future[Message | None] = loop.create_future()
            answer.set_result(EchoReply(transaction_id=msg.transaction_id,
                                        sequence=msg.sequence, timestamp=0,
                                        gateway_id=bytes(16), payload=msg.payload[::-1]))
            return answer

        far_tls = TlsIdentity.issue(pki.ca, "far", Kind.AGENT)
        server = await serve("127.0.0.1", 0, pki.gateway, deliver)
        near = await connect("127.0.0.1", server.address[1], pki.agent)
        far = await connect("127.0.0.1", server.address[1], far_tls, handler=far_end)
        relay.far = assoc(server.peers[far_tls.credential.identity.entity_id])
        created = 0

        def counting(loop: asyncio.AbstractEventLoop,
                     coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
                     **kw: Any) -> asyncio.Task[Any]:
            nonlocal created
            created += 1
            return asyncio.Task(coro, loop=loop, **kw)

        try:
            assert await near.request(echo(0, payload=b"warm")) is not None
            loop.set_task_factory(counting)
            for seq in range(1, 21):
                answer = await near.request(echo(seq, payload=b"abc"))
                assert isinstance(answer, EchoReply) and answer.sequence == seq
                assert answer.payload == b"cba"
            loop.set_task_factory(None)
            assert created == 0
        finally:
            await pump.close()
            near.close()
            far.close()
            server.close()
    asyncio.run(asyncio.wait_for(scenario(), 15))


class _Requests(StubMachine):
    """A machine that sends the requests it is given to ``far`` and keeps the answers."""

    def __init__(self, far: Handle) -> None:
        super().__init__()
        self.far = far
        self.answers: list[Message] = []

    def send(self, msg: Message) -> None:
        self.out.append((self.far, msg))

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        self.answers.append(msg)


def test_a_pump_stops_a_transaction_at_its_own_transaction_time(pki: Pki) -> None:
    """Section 9.3: the pump stops a transport transaction its machine started when that
    request's transaction time has passed (REQUEST_TIMEOUT for an ECHO_REQUEST; TIMEOUT
    plus REQUEST_TIMEOUT for a ROUTE_REQUEST), the one timeout of the registry, not
    at the longest one; its answer, coming later, is not fed to the machine."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()

        async def hold(msg: Message, peer: PeerInfo) -> Message | None:
            if isinstance(msg, EchoRequest):
                await release.wait()
                return reply_to(msg)
            await loop.create_future()  # a ROUTE_REQUEST is never answered
            return None

        server = await serve("127.0.0.1", 0, pki.gateway, hold)
        near = await connect("127.0.0.1", server.address[1], pki.agent)
        machine = _Requests(Association(near, near.peer.identity, near.peer.certificate))
        pump = Pump(machine)
        route = examples()["route-request"]
        assert isinstance(route, RouteRequest) and route.timeout_ms == 5000
        try:
            sent = pump.now()
            pump.call(machine.send, echo(1, txid=1))
            pump.call(machine.send, route)
            echo_stop, route_stop = (sent + transaction_time(MessageType.ECHO_REQUEST),
                                     sent + transaction_time(MessageType.ROUTE_REQUEST, 5000))
            assert pump.get_timer() == pytest.approx(echo_stop, abs=0.5)
            pump.handle_timer(echo_stop + 0.5)
            assert pump.get_timer() == pytest.approx(route_stop, abs=0.5)
            assert route_stop - sent == 15 < transaction_time(MessageType.ROUTE_REQUEST)
            release.set()  # the ECHO_REPLY comes now, after its transaction was stopped
            await asyncio.sleep(0.3)
            assert machine.answers == []
            pump.handle_timer(route_stop + 0.5)
            assert pump.get_timer() is None
        finally:
            await pump.close()
            near.close()
            server.close()
    asyncio.run(asyncio.wait_for(scenario(), 15))


def test_a_pump_answer_reaches_the_transport_in_the_call_that_gives_it() -> None:
    """A relayed answer is handed to the transport in the call that gives it (the
    pump's Answer), not a loop turn later through a future's done callback; a transport
    failing on it is reported as a callback's failure would be, not raised into the
    pump."""

    class Far:
        def __init__(self) -> None:
            self.started: list[tuple[Message, Callable[[Message | Exception], None]]] = []

        def start_request(self, msg: Message, done: Callable[[Message | Exception], None],
                          timeout: float | None = None) -> int:
            self.started.append((msg, done))
            return len(self.started)

        def stop_request(self, key: int, code: object = None) -> None:
            pass

    async def scenario() -> None:
        relay, far = _Relay(), Far()
        pump = Pump(relay)
        relay.far = Association(far, None)  # type: ignore[arg-type]
        heard: list[object] = []
        running: set[asyncio.Future[Any]] = set()
        dispatch(lambda msg, _peer: pump.deliver("near", msg), echo(1, 7, b"abc"),
                 AnyPeer(None, None, None, None), heard.append, running)
        [(sent, done)] = far.started
        assert heard == [] and len(running) == 1  # a closing connection cancels it
        done(EchoReply(transaction_id=sent.transaction_id, sequence=1, timestamp=0,
                       gateway_id=bytes(16), payload=b"cba"))
        assert [(type(h), getattr(h, "transaction_id", None)) for h in heard] == [
            (EchoReply, 7)]
        assert not running
        await asyncio.sleep(0)  # the next turn: "near" goes at once again
        dispatch(lambda msg, _peer: pump.deliver("near", msg), echo(3, 9, b"y"),
                 AnyPeer(None, None, None, None), heard.append, running)
        [answer] = running
        answer.cancel()  # its connection closed: not answered, no longer running
        assert not running and len(heard) == 1

        def broken(_outcome: object) -> None:
            raise RuntimeError("transport failed")

        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _l, c: reported.append(c))
        dispatch(lambda msg, _peer: pump.deliver("near", msg), echo(2, 8, b"x"),
                 AnyPeer(None, None, None, None), broken, set())
        await asyncio.sleep(0)  # "near" had its turn in this one: fed at its end
        sent, done = far.started[2]
        done(EchoReply(transaction_id=sent.transaction_id, sequence=2, timestamp=0,
                       gateway_id=bytes(16), payload=b"x"))
        assert [type(c["exception"]) for c in reported] == [RuntimeError]
        await pump.close()
    asyncio.run(scenario())


class _Evented(StubMachine):
    """Reports each message received as an event, and counts how often it is drained;
    with ``has_output``, says whether anything waits to be drained."""

    def __init__(self, has_output: bool) -> None:
        super().__init__()
        self.events: list[tuple[Handle, Message]] = []
        self.drained = 0
        if has_output:
            self.has_output = lambda: bool(self.out or self.events)

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        self.events.append((source, msg))

    def messages_to_send(self) -> list[tuple[Handle, Message]]:
        self.drained += 1
        return super().messages_to_send()

    def next_event(self) -> object | None:
        return self.events.pop(0) if self.events else None


@pytest.mark.parametrize("has_output", [False, True])
def test_what_a_machine_queues_on_its_own_event_is_sent(has_output: bool) -> None:
    """An event's handler that makes the machine queue a message directly (not through
    the pump) has it sent in the same flush; a machine that says it has no output left
    after its events is not drained once more for nothing."""

    async def scenario() -> None:
        machine = _Evented(has_output)
        answering = True

        def on_event(event: object) -> None:
            assert isinstance(event, tuple)
            source, msg = event
            if answering:
                assert isinstance(msg, EchoRequest)
                machine.out.append((source, replace(reply_to(msg),
                                                    transaction_id=msg.transaction_id)))

        pump = Pump(machine, on_event=on_event)
        answer = pump.deliver("near", echo(1, 7, b"abc"))
        assert answer.done() and isinstance(answer.result(), EchoReply)
        assert answer.result().transaction_id == 7
        answering = False
        await asyncio.sleep(0)  # the next turn: "near" goes at once again
        drained = machine.drained
        pump.feed("near", echo(2, 8, b"x"))  # an event, and nothing queued on it
        assert machine.drained - drained == (1 if has_output else 2)
        await pump.close()
    asyncio.run(scenario())


def test_a_turn_budget_is_counted_per_loop_turn() -> None:
    """TurnBudget: ``seconds`` of the loop thread's clock per event-loop turn, from its
    start; reading and decoding (``fits``) take at most half of it, except the first
    piece of a turn, which always runs; the next turn starts afresh, and after idle
    turns the count starts at the next use."""
    t = [0.0]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        assert turn_budget(loop) is turn_budget(loop)
        budget = TurnBudget(loop, 1.0, clock=lambda: t[0])
        assert budget.left() == 1.0
        t[0] += 0.7
        assert budget.left() == pytest.approx(0.3)
        assert budget.fits(0.1)  # the first piece of the turn
        assert not budget.fits(0.0)
        await asyncio.sleep(0)  # the next turn
        assert budget.left() == pytest.approx(1.0)
        assert budget.fits(0.4) and budget.fits(0.4)
        t[0] += 0.2
        assert not budget.fits(0.4) and budget.fits(0.3)
        for _ in range(3):  # turns without a use: the count stops
            await asyncio.sleep(0)
        t[0] += 5
        assert budget.left() == 1.0
    asyncio.run(scenario())


def test_end_of_turn_follows_a_woken_task_into_its_turn() -> None:
    """EndOfTurn.follow: the work a task adds in the turn a waiter's result wakes it
    in runs in that turn (its request leaves without another pass of the loop), when
    the waiter is resolved while the end of turn is held (a socket reader), with work
    due or with only an earlier follow's run to come, and when it is not held; without
    follow it would run in the next turn."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        turn = EndOfTurn(loop)
        now = loop_turns(loop)
        await asyncio.sleep(0)

        async def requester(waiter: asyncio.Future[None], ran: list[tuple[int, int]]) -> None:
            await waiter
            woke = now()
            turn.add(lambda: ran.append((woke, now())))

        for held, due in ((True, True), (True, False), (False, True)):
            waiter: asyncio.Future[None] = loop.create_future()
            ran: list[tuple[int, int]] = []
            task = loop.create_task(requester(waiter, ran))
            await asyncio.sleep(0)  # it waits
            if not due:
                turn.follow()  # its run, with nothing to do, is scheduled before the wake-up
            if held:
                turn.held = True
            if due:
                turn.add(lambda: None)  # work due before the task wakes
            waiter.set_result(None)
            turn.follow()
            if held:
                turn.release()
            await task
            await asyncio.sleep(0)
            [(woke, sent)] = ran
            assert sent == woke, (held, due)
    asyncio.run(scenario())


def test_a_pump_drives_its_machines_own_methods(tmp_path: Path) -> None:
    """The pump feeds, drains and times the machine it was given (its methods bound
    once): a REGISTER to a real gateway node is answered, its event handed over, and
    the lease it starts is the pump's timer."""
    from row_cases import ME, wire

    from dmscproto.codec.messages import Register, RegisterAck
    from dmscproto.codec.registry import ErrorCode
    from dmscproto.gateway.core import GatewayCore
    from dmscproto.gateway.node import GatewayNode
    from dmscproto.gateway.store import RegistryStore
    from dmscproto.protocol.events import AgentRegistered
    from dmscproto.testing.harness import make_record

    async def scenario() -> None:
        node = GatewayNode(GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db")))
        events: list[object] = []
        pump = Pump(node, on_event=events.append)
        try:
            alice = Association(None, None)  # type: ignore[arg-type]  # answered by future
            assert pump.get_timer() is None
            answer = await pump.deliver(alice, wire(Register(
                transaction_id=1, record=make_record(30, "alice", "a.example"), lease=600,
                nonce=bytes(16), timestamp=int(time.time()))))
            assert isinstance(answer, RegisterAck) and answer.status is ErrorCode.SUCCESS
            assert [type(e) for e in events] == [AgentRegistered]
            at = node.get_timer()
            assert at is not None and pump.get_timer() == at
        finally:
            await pump.close()
    asyncio.run(asyncio.wait_for(scenario(), 15))
