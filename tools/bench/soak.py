"""Load and fault benchmark (draft Sections 5, 6 and 10.7; issue 13 item 7).

    python tools/bench/soak.py [--seconds S] [--callers N] [--servers M] [--registrars R]

Two federated gateways, ``gw-a`` (a.example) and ``gw-b`` (b.example), each a real
``dmsc gateway --config`` process peered over QUIC with its SQLite store; in this
process, M agents registered at gw-b serve the skill ``echo``, N agents at gw-a
discover it (scope FEDERATED) and call the agents they find through both gateways, and
R registrar loops keep registering new agents at gw-b (each a new identity and
connection; the record's lease outlives the run; the agent closes without
DEREGISTER).  Halfway through, gw-b is killed with SIGKILL and started again on the
same store: its agents reconnect and register again, calls in flight fail and resume.

At the end both gateways are stopped and gw-b's store is read: every registration
gw-b acknowledged (REGISTER_ACK SUCCESS) must be in it.

Last line, one JSON object: ``seconds``, ``calls`` (made), ``succeeded``, ``failed``
(by error code name), ``calls_per_s``, ``p50_ms``/``p99_ms`` of the calls that
succeeded, ``discovers``, ``registrations_acked``, ``registrations_lost`` (must be 0),
``restart_s`` (SIGKILL until gw-b serves again), ``rss_peak_mb`` per gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dmscproto.agent import Agent, AgentError
from dmscproto.gateway.store import RegistryStore
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config

HOST = "127.0.0.1"
_CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Gateway:
    """A ``dmsc gateway`` process, restartable; its log drained by a thread."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.peak = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _CLI, "gateway", "--config", str(self.config),
             "--log-format", "json"], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if '"gateway listening"' in line:
                break
        else:
            raise RuntimeError(f"{self.config.name} did not start")
        stream = self.proc.stderr
        threading.Thread(target=lambda: all(True for _ in stream), daemon=True).start()

    def sample(self) -> None:
        if self.proc is not None:
            self.peak = max(self.peak, rss_mb(self.proc.pid))

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def _setup(root: Path) -> tuple[Domain, Domain, Path, Path, tuple[str, int],
                                 tuple[str, int]]:
    a, b = Domain.create(root, "a.example"), Domain.create(root, "b.example")
    addr_a, addr_b = (HOST, free_port()), (HOST, free_port())
    conf_a = write_gateway_config(a, "gw-a", listen=addr_a,
                                  peers=[PeerSpec(b, addr_b)])
    conf_b = write_gateway_config(b, "gw-b", listen=addr_b, peers=[PeerSpec(a)])
    return a, b, conf_a, conf_b, addr_a, addr_b




async def _run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    a, b, conf_a, conf_b, addr_a, addr_b = _setup(root)
    gw_a, gw_b = Gateway(conf_a), Gateway(conf_b)
    gw_b.start()
    gw_a.start()
    stop = asyncio.Event()
    calls: list[float] = []
    failed: Counter[str] = Counter()
    made = discovers = 0
    acked: list[bytes] = []
    restart_s = float("nan")

    async def sampler() -> None:
        while not stop.is_set():
            gw_a.sample()
            gw_b.sample()
            await asyncio.sleep(0.1)

    servers = [b.agent(f"echo{i}", addr_b) for i in range(args.servers)]
    for s in servers:
        s.serve(lambda payload, request: payload)
        await s.register(["echo"], lease=3600)
    callers = [a.agent(f"caller{i}", addr_a) for i in range(args.callers)]
    for c in callers:
        await c.connect()
    for _ in range(100):  # until gw-a has learned gw-b's records
        if len(await callers[0].discover(skills=["echo"])) == len(servers):
            break
        await asyncio.sleep(0.1)

    async def call_loop(caller: Agent) -> None:
        nonlocal made, discovers
        found: list[Any] = []
        n = 0
        while not stop.is_set():
            try:
                if not found or n % 20 == 0:
                    discovers += 1
                    found = await caller.discover(skills=["echo"], max_results=10)
                n += 1
                if not found:
                    await asyncio.sleep(0.05)
                    continue
                made += 1
                started = time.perf_counter()
                await caller.call(found[n % len(found)], b"soak", timeout=5)
                calls.append(time.perf_counter() - started)
            except AgentError as exc:
                failed[exc.status.name] += 1
                await asyncio.sleep(0.05)
            except (ConnectionError, TimeoutError) as exc:
                failed[type(exc).__name__] += 1
                await asyncio.sleep(0.05)

    async def registrar(r: int) -> None:
        i = 0
        while not stop.is_set():
            agent = b.agent(f"reg{r}-{i}", addr_b, reconnect=False)
            i += 1
            try:
                await agent.register(["soak"], lease=3600)
                acked.append(agent.agent_id)
            except (AgentError, ConnectionError, TimeoutError, OSError):
                await asyncio.sleep(0.1)
            finally:
                await agent.close(deregister=False)

    async def fault() -> None:
        nonlocal restart_s
        await asyncio.sleep(args.seconds / 2)
        killed = time.perf_counter()
        gw_b.kill()
        gw_b.start()
        restart_s = time.perf_counter() - killed

    start = time.perf_counter()
    tasks = [asyncio.create_task(sampler()), asyncio.create_task(fault()),
             *(asyncio.create_task(call_loop(c)) for c in callers),
             *(asyncio.create_task(registrar(r)) for r in range(args.registrars))]
    await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=15)
    seconds = time.perf_counter() - start
    for agent in [*callers, *servers]:
        await agent.close(deregister=False)
    gw_a.stop()
    gw_b.stop()
    store = RegistryStore(root / "b.example" / "gw-b.sqlite")
    try:
        lost = sum(1 for aid in acked if store.get(aid) is None)
    finally:
        store.close()
    calls.sort()
    return {"seconds": round(seconds, 1), "calls": made, "succeeded": len(calls),
            "failed": dict(failed), "calls_per_s": round(len(calls) / seconds, 1),
            "p50_ms": round(calls[len(calls) // 2] * 1e3, 2) if calls else None,
            "p99_ms": round(calls[int(len(calls) * 0.99)] * 1e3, 2) if calls else None,
            "discovers": discovers, "registrations_acked": len(acked),
            "registrations_lost": lost, "restart_s": round(restart_s, 2),
            "rss_peak_mb": {"gw-a": round(gw_a.peak, 1), "gw-b": round(gw_b.peak, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--registrars", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_run(args, Path(tmp)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
