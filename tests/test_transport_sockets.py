"""The draining of a QUIC socket (transport.quic.sockets.Drain) on a real event loop and
real UDP sockets on loopback: every datagram is read, in order; datagrams waiting
together are read in one wake-up, those of a flood a turn budget at a time, and after
datagrams that came alone the next wake-ups of an adaptive drain read only their own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aioquic.quic.connection import NetworkAddress

from dmscproto.transport.driver import turn_budget
from dmscproto.transport.quic.sockets import _FREE, ALONE, IDLE_SKIP, Drain


class _Wakeups(Drain):
    """A Drain that marks where each wake-up of the loop's reader starts."""

    def __init__(self, sock: socket.socket, reader: _Reader, *, adaptive: bool) -> None:
        super().__init__(sock, reader.received, reader.errors.append,
                         asyncio.get_running_loop(), adaptive=adaptive)
        self.reader = reader

    def read(self, woken: bool = False) -> None:
        if woken:
            self.reader.wakeups.append([])
        super().read(woken)
        self.reader.arrived.set()


class _Reader(asyncio.DatagramProtocol):
    """Reads its socket as QuicServer does: the datagram that woke the loop, then the
    Drain, or (``installed``, on asyncio's loop) the Drain as the loop's reader of the
    socket; records the datagrams of each wake-up."""

    def __init__(self, sock: socket.socket, *, adaptive: bool = True,
                 installed: bool = False) -> None:
        self.wakeups: list[list[bytes]] = []
        self.errors: list[Exception] = []
        self.drain = _Wakeups(sock, self, adaptive=adaptive)
        self.installed = installed
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.installed:  # once the transport's own reader is registered
            asyncio.get_running_loop().call_soon(self._install)

    def _install(self) -> None:
        assert self.drain.install(asyncio.get_running_loop())

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        assert not self.installed
        self.wakeups.append([])
        self.received(data, addr)
        self.drain.read()

    def received(self, data: bytes, addr: NetworkAddress) -> None:
        self.wakeups[-1].append(data)

    async def read(self, sender: socket.socket, count: int) -> list[list[bytes]]:
        """Send ``count`` datagrams at once (loopback queues them before the loop
        polls), and the wake-ups that read them."""
        start = len(self.wakeups)
        sent = [b"%d" % i for i in range(count)]
        for data in sent:
            sender.send(data)
        while sum(map(len, self.wakeups[start:])) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)
        got = self.wakeups[start:]
        assert [d for wakeup in got for d in wakeup] == sent  # all, in order
        return got


@asynccontextmanager
async def _reading(**options: bool) -> AsyncIterator[tuple[_Reader, socket.socket]]:
    """A :class:`_Reader` (``options``: its own) of a loopback socket as an asyncio
    datagram endpoint, and a socket sending to it."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender.connect(receiver.getsockname())
        transport, reader = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Reader(receiver, **options), sock=receiver)
        try:
            yield reader, sender
        finally:
            transport.close()


@pytest.mark.parametrize("installed", [False, True])
def test_datagrams_waiting_together_are_read_in_one_wakeup_until_they_come_alone(
        installed: bool) -> None:
    async def main() -> None:
        async with _reading(installed=installed) as (reader, sender):
            assert await reader.read(sender, 5) == [[b"%d" % i for i in range(5)]]
            for _ in range(ALONE):  # each wake-up looks: nothing more is waiting
                assert len(await reader.read(sender, 1)) == 1
            # the next IDLE_SKIP wake-ups read one datagram each; the one after
            # looks again and reads what is left
            got = await reader.read(sender, IDLE_SKIP + 3)
            assert list(map(len, got)) == [1] * IDLE_SKIP + [3]
            assert len(await reader.read(sender, 5)) == 1  # draining again
            for _ in range(ALONE - 1):  # fewer lone ones in a row than ALONE
                assert len(await reader.read(sender, 1)) == 1
            assert len(await reader.read(sender, 3)) == 1  # still draining
            assert not reader.errors
    asyncio.run(main())


@pytest.mark.parametrize("installed", [False, True])
def test_a_drain_not_adaptive_always_looks(installed: bool) -> None:
    """A client's socket (adaptive=False) reads what waits after any number of lone
    datagrams."""
    async def main() -> None:
        async with _reading(adaptive=False, installed=installed) as (reader, sender):
            for _ in range(ALONE + 1):
                assert len(await reader.read(sender, 1)) == 1
            assert len(await reader.read(sender, 5)) == 1
    asyncio.run(main())


@pytest.mark.parametrize("installed", [False, True])
def test_a_flood_is_read_a_turn_budget_at_a_time(installed: bool) -> None:
    """With no turn budget left, a wake-up reads _FREE datagrams after its own and one
    more (the first piece of the turn's budget); the rest wait for later turns."""
    async def main() -> None:
        turn_budget(asyncio.get_running_loop()).seconds = 0.0
        async with _reading(installed=installed) as (reader, sender):
            got = await reader.read(sender, 30)
            assert list(map(len, got)) == [_FREE + 2] * 6
    asyncio.run(main())


@pytest.mark.parametrize("installed", [False, True])
def test_an_empty_datagram_waiting_is_read_in_the_next_wakeup(installed: bool) -> None:
    """FIONREAD says 0 both when nothing waits and when an empty datagram does: the
    drain leaves it, and the next wake-up reads it and what follows it, in order."""
    async def main() -> None:
        async with _reading(adaptive=False, installed=installed) as (reader, sender):
            start = len(reader.wakeups)
            for data in (b"a", b"", b"b", b"c"):
                sender.send(data)
            while sum(map(len, reader.wakeups[start:])) < 4:
                reader.arrived.clear()
                await asyncio.wait_for(reader.arrived.wait(), 5)
            assert reader.wakeups[start:] == [[b"a"], [b"", b"b", b"c"]]
            assert len(await reader.read(sender, 3)) == 1  # draining as before
            assert not reader.errors
    asyncio.run(main())
