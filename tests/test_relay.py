"""The impairment relay (dmscproto.sandbox.relay): it relays datagrams both ways, and
loses, duplicates and reorders them at the configured rates, reproducibly for a seed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import pytest

from dmscproto.codec.messages import EchoReply, EchoRequest, Message
from dmscproto.sandbox.relay import Impairment, Relay
from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.transport import TransportError, quic
from dmscproto.transport.tls import TlsIdentity

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that records what it receives (and, as server, echoes it)."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)


async def endpoint(echo: bool, remote: tuple[str, int] | None = None) -> Endpoint:
    loop = asyncio.get_running_loop()
    _t, proto = await loop.create_datagram_endpoint(
        lambda: Endpoint(echo), local_addr=None if remote else (LOOPBACK, 0),
        remote_addr=remote)
    return proto


async def through_relay(impairment: Impairment, n: int,
                        settle: float | None = None) -> tuple[Relay, Endpoint, Endpoint]:
    """Send ``n`` numbered datagrams through a relay to an echo server, then wait until
    every datagram the relay passed on, and every echo, has arrived (or, with ``settle``,
    that many seconds: to close the relay with datagrams still in it)."""
    server = await endpoint(echo=True)
    assert server.transport is not None
    relay = await Relay.start((LOOPBACK, 0), server.transport.get_extra_info("sockname"),
                              impairment)
    client = await endpoint(echo=False, remote=relay.address)
    assert client.transport is not None
    for i in range(n):
        client.transport.sendto(i.to_bytes(4, "big"))
        await asyncio.sleep(0.0005)  # keep arrival order (and so the RNG draws) fixed
    if settle is not None:
        await asyncio.sleep(settle)
    else:
        up, down = relay.counters.up, relay.counters.down
        while not (up.received == n and relay.idle and len(server.received) == up.sent
                   and down.received == len(server.received)
                   and len(client.received) == down.sent):
            await asyncio.sleep(0.005)
    relay.close()
    client.transport.close()
    server.transport.close()
    return relay, client, server


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def numbers(datagrams: list[bytes]) -> list[int]:
    return [int.from_bytes(d, "big") for d in datagrams]


def test_clean_relay_passes_everything_both_ways() -> None:
    relay, client, server = run(through_relay(Impairment(), 50))
    assert numbers(server.received) == list(range(50))
    assert numbers(client.received) == list(range(50))
    c = relay.counters
    assert (c.up.received, c.up.sent, c.down.received, c.down.sent) == (50, 50, 50, 50)
    assert c.clients == 1


def test_loss_duplication_reordering_rates() -> None:
    imp = Impairment(loss=0.2, duplicate=0.2, reorder=0.3, reorder_gap_ms=20, seed=5)
    relay, _client, server = run(through_relay(imp, 200))
    up = relay.counters.up
    assert up.received == 200
    assert 20 <= up.dropped <= 60 and 15 <= up.duplicated <= 60 and up.reordered >= 30
    got = numbers(server.received)
    assert len(got) == up.sent == 200 - up.dropped + up.duplicated
    assert len(set(got)) == 200 - up.dropped
    assert got != sorted(got)  # something overtook something


def test_same_seed_same_impairment() -> None:
    imp = Impairment(loss=0.3, seed=42)
    first = run(through_relay(imp, 100))[2].received
    second = run(through_relay(imp, 100))[2].received
    other = run(through_relay(Impairment(loss=0.3, seed=43), 100))[2].received
    assert first == second
    assert first != other


def test_total_loss_and_delay() -> None:
    relay, _client, server = run(through_relay(Impairment(loss=1.0), 10))
    assert server.received == [] and relay.counters.up.dropped == 10
    relay, client, _server = run(through_relay(Impairment(delay_ms=400), 3, settle=0.05))
    assert client.received == []  # still in flight when the relay was closed


def test_rates_are_checked() -> None:
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(jitter_ms=-1)


@pytest.mark.parametrize("module", ["dmscproto.sandbox.relay", "interop.relay"])
def test_command_line_runs_for_a_bounded_time(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--upstream", "127.0.0.1:9", "--loss", "0.1",
         "--duration", "0.2", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=20, check=True)
    counters = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counters["up"]["received"] == 0 and counters["clients"] == 0


def test_quic_through_the_relay_at_ten_percent_loss() -> None:
    """The relay never parses what it carries: QUIC (with its own loss recovery) works
    through it as DTLS and lab UDP do (tests/test_transport_dtls.py, _datagram.py)."""
    ca = DomainAuthority.create("a.example")

    async def handler(msg: Message, peer: Any) -> Message:
        assert isinstance(msg, EchoRequest)
        return EchoReply(sequence=msg.sequence, timestamp=0, gateway_id=bytes(16))

    async def main() -> None:
        server = await quic.serve(LOOPBACK, 0, TlsIdentity.issue(ca, "gw", Kind.GATEWAY),
                                  handler)
        relay = await Relay.start((LOOPBACK, 0), server.address, Impairment(
            loss=0.1, duplicate=0.1, reorder=0.1, seed=2))
        conn = None
        try:
            for _attempt in range(3):
                try:
                    conn = await quic.connect(*relay.address,
                                              TlsIdentity.issue(ca, "ag", Kind.AGENT),
                                              timeout=10)
                    break
                except TransportError:
                    continue
            assert conn is not None
            answers = await asyncio.gather(*(
                conn.request(EchoRequest(sequence=i, timestamp=0), timeout=30)
                for i in range(20)))
            assert [a.sequence for a in answers] == list(range(20))  # type: ignore[attr-defined]
        finally:
            if conn is not None:
                conn.close()
            relay.close()
            server.close()
        assert relay.counters.up.dropped + relay.counters.down.dropped > 0
    asyncio.run(asyncio.wait_for(main(), 60))
