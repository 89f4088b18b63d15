"""A2A bridge benchmark (draft-dmsc-a2a-00; issue 17 item 6): the a2a-sdk client calling
a DMSC agent through the bridge and DMSC, beside the same client calling an a2a-sdk
server agent directly, in one run, at 1 and 32 calls in flight.

    python tools/bench/a2a.py [--seconds S] [--rounds R] [--gateways 1|2]

Processes, all real: ``dmsc gateway`` (one, or two domains' with ``--gateways 2``),
``dmsc agent --reply "A2A says: "`` (the DMSC agent), ``dmsc a2a serve`` (the bridge,
plain HTTP on loopback, no tokens) and the a2a-sdk server agent
(:class:`dmscproto.a2a.sample.SampleAgent`, the same answer) in its own process; the
client runs here.  Bridged: client -> bridge (HTTP, JSON-RPC) -> gateway(s) (QUIC) ->
DMSC agent and back.  Direct: client -> A2A server (HTTP, JSON-RPC, the SDK's
DefaultRequestHandler) and back.  Each (path, concurrency) runs S seconds per round,
direct and bridged back to back; medians over R rounds.

For reference, ``dmsc_N_per_s``: a DMSC agent calling the DMSC agent through the same
gateway(s) with the SDK, i.e. the bridged path without HTTP and the bridge.

Last line, one JSON object: ``bridged_1_per_s``, ``direct_1_per_s``, ``ratio_1``,
``bridged_32_per_s``, ``direct_32_per_s``, ``ratio_32``, ``dmsc_1_per_s``,
``dmsc_32_per_s``, the p50 latencies in ms, and ``ratio``: the smaller of ``ratio_1``
and ``ratio_32`` (bridged rate / direct rate; the target is >= 0.66, the bridged call
costing at most 1.5x the direct one).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from dmscproto.agent import Agent
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import Kind

# this script is named a2a.py: its directory must not shadow the a2a-sdk's package
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("gateway_proc", HERE / "gateway_proc.py")
assert _spec is not None and _spec.loader is not None
gateway_proc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gateway_proc)
CLI, start_gateway = gateway_proc.CLI, gateway_proc.start_gateway
_spawn, _stop = gateway_proc.spawn, gateway_proc.stop

HOST = "127.0.0.1"
SAMPLE = ("import asyncio\n"
          "from dmscproto.a2a.sample import SampleAgent\n"
          "async def main():\n"
          "    agent = SampleAgent()\n"
          "    await agent.start()\n"
          "    print(agent.url, flush=True)\n"
          "    await asyncio.Event().wait()\n"
          "asyncio.run(main())\n")


def _agent_toml(dom: Domain, name: str, gateway: str, skills: Sequence[str] = ()) -> Path:
    cert, key = dom.issue(name, Kind.AGENT)
    path = dom.directory / f"{name}-agent.toml"
    path.write_text(f'[agent]\ncertificate = "{cert.name}"\nkey = "{key.name}"\n'
                    f'trust_anchors = ["ca.pem"]\ngateway = "{gateway}"\n'
                    f'server_name = "localhost"\nskills = {json.dumps(list(skills))}\n')
    return path


async def _rate(one: Callable[[int], Awaitable[None]], inflight: int,
                seconds: float) -> tuple[float, float]:
    """Calls per second of ``one`` kept ``inflight`` at a time for ``seconds``, and the
    median latency in ms."""
    latencies: list[float] = []

    async def timed(i: int) -> None:
        t = time.perf_counter()
        await one(i)
        latencies.append(time.perf_counter() - t)

    for i in range(inflight):  # warm the connections
        await timed(i)
    latencies.clear()
    end = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < end:
            await timed(w * 1_000_000 + i)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(inflight)))
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, statistics.median(latencies) * 1e3


async def _a2a(url: str, inflight: int, seconds: float) -> tuple[float, float]:
    """The a2a-sdk client calling ``url`` (the agent's base URL)."""
    import httpx
    from a2a.client import ClientConfig, create_client
    from a2a.types import Message, Part, Role, SendMessageRequest

    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        client = await create_client(url, ClientConfig(httpx_client=http, streaming=False))

        async def one(i: int) -> None:
            request = SendMessageRequest(message=Message(
                message_id=f"m{i}", role=Role.ROLE_USER, parts=[Part(text="ping")]))
            async for response in client.send_message(request):
                assert response.message.parts[0].text == "A2A says: ping", response

        return await _rate(one, inflight, seconds)


async def _dmsc(config: Path, target: str, inflight: int,
                seconds: float) -> tuple[float, float]:
    """For reference: a DMSC agent calling the DMSC agent through the gateway(s), the
    bridged path without the bridge and HTTP."""
    async with Agent.from_config(config) as caller:
        [found] = await caller.discover(skills=[target])

        async def one(i: int) -> None:
            assert await caller.call(found, b"ping") == b"A2A says: ping"

        return await _rate(one, inflight, seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gateways", type=int, choices=[1, 2], default=1,
                   help="2: the DMSC agent in another domain, behind its own gateway")
    args = p.parse_args()
    procs: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dmsc-bench-a2a-") as tmp:
            root = Path(tmp)
            a = Domain.create(root, "a.example")
            b = Domain.create(root, "b.example") if args.gateways == 2 else a
            if args.gateways == 2:
                gw_b, addr_b = start_gateway("--config", str(write_gateway_config(
                    b, "gw-b", peers=[PeerSpec(a)])))
                procs.append(gw_b)
                host, port = addr_b.rsplit(":", 1)
                gw_a, addr_a = start_gateway("--config", str(write_gateway_config(
                    a, "gw-a", peers=[PeerSpec(b, (host, int(port)))])))
            else:
                gw_a, addr_a = start_gateway("--config", str(write_gateway_config(a, "gw-a")))
                addr_b = addr_a
            procs.append(gw_a)
            echo = _agent_toml(b, "echo", addr_b, ["echo"])
            proc, _ = _spawn([sys.executable, "-P", "-c", CLI, "agent", "--config", str(echo),
                              "--reply", "A2A says: "], "registered")
            procs.append(proc)
            caller = _agent_toml(a, "caller", addr_a)
            bridge = _agent_toml(a, "a2a-bridge", addr_a)
            conf = a.directory / "a2a.toml"
            conf.write_text(f'[a2a]\nagent = "{bridge.name}"\n'
                            f'listen = "http://{HOST}:0"\n')
            proc, line = _spawn([sys.executable, "-P", "-c", CLI, "a2a", "serve", "--config",
                                 str(conf)], "serving A2A at")
            procs.append(proc)
            bridge_url = line.split()[3] + f"/agents/{b.name}/echo"
            proc, direct_url = _spawn([sys.executable, "-P", "-c", SAMPLE], "http://")
            procs.append(proc)

            results: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for n in (1, 32):
                    runs = (("direct", _a2a(direct_url, n, args.seconds)),
                            ("bridged", _a2a(bridge_url, n, args.seconds)),
                            ("dmsc", _dmsc(caller, "echo", n, args.seconds)))
                    for name, run in runs:
                        rate, p50 = asyncio.run(run)
                        results.setdefault(f"{name}_{n}_per_s", []).append(rate)
                        results.setdefault(f"{name}_{n}_p50_ms", []).append(p50)
                    results.setdefault(f"ratio_{n}", []).append(
                        results[f"bridged_{n}_per_s"][-1] / results[f"direct_{n}_per_s"][-1])
            out: dict[str, Any] = {k: round(statistics.median(v), 3)
                                   for k, v in results.items()}
            out["ratio"] = min(out["ratio_1"], out["ratio_32"])
            out["gateways"] = args.gateways
            for k, v in out.items():
                if k.endswith("per_s") or k.startswith("ratio"):
                    print(f"{k:>20}: {v}", file=sys.stderr)
            print(json.dumps(out))
    finally:
        for proc in reversed(procs):
            _stop(proc)


if __name__ == "__main__":
    main()
