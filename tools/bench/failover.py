"""Failure detection, healing and fail-fast with real gateway processes on loopback
(draft-dmsc-protocol-00, Sections 6.1.1, 6.4 and 6.8.3; issue 10 item 7).

    python tools/bench/failover.py [--hold S] [--keepalive S] [--partition S]

Two ``dmsc gateway --config`` processes, gw-a (a.example) and gw-b (b.example), each
with the given hold time and keepalive towards the other; gw-a dials gw-b through the
impairment relay (:mod:`dmscproto.sandbox.relay`) run by this process.  Two SDK agents
run here: ``server`` homed at gw-b (agent keepalive ``--keepalive``) and ``client``
homed at gw-a.  Times are taken when this process sees them (a gateway's JSON log line
as it arrives, an agent's connection closing):

1. partition: the relay drops every datagram for ``--partition`` seconds (longer than
   the hold time), then relays again; ``heal_s`` is from the restore until gw-a logs
   the session established again and the client's call to the server succeeds again
   (the redial interval then in force bounds it);
2. ``kill -9`` of gw-b, with a call from the client to the server sent at that moment:
   ``failure_detect_s`` is until gw-a logs the session closed; ``agent_detect_s``
   until the server agent has closed its connection to the dead gateway (agent
   keepalive); ``inflight_fail_ms`` until the call sent at the kill fails
   (TARGET_UNREACHABLE: gw-a probes gw-b while the call waits on it and closes the
   session when the probe goes unanswered, Section 6.1.1, so with a call in flight
   ``failure_detect_s`` is the probe's, about 3/4 of the keepalive, not the hold time;
   the call took 27 s, then the hold time, before);
   ``fail_fast_ms`` is a call sent once gw-a has noticed, towards the agent behind the
   killed gateway: NO_ROUTE at once (``fail_fast_status``).

Last line, one JSON object with those keys, the settings (``hold_time_s``,
``keepalive_s``, ``partition_s``) and ``idle_timeout_s`` (QUIC_IDLE_TIMEOUT, what
detected failures before).  ``tools/bench/federation.py`` runs this and merges it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmscproto.agent import Agent, AgentError
from dmscproto.codec.registry import timer
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.sandbox.relay import Impairment, Relay

_CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"


class Gateway:
    """A ``dmsc gateway`` process and its JSON log lines, each with its arrival time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, config: Path) -> Gateway:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-c", _CLI, "gateway", "--config", str(config),
            "--log-format", "json", stderr=asyncio.subprocess.PIPE)
        gw = cls(proc)
        await gw.wait_for(lambda e: e["msg"] == "gateway listening", 20)
        return gw

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            with contextlib.suppress(ValueError):
                self.lines.append((time.monotonic(), json.loads(raw)))

    @property
    def address(self) -> tuple[str, int]:
        entry = next(e for _, e in self.lines if e["msg"] == "gateway listening")
        host, port = entry["address"].rsplit(":", 1)
        return host, int(port)

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float,
                       after: float = 0.0) -> float:
        """When the first log line after ``after`` matching ``match`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, entry in self.lines:
                if at >= after and match(entry):
                    return at
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no matching log line within {timeout} s")

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _established(e: dict[str, Any]) -> bool:
    return bool(e["msg"] == "peer session established")


def _closed(e: dict[str, Any]) -> bool:
    return bool(e["msg"] == "peer session closed")


async def _until(check: Callable[[], bool], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.005)
    return time.monotonic()


async def _call(client: Agent, target: bytes) -> tuple[float, str]:
    """(seconds, status name) of one call."""
    start = time.monotonic()
    try:
        await client.call(target, b"ping")
        status = "SUCCESS"
    except AgentError as exc:
        status = exc.status.name
    return time.monotonic() - start, status


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    a, b = Domain.create(root, "a.example"), Domain.create(root, "b.example")
    timers = {"hold_time": args.hold, "keepalive": args.keepalive}
    gw_b = await Gateway.start(write_gateway_config(b, "gw-b", peers=[PeerSpec(a)],
                                                    **timers))
    relay = await Relay.start(("127.0.0.1", 0), gw_b.address)
    gw_a = await Gateway.start(write_gateway_config(
        a, "gw-a", peers=[PeerSpec(b, relay.address)], **timers))
    agents: list[Agent] = []
    try:
        await gw_a.wait_for(_established, 20)
        server = b.agent("server", gw_b.address, keepalive=args.keepalive)
        server.serve(lambda payload, _request: payload)
        client = a.agent("client", gw_a.address, keepalive=args.keepalive)
        agents += [server, client]
        for agent in agents:
            await agent.register(skills=["echo"], lease=600)
        deadline = time.monotonic() + 20
        while (await _call(client, server.agent_id))[1] != "SUCCESS":
            assert time.monotonic() < deadline, "the server is never reachable"
            await asyncio.sleep(0.1)

        # 1. partition longer than the hold time, then heal
        relay.impairment = Impairment(loss=1.0)
        cut = time.monotonic()
        await gw_a.wait_for(_closed, args.hold + 10, after=cut)
        await asyncio.sleep(max(0.0, cut + args.partition - time.monotonic()))
        relay.impairment = Impairment()
        restored = time.monotonic()
        await gw_a.wait_for(_established, 120, after=restored)
        while (await _call(client, server.agent_id))[1] != "SUCCESS":
            await asyncio.sleep(0.02)
        heal_s = time.monotonic() - restored

        # 2. kill -9 of gw-b, a call on its way
        conn = server._conn
        assert conn is not None
        in_flight = asyncio.get_running_loop().create_task(_call(client, server.agent_id))
        killed = time.monotonic()
        os.kill(gw_b.proc.pid, signal.SIGKILL)
        detected = await gw_a.wait_for(_closed, args.hold + 10, after=killed)
        agent_lost = await _until(lambda: conn.closed, 3 * args.keepalive + 10)
        in_flight_s, in_flight_status = await in_flight
        fail_s, fail_status = await _call(client, server.agent_id)
        return {
            "failure_detect_s": round(detected - killed, 3),
            "agent_detect_s": round(agent_lost - killed, 3),
            "heal_s": round(heal_s, 3),
            "fail_fast_ms": round(fail_s * 1000, 1),
            "fail_fast_status": fail_status,
            "inflight_fail_ms": round(in_flight_s * 1000, 1),
            "in_flight_status": in_flight_status,
            "hold_time_s": args.hold,
            "keepalive_s": args.keepalive,
            "partition_s": args.partition,
            "idle_timeout_s": timer("QUIC_IDLE_TIMEOUT"),
        }
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent.close(deregister=False), 5)
        relay.close()
        await gw_a.stop()
        await gw_b.stop(signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=int, default=3, help="hold time, seconds (3)")
    parser.add_argument("--keepalive", type=float, default=1.0,
                        help="peer and agent keepalive, seconds (1)")
    parser.add_argument("--partition", type=float, default=10.0,
                        help="how long the link is cut, seconds (10)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
