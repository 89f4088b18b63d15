"""Peer comparison: the routed DMSC call beside the A2A SDK and SLIM, interleaved (issue 18
item 5).

    python tools/bench/peers.py [--seconds S] [--rounds R] [--inflight N] [--size BYTES]

Four systems, each one call at a time (``seq``) and with N calls in flight (``c32``),
S seconds each, R rounds interleaved so that load from elsewhere hits all alike:

* ``dmsc``: the routed call of :mod:`route` (agent -> ``dmsc gateway`` process -> agent
  over QUIC with mutual TLS, the SDK at both ends);
* ``echo``: :mod:`route`'s baseline, a direct aioquic echo, one hop to another process;
* ``a2a``: the A2A SDK (a2a-sdk 1.3, the ``a2a`` extra): ``SendMessage`` over HTTP
  (JSON-RPC) from the SDK client to an SDK server agent in another process, one hop
  (:class:`dmscproto.a2a.sample.SampleAgent`, as ``tools/bench/a2a.py`` measures it);
* ``slim``: SLIM (slim-bindings, the ``peers`` extra, 3.3.8 measured): a SLIM node (its Rust
  data plane) in one process, a caller and an echoing responder app in another, each
  call a message published on a point-to-point session and the answer received, through
  the node as a DMSC call goes through its gateway; N in flight are N sessions.  SLIM's
  connections to its node are gRPC over TCP as it configures them (no TCP_NODELAY
  forced, unlike issue 18's first measurement).  Without slim-bindings, ``slim`` is
  reported as not installed.

Last line, one JSON object: ``<system>_seq_per_s``, ``<system>_seq_p50_ms`` and
``<system>_c32_per_s`` (medians over rounds), and ``dmsc_vs_<peer>_seq`` /
``dmsc_vs_<peer>_c32`` (median over rounds of the routed rate over the peer's);
stderr has the same as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import route
from gateway_proc import spawn, stop

HERE = Path(__file__).resolve().parent

HOST = "127.0.0.1"
SLIM_SECRET = "dmsc-peers-benchmark-shared-secret-32+"
SLIM_NODE = ("import asyncio, sys, slim_bindings as s\n"
             "async def main():\n"
             "    s.initialize_with_defaults()\n"
             "    await s.get_global_service().run_server_async(\n"
             "        s.new_insecure_server_config(sys.argv[1]))\n"
             "    print('ready', flush=True)\n"
             "    await asyncio.Event().wait()\n"
             "asyncio.run(main())\n")


def _a2a_bench() -> Any:
    """``tools/bench/a2a.py`` (its name shadows the a2a-sdk package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("a2a_bench", HERE / "a2a.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _a2a(bench: Any, url: str, args: argparse.Namespace) -> dict[str, float]:
    seq, seq_p50 = asyncio.run(bench._a2a(url, 1, args.seconds))
    c32, _p50 = asyncio.run(bench._a2a(url, args.inflight, args.seconds))
    return {"seq_per_s": seq, "seq_p50_ms": seq_p50, "c32_per_s": c32}


async def _load(call: Callable[[], Awaitable[object]], inflight: int,
                seconds: float) -> tuple[float, float]:
    """Calls per second and median latency (ms) of ``inflight`` callers."""
    latencies = await route._load(call, inflight, time.perf_counter() + seconds)
    return len(latencies) / seconds, statistics.median(latencies) * 1e3


async def _slim_client(endpoint: str, args: argparse.Namespace) -> dict[str, float]:
    """A caller and an echoing responder app of SLIM, connected to the node."""
    import slim_bindings as s

    loop = asyncio.get_running_loop()
    assert isinstance(loop, asyncio.BaseEventLoop)  # what SLIM's bindings are typed for
    s.uniffi_set_event_loop(loop)
    s.initialize_with_defaults()
    service = s.get_global_service()
    conn = await service.connect_async(s.new_insecure_client_config(endpoint))
    names = {role: s.Name("dmsc", "bench", role) for role in ("caller", "responder")}
    apps = {role: service.create_app_with_secret(name, SLIM_SECRET)
            for role, name in names.items()}
    for role, app in apps.items():
        await app.subscribe_async(names[role], conn)
    await apps["caller"].set_route_async(names["responder"], conn)

    echoes: list[asyncio.Future[None]] = []

    async def echo_sessions() -> None:
        while True:
            session = await apps["responder"].listen_for_session_async(None)
            echoes.append(asyncio.ensure_future(echo(session)))

    async def echo(session: Any) -> None:
        while True:
            msg = await session.get_message_async(None)
            await session.publish_to_async(msg.context, msg.payload, None, None)

    server = asyncio.ensure_future(echo_sessions())
    config = s.SessionConfig(session_type=s.SessionType.POINT_TO_POINT, max_retries=None,
                             interval=None, metadata={}, mls_settings=None)
    payload = bytes(args.size)
    wait = datetime.timedelta(seconds=10)
    sessions = [await apps["caller"].create_session_and_wait_async(config,
                                                                   names["responder"])
                for _ in range(args.inflight)]
    free = list(sessions)

    async def call() -> None:
        session = free.pop()
        try:
            await session.publish_async(payload, None, None)
            answer = await session.get_message_async(wait)
            assert answer.payload == payload
        finally:
            free.append(session)

    for _ in range(route.WARMUP):
        await call()
    seq, seq_p50 = await _load(call, 1, args.seconds)
    c32, _p50 = await _load(call, args.inflight, args.seconds)
    for task in (server, *echoes):
        task.cancel()
    return {"seq_per_s": seq, "seq_p50_ms": seq_p50, "c32_per_s": c32}


def _slim(endpoint: str, args: argparse.Namespace) -> dict[str, float]:
    """The SLIM apps in a process of their own (SLIM's runtime is per process)."""
    out = subprocess.run(
        [sys.executable, __file__, "--slim-client", endpoint, "--seconds", str(args.seconds),
         "--inflight", str(args.inflight), "--size", str(args.size)],
        capture_output=True, text=True, check=True, timeout=300)
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--slim-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.loop = "asyncio"
    if args.slim_client:
        print(json.dumps(asyncio.run(_slim_client(args.slim_client, args))))
        return

    have_slim = importlib.util.find_spec("slim_bindings") is not None
    bench = _a2a_bench()
    results: dict[str, list[dict[str, float]]] = {}
    procs: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            keys = route._setup(Path(tmp))
            proc, a2a_url = spawn([sys.executable, "-P", "-c", bench.SAMPLE], "http://", quiet=True)
            procs.append(proc)
            slim_endpoint = ""
            if have_slim:
                address = f"{HOST}:{_free_port()}"
                procs.append(spawn([sys.executable, "-P", "-c", SLIM_NODE, address], "ready",
                                   quiet=True)[0])
                slim_endpoint = f"http://{address}"
            systems: dict[str, Callable[[], dict[str, float]]] = {
                "dmsc": lambda: route._routed(keys, args),
                "echo": lambda: route._direct(keys, args),
                "a2a": lambda: _a2a(bench, a2a_url, args)}
            if have_slim:
                systems["slim"] = lambda: _slim(slim_endpoint, args)
            for _ in range(args.rounds):
                for name, measure in systems.items():
                    results.setdefault(name, []).append(measure())
    finally:
        for proc in procs:
            stop(proc)

    out: dict[str, Any] = {"inflight": args.inflight, "size": args.size,
                           "rounds": args.rounds, "seconds": args.seconds}
    print(f"{'system':8} {'seq/s':>8} {'p50 ms':>8} {f'{args.inflight} in flight/s':>16}",
          file=sys.stderr)
    for name, runs in results.items():
        for key in ("seq_per_s", "seq_p50_ms", "c32_per_s"):
            out[f"{name}_{key}"] = round(statistics.median(r[key] for r in runs), 3)
        print(f"{name:8} {out[f'{name}_seq_per_s']:8.0f} {out[f'{name}_seq_p50_ms']:8.2f} "
              f"{out[f'{name}_c32_per_s']:16.0f}", file=sys.stderr)
        if name != "dmsc":
            for key in ("seq", "c32"):
                out[f"dmsc_vs_{name}_{key}"] = round(statistics.median(
                    d[f"{key}_per_s"] / p[f"{key}_per_s"]
                    for d, p in zip(results["dmsc"], runs, strict=True)), 3)
    if not have_slim:
        out["slim"] = "not installed (pip install -e '.[peers]')"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
