"""Routed call benchmark: agent -> gateway -> agent over QUIC vs a direct aioquic echo
(draft Sections 5.3 and 9.1; issue 18 items 1-2).

    python tools/bench/route.py [--seconds S] [--rounds R] [--inflight N] [--size BYTES]
                                [--loop asyncio|uvloop] [--metrics [--sample RATIO]]

A routed call runs across two processes: ``dmsc gateway --config`` (the real gateway
process: SQLite store, mutual TLS) and this one, where two SDK agents run, a responder
(echoes the payload) and the caller.  Each call is a ROUTE_REQUEST from the caller to
the gateway, the gateway's ROUTE_REQUEST to the responder on the responder's own
connection, and both ROUTE_REPLYs back: two QUIC hops, four streams, eight PDUs encoded
and decoded.  The baseline is ``tools/bench/quic_transport.py``'s plain aioquic echo, its
server a process of its own: one hop, a new stream per BYTES-octet request.

Each round measures, back to back, the routed call and the echo one call at a time
(``seq``) for S seconds, then with N calls in flight (``c32``, N = 32 by default) for S
seconds, after a warm-up; R rounds are interleaved so that load from elsewhere on the
machine hits both alike.  Around each measured window this process reads

* the CPU time (user + system, ``/proc/PID/stat``) of the gateway process and of the
  echo server process, and of this process (the two agents, or the echo's client);
* the UDP datagrams the two agents sent and received (every datagram the gateway sends
  or receives for a routed call is one of them: loopback loses none).

Last line, one JSON object; the ratios are medians over rounds of each round's ratio:
``seq_ratio`` and ``c32_ratio`` (routed calls/s over echoes/s), ``datagrams_per_call``
(at the gateway, one call at a time), ``gateway_cpu_ratio`` (gateway CPU per routed call
over echo server CPU per echo, one at a time), and the medians ``routed_seq_per_s``,
``routed_seq_p50_ms``, ``routed_c32_per_s``, ``direct_seq_per_s``, ``direct_c32_per_s``,
``gateway_cpu_us_per_call`` (one at a time), with a few more of the same kind.  The SDK's
side: ``agents_cpu_us_per_call`` (this process's CPU per routed call, one at a time: the
caller's and the responder's ends of the two hops), ``echo_client_cpu_us_per_call`` and
``agents_cpu_ratio`` (the agents' CPU per call over the echo client's and server's
together per echo: the same two ends of one hop each, without the SDK).

``--metrics`` (issue 11 item 8) adds, in each round right after the plain routed run, the
same routed calls with the gateway's management listener on (its Prometheus counters
count every PDU) and OpenTelemetry on (opentelemetry-sdk: every span of the agents and
the gateway recorded and batched, then dropped: :mod:`traced`); the JSON line then also
has ``metrics_per_s`` (N in flight) and ``metrics_ratio`` (median over rounds of
metrics-on / plain, N in flight; the target is at least 0.9) and their one-at-a-time
twins ``metrics_seq_per_s`` and ``metrics_seq_ratio``; ``metrics_gateway_cpu_ratio`` and
``metrics_c32_gateway_cpu_ratio`` are the gateway's CPU per call with metrics on over
without (medians over rounds), less sensitive to load from elsewhere than the rates.
``--sample`` is the share of calls whose trace is recorded (``sample``; default 1: every
span), by OpenTelemetry's ``parentbased_traceidratio`` sampler set for the agents and
the gateway through ``OTEL_TRACES_SAMPLER``: the caller decides, the gateway follows
its sampled flag.  The plain run carries the W3C trace context too: that is the
protocol, not an option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aioquic.asyncio.client import connect as aioquic_connect
from aioquic.quic.configuration import QuicConfiguration
from gateway_proc import CLI, start_gateway
from quic_transport import _EchoClient

from dmscproto.agent import Agent, Request
from dmscproto.codec.registry import ALPN
from dmscproto.runtime import loop as loops
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.security.ca import Kind
from dmscproto.transport.quic import DmscConnection

HOST = "127.0.0.1"
WARMUP = 200
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _datagrams(conns: list[DmscConnection]) -> int:
    return sum(c.datagrams_sent + c.datagrams_received for c in conns)


async def _windows(call: Callable[[], Awaitable[object]], args: argparse.Namespace,
                   pid: int, conns: list[DmscConnection]) -> dict[str, float]:
    """Warm up, then one call at a time for S seconds, then N in flight: rates,
    latencies, the server's and this process's CPU per call and (if ``conns``)
    datagrams per call."""
    for _ in range(WARMUP):
        await call()
    out: dict[str, float] = {}
    for name, inflight in (("seq", 1), ("c32", args.inflight)):
        cpu, own = _cpu(pid), _cpu(os.getpid())
        grams, start = _datagrams(conns), time.perf_counter()
        latencies = await _load(call, inflight, start + args.seconds)
        elapsed, calls = time.perf_counter() - start, len(latencies)
        latencies.sort()
        out |= {f"{name}_per_s": calls / elapsed,
                f"{name}_p50_ms": latencies[calls // 2] * 1e3,
                f"{name}_p99_ms": latencies[int(calls * 0.99)] * 1e3,
                f"{name}_cpu_us": (_cpu(pid) - cpu) / calls * 1e6,
                f"{name}_own_cpu_us": (_cpu(os.getpid()) - own) / calls * 1e6,
                f"{name}_datagrams": (_datagrams(conns) - grams) / calls}
        await asyncio.sleep(0.1)  # let delayed acknowledgements of this window go out
    return out


async def _load(call: Callable[[], Awaitable[object]], inflight: int,
                end: float) -> list[float]:
    """``inflight`` workers calling until ``end``: the latency of each call."""
    latencies: list[float] = []

    async def worker() -> None:
        while (now := time.perf_counter()) < end:
            await call()
            latencies.append(time.perf_counter() - now)

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return latencies


def _agent(keys: Path, name: str, gateway: str, provider: Any = None) -> Agent:
    return Agent.from_files(keys / f"{name}.pem", keys / f"{name}.key", [keys / "ca.pem"],
                            gateway=gateway, tracer_provider=provider)


async def _routed_client(keys: Path, gateway: str, pid: int, args: argparse.Namespace,
                         provider: Any = None) -> dict[str, float]:
    """The responder (echoes the payload) and the caller; their spans go to
    ``provider`` (None: OpenTelemetry's global one, a no-op here)."""
    responder = _agent(keys, "responder", gateway, provider)
    caller = _agent(keys, "caller", gateway, provider)

    @responder.handler
    def echo(payload: bytes, request: Request) -> bytes:
        return payload

    payload = (bytes(range(256)) * (args.size // 256 + 1))[: args.size]
    async with responder, caller:
        await responder.register(skills=["echo"])
        await caller.register(skills=["bench"])
        target = responder.agent_id
        conns = [cast(DmscConnection, a._conn) for a in (responder, caller)]
        return await _windows(lambda: caller.call(target, payload), args, pid, conns)


def _routed(keys: Path, args: argparse.Namespace, metrics: bool = False) -> dict[str, float]:
    """Routed calls through a gateway process; with ``metrics``, its management listener
    on (the counters of :mod:`dmscproto.management.metrics`) and OpenTelemetry on in the
    gateway and the agents (:mod:`traced`)."""
    code, provider, config = CLI, None, "gw.toml"
    if metrics:
        import traced

        code, provider, config = traced.GATEWAY, traced.provider(), "gw-metrics.toml"
    gateway, address = start_gateway("--config", str(keys / config), "--loop", args.loop,
                                     code=code)
    try:
        return loops.run(_routed_client(keys, address, gateway.pid, args, provider),
                         args.loop)
    finally:
        gateway.terminate()
        gateway.wait(10)


async def _direct_client(port: int, pid: int, args: argparse.Namespace) -> dict[str, float]:
    config = QuicConfiguration(alpn_protocols=[ALPN], is_client=True,
                               verify_mode=ssl.CERT_NONE)
    payload = bytes(args.size)
    async with aioquic_connect(HOST, port, configuration=config,
                               create_protocol=_EchoClient) as client:
        echo = cast(_EchoClient, client)
        return await _windows(lambda: echo.request(payload), args, pid, [])


def _direct(keys: Path, args: argparse.Namespace) -> dict[str, float]:
    """The baseline: quic_transport.py's aioquic echo server as a child process."""
    cmd = [sys.executable, str(Path(__file__).with_name("quic_transport.py")),
           "--serve", "aioquic", "--keys", str(keys)]
    if args.loop == "uvloop":
        cmd.append("--uvloop")
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        try:
            return loops.run(_direct_client(port, child.pid, args), args.loop)
        finally:
            child.stdin.close()
            child.wait(5)


def _setup(root: Path) -> Path:
    """One domain: the gateway's TOML configuration, its agents' rate limit (RATE_AGENT)
    raised out of the way of 32 calls in flight (and ``gw-metrics.toml``, the same
    with a management listener) and the agents' certificates, plus the files
    quic_transport's baseline expects (``ca.pem``, ``gw.*``)."""
    domain = Domain.create(root, "bench.example")
    for name in ("responder", "caller"):
        domain.issue(name, Kind.AGENT)
    config = write_gateway_config(domain, "gw")
    with config.open("a") as out:  # [limits] is its last table: the caller's rate is
        # what is measured, not limited (the guard still checks every call)
        out.write("rate_agent = 1000000\nrate_agent_burst = 1000000\n")
    config.with_name("gw-metrics.toml").write_text(
        config.read_text() + '\n[management]\nlisten = "127.0.0.1:0"\n')
    return domain.directory


def _median(values: list[float], digits: int = 1) -> float:
    return round(statistics.median(values), digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--metrics", action="store_true",
                        help="also the routed calls with OpenTelemetry on (module doc)")
    parser.add_argument("--sample", type=float, default=1.0,
                        help="with --metrics: the share of traces recorded (module doc)")
    args = parser.parse_args()
    os.environ |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                   "OTEL_TRACES_SAMPLER_ARG": str(args.sample)}

    routed: list[dict[str, float]] = []
    metered: list[dict[str, float]] = []
    direct: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        keys = _setup(Path(tmp))
        for _ in range(args.rounds):  # interleaved: load from elsewhere hits all alike
            routed.append(_routed(keys, args))
            if args.metrics:
                metered.append(_routed(keys, args, metrics=True))
                print(f"routed with metrics {metered[-1]['c32_per_s']:.0f}/s at "
                      f"{args.inflight}, {metered[-1]['seq_per_s']:.0f}/s seq",
                      file=sys.stderr)
            direct.append(_direct(keys, args))
            r, d = routed[-1], direct[-1]
            print(f"routed {r['seq_per_s']:.0f}/s seq, {r['c32_per_s']:.0f}/s at "
                  f"{args.inflight}, {r['seq_datagrams']:.2f} datagrams and "
                  f"{r['seq_cpu_us']:.0f} us gateway CPU per call; direct echo "
                  f"{d['seq_per_s']:.0f}/s seq, {d['c32_per_s']:.0f}/s, "
                  f"{d['seq_cpu_us']:.0f} us server CPU per echo", file=sys.stderr)

    def ratio(key: str) -> float:
        return _median([r[key] / d[key] for r, d in zip(routed, direct, strict=True)], 3)

    def routed_median(key: str, digits: int = 1) -> float:
        return _median([r[key] for r in routed], digits)

    def direct_median(key: str, digits: int = 1) -> float:
        return _median([d[key] for d in direct], digits)

    out: dict[str, Any] = {
        "inflight": args.inflight, "size": args.size, "rounds": args.rounds,
        "seconds": args.seconds, "loop": args.loop,
        "seq_ratio": ratio("seq_per_s"), "c32_ratio": ratio("c32_per_s"),
        "datagrams_per_call": routed_median("seq_datagrams", 2),
        "gateway_cpu_ratio": ratio("seq_cpu_us"),
        "routed_seq_per_s": routed_median("seq_per_s"),
        "routed_seq_p50_ms": routed_median("seq_p50_ms", 3),
        "routed_c32_per_s": routed_median("c32_per_s"),
        "direct_seq_per_s": direct_median("seq_per_s"),
        "direct_c32_per_s": direct_median("c32_per_s"),
        "gateway_cpu_us_per_call": routed_median("seq_cpu_us"),
        "echo_cpu_us_per_call": direct_median("seq_cpu_us"),
        "direct_seq_p50_ms": direct_median("seq_p50_ms", 3),
        "routed_seq_p99_ms": routed_median("seq_p99_ms", 3),
        "routed_c32_p50_ms": routed_median("c32_p50_ms", 3),
        "c32_datagrams_per_call": routed_median("c32_datagrams", 2),
        "c32_gateway_cpu_ratio": ratio("c32_cpu_us"),
        "c32_gateway_cpu_us_per_call": routed_median("c32_cpu_us"),
        "agents_cpu_us_per_call": routed_median("seq_own_cpu_us"),
        "echo_client_cpu_us_per_call": direct_median("seq_own_cpu_us"),
        "agents_cpu_ratio": _median([r["seq_own_cpu_us"] / (d["seq_own_cpu_us"]
                                                            + d["seq_cpu_us"])
                                     for r, d in zip(routed, direct, strict=True)], 3),
    }
    if args.metrics:  # each round's plain and metrics-on runs are back to back
        def metered_ratio(key: str) -> float:
            return _median([m[key] / r[key] for m, r in zip(metered, routed, strict=True)], 3)

        out["sample"] = args.sample
        for key, name in (("c32_per_s", "metrics"), ("seq_per_s", "metrics_seq")):
            out[f"{name}_per_s"] = _median([m[key] for m in metered])
            out[f"{name}_ratio"] = metered_ratio(key)
        out["metrics_gateway_cpu_ratio"] = metered_ratio("seq_cpu_us")
        out["metrics_c32_gateway_cpu_ratio"] = metered_ratio("c32_cpu_us")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
