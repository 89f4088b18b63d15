"""Impairment relay: a UDP relay on loopback that loses, delays, duplicates and reorders.

It sits between a client and a server and relays datagrams without parsing them, so it
works for QUIC, DTLS and lab UDP alike (draft-dmsc-protocol-00, Section 9.3 is what it
exercises).  Each client address gets its own upstream socket, so the server sees one
source per client.  Every datagram, in each direction, independently:

* is dropped with probability ``loss``;
* otherwise is sent after ``delay_ms`` plus a uniform jitter of +-``jitter_ms``;
* is held back a further ``reorder_gap_ms`` with probability ``reorder``, so that the
  datagrams after it overtake it;
* is sent a second time (with its own delay) with probability ``duplicate``.

The random draws come from one ``random.Random`` per direction, both derived from
``seed``, so a run is reproducible given the order in which datagrams arrive in each
direction (however the two directions interleave).  :attr:`Relay.counters` says what was done.
A ``tap`` sees every datagram as its sender sent it, before any impairment, addressed
client to server or server to client (the interop runner records its captures so); a
datagram it returns True for is dropped (counted in ``dropped``).

Run it standalone (it stops after ``--duration`` seconds and prints its counters as one
JSON line; ``python -m interop.relay`` in a source checkout is the same)::

    python -m dmscproto.sandbox.relay --listen 127.0.0.1:4761 --upstream 127.0.0.1:4760 \\
        --loss 0.1 --reorder 0.05 --duplicate 0.05 --delay-ms 2 --jitter-ms 1 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

Address = tuple[str, int]
#: Called with (source, destination, datagram) for every datagram the relay receives;
#: True drops it.
Tap = Callable[[Address, Address, bytes], bool]


@dataclass(frozen=True, slots=True)
class Impairment:
    """What the relay does to each datagram (rates are probabilities in [0, 1])."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_gap_ms: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if min(self.delay_ms, self.jitter_ms, self.reorder_gap_ms) < 0:
            raise ValueError("delays must not be negative")


@dataclass(slots=True)
class DirectionCounters:
    received: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    sent: int = 0


@dataclass(slots=True)
class Counters:
    """What the relay did, per direction (``up``: client to server)."""

    up: DirectionCounters = field(default_factory=DirectionCounters)
    down: DirectionCounters = field(default_factory=DirectionCounters)
    clients: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Side(asyncio.DatagramProtocol):
    """One socket of the relay, passing what it receives to a callback."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors (e.g. the server not up yet) are part of an impaired path


class Relay:
    """A running impairment relay; create with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, upstream: Address, impairment: Impairment, tap: Tap | None = None
                 ) -> None:
        self.upstream = upstream
        self.impairment = impairment
        self.tap = tap
        self.counters = Counters()
        self._rng_up = random.Random(impairment.seed)
        self._rng_down = random.Random(f"{impairment.seed}/down")
        self._loop = asyncio.get_running_loop()
        self._listen: _Side | None = None
        self._clients: dict[Address, _Side] = {}
        self._opening: dict[Address, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handles: set[asyncio.TimerHandle] = set()
        self._closed = False

    @classmethod
    async def start(cls, listen: Address, upstream: Address,
                    impairment: Impairment = Impairment(), tap: Tap | None = None) -> Relay:
        """Listen on ``listen`` (port 0: ephemeral) and relay to ``upstream``."""
        relay = cls(upstream, impairment, tap)
        _t, side = await relay._loop.create_datagram_endpoint(
            lambda: _Side(relay._from_client), local_addr=listen)
        relay._listen = side
        return relay

    @property
    def address(self) -> Address:
        """The client-facing address."""
        assert self._listen is not None and self._listen.transport is not None
        host, port = self._listen.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def idle(self) -> bool:
        """Whether no datagram is held in the relay (delayed, or waiting for its upstream
        socket)."""
        return not self._handles and not self._opening

    # -- relaying --------------------------------------------------------------------------
    def _from_client(self, data: bytes, client: Address) -> None:
        if self._tapped(client, self.upstream, data, self.counters.up):
            return
        side = self._clients.get(client)
        if side is not None:
            self._impair(data, side, None, self.counters.up, self._rng_up)
            return
        waiting = self._opening.get(client)
        if waiting is None:
            self.counters.clients += 1
            self._opening[client] = waiting = []
            task = self._loop.create_task(self._open_upstream(client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        waiting.append(data)

    async def _open_upstream(self, client: Address) -> None:
        def back(data: bytes, _src: Address) -> None:
            assert self._listen is not None
            if self._tapped(self.upstream, client, data, self.counters.down):
                return
            self._impair(data, self._listen, client, self.counters.down, self._rng_down)
        _t, side = await self._loop.create_datagram_endpoint(
            lambda: _Side(back), remote_addr=self.upstream)
        self._clients[client] = side
        for data in self._opening.pop(client, []):
            self._impair(data, side, None, self.counters.up, self._rng_up)

    def _tapped(self, src: Address, dst: Address, data: bytes,
                counters: DirectionCounters) -> bool:
        """Show the datagram to the tap; whether it is to be dropped."""
        if self.tap is None or self._closed or not self.tap(src, dst, data):
            return False
        counters.received += 1
        counters.dropped += 1
        return True

    def _impair(self, data: bytes, side: _Side, to: Address | None,
                counters: DirectionCounters, rng: random.Random) -> None:
        if self._closed:
            return
        imp = self.impairment
        counters.received += 1
        if rng.random() < imp.loss:
            counters.dropped += 1
            return
        copies = 1
        if rng.random() < imp.duplicate:
            counters.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = imp.delay_ms + rng.uniform(-imp.jitter_ms, imp.jitter_ms)
            if rng.random() < imp.reorder:
                counters.reordered += 1
                delay += imp.reorder_gap_ms
            self._send_later(max(delay, 0.0) / 1000, data, side, to, counters)

    def _send_later(self, delay: float, data: bytes, side: _Side, to: Address | None,
                    counters: DirectionCounters) -> None:
        def send() -> None:
            self._handles.discard(handle)
            if side.transport is not None and not side.transport.is_closing():
                side.transport.sendto(data, to)
                counters.sent += 1
        handle = self._loop.call_later(delay, send)
        self._handles.add(handle)

    def close(self) -> None:
        """Stop relaying: pending datagrams are dropped, every socket closed."""
        self._closed = True
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        for task in self._tasks:
            task.cancel()
        for side in self._clients.values():
            if side.transport is not None:
                side.transport.close()
        if self._listen is not None and self._listen.transport is not None:
            self._listen.transport.close()

    async def __aenter__(self) -> Relay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _run(args: argparse.Namespace) -> Counters:
    impairment = Impairment(loss=args.loss, duplicate=args.duplicate, reorder=args.reorder,
                            delay_ms=args.delay_ms, jitter_ms=args.jitter_ms,
                            reorder_gap_ms=args.reorder_gap_ms, seed=args.seed)
    async with await Relay.start(args.listen, args.upstream, impairment) as relay:
        print(f"relaying {relay.address[0]}:{relay.address[1]} -> "
              f"{args.upstream[0]}:{args.upstream[1]} for {args.duration} s", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(args.duration)
    return relay.counters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmscproto.sandbox.relay",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0),
                        help="client-facing HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--upstream", type=_address, required=True, help="server HOST:PORT")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--reorder-gap-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds to run before stopping (default 60)")
    args = parser.parse_args(argv)
    try:
        counters = asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    print(json.dumps(counters.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
