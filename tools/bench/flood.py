"""Flood benchmarks (draft Section 10.7; issue 13 items 1 and 2): QUIC handshakes, or
costly DISCOVERs.

    python tools/bench/flood.py [--initials N] [--rate R] [--seconds S] [--unlimited]
    python tools/bench/flood.py --discover [--attack-seconds T] [--seconds S] [--unlimited]

Three processes: ``dmsc gateway --config`` (the real gateway: SQLite store, mutual TLS,
the QUIC limits of its ``[limits]`` table, defaults unless ``--unlimited``), the
attacker (this script with ``--attack``: N QUIC Initials, each a real client's first
flight for a new connection, from 127.0.0.2, never completing a handshake nor echoing a
Retry token, :mod:`dmscproto.testing.flood`) and this one, where an agent that
connected before the flood sends ECHO_REQUESTs back to back, and a new agent connects
and echoes every half second.  The baseline is the same agent's ECHO latency during S
seconds before the flood, in the same run; the gateway's resident memory (VmRSS) is
sampled every 50 ms throughout.

``--limit NAME=VALUE`` sets one of the gateway's ``[limits]``; ``--unlimited`` sets the
QUIC limits so high that none applies (no Retry, no caps, the
handshake timeout at QUIC's idle timeout): the gateway as it was before the limits.

With ``--discover`` the attacker is an authenticated agent instead (its own process, the
SDK) that keeps 8 DISCOVERs in flight for T seconds, each with a 60 KB intent of
distinct words, against 40 registered records; ``--unlimited`` then lifts the rate,
cost and query limits (RATE_*, DISCOVER_COST, QUERY_*, DISCOVER_BUDGET); ``--limit
QUERY_MAX_INTENT=1000000000 --limit QUERY_MAX_TERMS=1000000000`` lifts only the query
size limits, so that every DISCOVER is evaluated until its CPU budget stops it.  The JSON then has
``discovers`` (answered) and ``discover_status`` (answers by status) instead of the
handshake figures.

Last line, one JSON object: ``initials``, ``attack_s``, ``rss_before_mb``,
``rss_peak_mb``, ``echo_p50_ms``/``echo_p99_ms`` during the flood and
``base_p50_ms``/``base_p99_ms`` before it, ``p99_ratio`` (flood / baseline),
``connect_max_ms`` (a new agent's connection and first ECHO during the flood, one every
half second), ``connects`` and ``connect_failures`` (not connected in 5 s), ``echoes``
and ``echo_failures`` during the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_proc import start_gateway

from dmscproto.agent import Agent, AgentError
from dmscproto.codec.registry import LIMITS, ErrorCode, timer
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.security.ca import Kind
from dmscproto.testing.flood import flood

HOST = "127.0.0.1"
ATTACKER = "127.0.0.2"  # another source address on loopback (Linux routes 127/8 to lo)
ATTACKER_AGENT = 63  # the certificate the DISCOVER attacker uses


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _setup(root: Path, unlimited: bool, limits: dict[str, float]) -> Path:
    domain = Domain.create(root, "bench.example")
    for i in range(64):
        domain.issue(f"agent{i}", Kind.AGENT)
    config = write_gateway_config(domain, "gw")
    off: dict[str, float] = dict(limits)
    if unlimited:
        off |= {"QUIC_RETRY_THRESHOLD": 10**9, "QUIC_MAX_PENDING": 10**9,
               "QUIC_MAX_CONNECTIONS": 10**9, "QUIC_MAX_PER_ADDRESS": 10**9,
               "QUIC_HANDSHAKE_TIMEOUT": timer("QUIC_IDLE_TIMEOUT"),
               "RATE_AGENT": 10**9, "RATE_AGENT_BURST": 10**9, "DISCOVER_COST": 1,
               "QUERY_MAX_INTENT": 10**9, "QUERY_MAX_TERMS": 10**9, "DISCOVER_BUDGET": 10**9}
    assert set(off) <= {lim.name for lim in LIMITS}
    text = config.read_text()
    config.write_text(text.replace("[limits]\n", "[limits]\n" + "".join(
        f"{name.lower()} = {int(value) if value == int(value) else value}\n"
        for name, value in off.items())))
    return domain.directory


def _agent(keys: Path, i: int, gateway: str) -> Agent:
    return Agent.from_files(keys / f"agent{i}.pem", keys / f"agent{i}.key",
                            [keys / "ca.pem"], gateway=gateway)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3, 3)


async def _run(keys: Path, gateway: subprocess.Popen[str], address: str,
               args: argparse.Namespace) -> dict[str, Any]:
    rss: list[float] = []

    async def sample() -> None:
        while True:
            rss.append(rss_mb(gateway.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    targets = await _register_targets(keys, address) if args.discover else []
    prober = _agent(keys, 0, address)
    await prober.connect()
    for _ in range(100):  # warm-up
        await prober.echo()
    base: list[float] = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        base.append(await prober.echo())
    rss_before = rss_mb(gateway.pid)
    host, port = address.rsplit(":", 1)
    if args.discover:
        attacker = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--discover-attack", str(keys), address,
            str(args.attack_seconds), stdout=subprocess.PIPE)
    else:
        attacker = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--attack", host, port, str(args.initials),
            str(args.rate), stdout=subprocess.PIPE)
    under: list[float] = []
    failures = 0
    connects: list[float] = []
    connect_failures = 0

    async def newcomers() -> None:
        nonlocal connect_failures
        i = 1
        while attacker.returncode is None and i < 20:
            started = time.perf_counter()
            agent = _agent(keys, i, address)
            try:
                await agent.connect()
                await agent.echo()
                connects.append(time.perf_counter() - started)
            except (ConnectionError, TimeoutError):
                connect_failures += 1
            finally:
                await agent.close(deregister=False)
            i += 1
            await asyncio.sleep(0.5)

    joining = asyncio.create_task(newcomers())
    waiting = asyncio.create_task(attacker.wait())
    while not waiting.done():
        try:
            under.append(await asyncio.wait_for(prober.echo(), 5))
        except Exception:
            failures += 1
    assert attacker.stdout is not None
    said = json.loads((await attacker.stdout.read()).decode())
    await joining
    await asyncio.sleep(1.0)  # memory after the flood, while handshakes expire
    sampler.cancel()
    await prober.close(deregister=False)
    for agent in targets:
        await agent.close(deregister=False)
    attack = ({"discovers": said["answered"], "discover_status": said["status"]}
              if args.discover else {"initials": args.initials})
    return {**attack, "attack_s": round(said["seconds"], 2), "unlimited": args.unlimited,
            "rss_before_mb": round(rss_before, 1), "rss_peak_mb": round(max(rss), 1),
            "echo_p50_ms": _pct(under, 0.5), "echo_p99_ms": _pct(under, 0.99),
            "base_p50_ms": _pct(base, 0.5), "base_p99_ms": _pct(base, 0.99),
            "p99_ratio": round(_pct(under, 0.99) / _pct(base, 0.99), 2),
            "connect_max_ms": round(max(connects, default=float("nan")) * 1e3, 1),
            "connects": len(connects), "connect_failures": connect_failures,
            "echoes": len(under), "echo_failures": failures,
            "echo_mean_ms": round(statistics.fmean(under) * 1e3, 3) if under else None}


async def _discover_flood(keys: Path, address: str, seconds: float) -> dict[str, Any]:
    """The costly-DISCOVER attacker: 8 in flight, each with a 60 KB intent."""
    attacker = _agent(keys, ATTACKER_AGENT, address)
    intent = " ".join(f"w{i}" for i in range(12_000))[:60_000]
    status: Counter[str] = Counter()
    answered = 0
    await attacker.connect()
    start = time.perf_counter()
    end = start + seconds

    async def loop() -> None:
        nonlocal answered
        while time.perf_counter() < end:
            try:
                await attacker.discover(intent=intent, tags=["bench"])
                status["SUCCESS"] += 1
            except AgentError as exc:
                status[exc.status.name] += 1
                if exc.status is ErrorCode.RATE_LIMITED:
                    await asyncio.sleep(0.01)
            answered += 1

    await asyncio.gather(*(loop() for _ in range(8)))
    took = time.perf_counter() - start
    await attacker.close(deregister=False)
    return {"seconds": took, "answered": answered, "status": dict(status)}


async def _register_targets(keys: Path, address: str) -> list[Agent]:
    """40 agents with records worth searching (the DISCOVER flood's haystack)."""
    agents = [_agent(keys, 20 + i, address) for i in range(40)]
    for i, agent in enumerate(agents):
        await agent.register(["bench"], description=" ".join(f"w{j}" for j in
                                                             range(i * 50, i * 50 + 200)))
    return agents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--initials", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="Initials per second (0: as fast as the attacker makes them)")
    parser.add_argument("--seconds", type=float, default=3.0, help="baseline duration")
    parser.add_argument("--unlimited", action="store_true")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="a [limits] setting of the gateway, e.g. quic_retry_threshold=0")
    parser.add_argument("--discover", action="store_true",
                        help="flood with costly DISCOVERs instead of QUIC Initials")
    parser.add_argument("--attack-seconds", type=float, default=10.0)
    parser.add_argument("--discover-attack", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--attack", nargs=4, metavar=("HOST", "PORT", "COUNT", "RATE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        host, port, count, rate = args.attack
        took = asyncio.run(flood(host, int(port), int(count),
                                 rate=float(rate) or None, source=ATTACKER))
        print(json.dumps({"seconds": took}))
        return
    if args.discover_attack:
        keys, address, seconds = args.discover_attack
        print(json.dumps(asyncio.run(_discover_flood(Path(keys), address, float(seconds)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        keys = _setup(Path(tmp), args.unlimited, dict(
            (name.upper(), float(value)) for name, value in
            (item.split("=", 1) for item in args.limit)))
        gateway, address = start_gateway("--config", str(keys / "gw.toml"))
        try:
            out = asyncio.run(_run(keys, gateway, address, args))
        finally:
            gateway.terminate()
            gateway.wait(10)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
