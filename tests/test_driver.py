"""The one driver of sans-I/O objects (dmscproto.transport.driver, draft Sections 8 and
9.3) and the pump that drives a machine with it over real QUIC connections: timers on
the object's clock, the transaction timeout, no task per transaction."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Generator
from typing import Any

from transport_support import Pki, echo

from dmscproto.codec.messages import EchoReply, EchoRequest, Message
from dmscproto.codec.registry import MessageType, timer, transaction_time
from dmscproto.host.pump import Association, Pump
from dmscproto.protocol.machine import Handle
from dmscproto.security.ca import Kind
from dmscproto.transport.driver import Driver
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


def test_a_timer_fires_once_due_on_the_objects_clock() -> None:
    """handle_timer never gets a time before the deadline asked for, on the object's own
    clock (here one running 1000 s ahead of the loop's); a lazy timer armed for an
    earlier deadline is kept, and when it fires before the object's deadline it is only
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
        loop = asyncio.get_running_loop()
        timed = Timed()
        driver = Driver(timed, clock=lambda: loop.time() + 1000, lazy=True)
        timed.at = driver.now() + 0.02
        driver.arm()
        first = timed.at
        timed.at += 0.03  # later: the armed timer is kept and fires early, harmlessly
        driver.arm()
        await asyncio.sleep(0.1)  # fired early once: re-armed only, then once due
        assert len(timed.fired) == 1 and timed.fired[0] >= first + 0.03 and timed.at is None
        driver.stop()
    asyncio.run(scenario())


class _Relay:
    """A machine that answers each ECHO_REQUEST with the answer ``far`` gives to an
    ECHO_REQUEST of its own (a relay, as a gateway's ROUTE_REQUEST is)."""

    def __init__(self) -> None:
        self.far: Handle | None = None
        self.out: list[tuple[Handle, Message]] = []
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

    def messages_to_send(self) -> list[tuple[Handle, Message]]:
        out, self.out = self.out, []
        return out

    def next_event(self) -> object | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


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
