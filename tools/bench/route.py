"""Routed call benchmark: agent -> gateway -> agent over QUIC vs a direct aioquic echo
(draft Sections 5.3 and 9.1; issue 4 item 7).

    python tools/bench/route.py [--seconds S] [--rounds R] [--inflight N] [--size BYTES]
                                [--metrics]

Two processes for a routed call, as for the baseline: ``dmsc gateway --config`` (the
real gateway process: SQLite store, mutual TLS) and this one, where two SDK agents run,
a responder (echoes the payload) and the caller.  Each call is a ROUTE_REQUEST from the
caller to the gateway, the gateway's ROUTE_REQUEST to the responder on the responder's
own connection, and both ROUTE_REPLYs back: two QUIC hops, four streams, eight PDUs
encoded and decoded.  N calls are kept in flight for S
seconds.  The baseline is ``tools/bench/quic_transport.py``'s plain aioquic echo
between two processes (a new stream per BYTES-octet request, N in flight), measured in
the same run.  Both are run R rounds, interleaved, on asyncio's loop and, if installed,
on uvloop; medians are reported.

Last line, one JSON object: ``routed_per_s``, ``direct_per_s`` (medians), ``ratio``
(median over rounds of routed / direct, each round's two runs being back to back),
``p50_ms`` and ``p99_ms`` of the routed calls, for the loop (``loop``) on which routed
calls went faster; the same for each loop with its name as prefix (``asyncio_ratio``,
``uvloop_ratio``); and ``uvloop_gain``, the median over rounds of the routed rate on
uvloop / on asyncio.  uvloop speeds the baseline (one send per request) more than the
routed path (which coalesces its packets), so the ratio is lower on uvloop.

``--metrics`` (issue 11 item 8) adds, in each round right after the plain routed run, the
same routed calls with OpenTelemetry on (opentelemetry-sdk: every span of the agents and
the gateway recorded and batched, then dropped: :mod:`traced`); the JSON line then also
has ``metrics_per_s`` and ``metrics_ratio`` (median over rounds of metrics-on / plain;
the target is at least 0.9), with their per-loop twins.  The plain run carries the W3C
trace context too: that is the protocol, not an option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quic_transport
from gateway_proc import CLI, start_gateway

from dmscproto.agent import Agent, Request
from dmscproto.runtime import loop as loops
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.security.ca import Kind

HOST = "127.0.0.1"


def _agent(keys: Path, name: str, gateway: str, provider: Any = None) -> Agent:
    return Agent.from_files(keys / f"{name}.pem", keys / f"{name}.key", [keys / "ca.pem"],
                            gateway=gateway, tracer_provider=provider)


async def _agents(keys: Path, gateway: str, args: argparse.Namespace, provider: Any = None
                  ) -> tuple[float, list[float]]:
    """The responder (echoes the payload) and the caller, N calls in flight; their spans
    go to ``provider`` (None: OpenTelemetry's global one, a no-op here)."""
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
        for _ in range(200):  # warm-up
            assert await caller.call(target, payload) == payload
        latencies: list[float] = []
        end = time.perf_counter() + args.seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                await caller.call(target, payload)
                latencies.append(time.perf_counter() - now)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.inflight)))
        return len(latencies) / (time.perf_counter() - start), latencies


def _measure_routed(keys: Path, loop: str, args: argparse.Namespace, metrics: bool = False
                    ) -> tuple[float, list[float]]:
    """Routed calls through a gateway process; with ``metrics``, OpenTelemetry on in the
    gateway and the agents (:mod:`traced`)."""
    config = keys / "gw.toml"
    code, provider = CLI, None
    if metrics:
        import traced

        code, provider = traced.GATEWAY, traced.provider()
    gateway, address = start_gateway("--config", str(config), "--loop", loop, code=code)
    try:
        return loops.run(_agents(keys, address, args, provider),
                         loop)  # type: ignore[arg-type]
    finally:
        gateway.terminate()
        gateway.wait(10)


def _setup(root: Path) -> Path:
    """One domain: the gateway's TOML configuration and the agents' certificates, plus
    the files quic_transport's baseline expects (``ca.pem``, ``gw.*``, ``agent.*``)."""
    domain = Domain.create(root, "bench.example")
    for name in ("responder", "caller", "agent"):
        domain.issue(name, Kind.AGENT)
    write_gateway_config(domain, "gw")
    return domain.directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--metrics", action="store_true",
                        help="also the routed calls with OpenTelemetry on (module doc)")
    args = parser.parse_args()

    loop_names = ["asyncio", "uvloop"] if loops.have_uvloop() else ["asyncio"]
    routed: dict[str, list[float]] = {n: [] for n in loop_names}
    direct: dict[str, list[float]] = {n: [] for n in loop_names}
    latencies: dict[str, list[float]] = {n: [] for n in loop_names}
    metered: dict[str, list[float]] = {n: [] for n in loop_names}
    with tempfile.TemporaryDirectory() as tmp:
        keys = _setup(Path(tmp))
        for _ in range(args.rounds):  # interleaved: load from elsewhere hits all alike
            for name in loop_names:
                rate, lat = _measure_routed(keys, name, args)
                routed[name].append(rate)
                latencies[name].extend(lat)
                if args.metrics:
                    metered[name].append(_measure_routed(keys, name, args, metrics=True)[0])
                    print(f"{name}: routed with metrics {metered[name][-1]:.0f}/s",
                          file=sys.stderr)
                base, _lat, _hs = quic_transport._measure("aioquic", keys, name == "uvloop",
                                                          args)
                direct[name].append(base)
                print(f"{name}: routed {rate:.0f}/s, direct aioquic echo {base:.0f}/s",
                      file=sys.stderr)
    per_loop: dict[str, dict[str, float]] = {}
    for name in loop_names:
        lat = sorted(latencies[name])
        per_loop[name] = {
            "routed_per_s": round(statistics.median(routed[name]), 1),
            "direct_per_s": round(statistics.median(direct[name]), 1),
            # each round's routed and direct runs are back to back: their ratio is less
            # sensitive to the load from elsewhere than the ratio of the medians
            "ratio": round(statistics.median(
                x / y for x, y in zip(routed[name], direct[name], strict=True)), 3),
            "p50_ms": round(statistics.median(lat) * 1e3, 3),
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3)}
        if args.metrics:  # each round's plain and metrics-on runs are back to back
            per_loop[name] |= {
                "metrics_per_s": round(statistics.median(metered[name]), 1),
                "metrics_ratio": round(statistics.median(
                    m / r for m, r in zip(metered[name], routed[name], strict=True)), 3)}
    # the headline is the loop on which routed calls went faster ("use uvloop if it helps")
    best = max(loop_names, key=lambda n: per_loop[n]["routed_per_s"])
    out: dict[str, Any] = {"inflight": args.inflight, "size": args.size,
                           "rounds": args.rounds, "seconds": args.seconds, "loop": best,
                           **per_loop[best]}
    for name in loop_names:
        out |= {f"{name}_{k}": v for k, v in per_loop[name].items()}
    if len(loop_names) == 2:
        out["uvloop_gain"] = round(statistics.median(
            u / a for u, a in zip(routed["uvloop"], routed["asyncio"], strict=True)), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
