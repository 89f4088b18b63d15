"""Memory per connected agent at a gateway (draft Section 9.1; issue 18 item 3).

    python tools/bench/agents.py [--counts 1,100,1000,10000] [--workers 2]

A real ``dmsc gateway`` process (its ``[limits]`` raised so that one host may hold
every connection) and worker processes, each holding its share of the agents: every
agent has a certificate of its own, connects over QUIC with mutual TLS, sends one
ECHO_REQUEST and then stays idle (its keepalive PINGs aside).  After each count is
reached (1, 100, 1,000 and 10,000 by default, cumulatively) the gateway's resident
memory (``VmRSS``) is read; the cost of an agent is its growth over the gateway's
memory with no agent, divided by the count.

Last line, one JSON object: ``kb_per_agent`` at the largest count, and for each count
``rss_kb_N`` and ``kb_per_agent_N``; ``connect_s`` is how long the agents of the
largest count took to connect (handshakes on both ends, on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_proc import start_gateway

from dmscproto.codec.messages import EchoRequest
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.transport import DmscConnection, TlsIdentity, connect

#: Handshakes a worker keeps in progress at once (more only queue at the gateway).
CONCURRENT = 8
#: How long an agent waits for its handshake and its ECHO (a shared, loaded machine).
PATIENCE = 120.0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _worker(directory: Path, host: str, port: int, index: int) -> None:
    """Reads a target count per line on stdin, connects agents up to it, answers
    ``ok``; closes every connection at EOF."""
    authority = DomainAuthority.load(directory)
    conns: list[DmscConnection] = []
    limit = asyncio.Semaphore(CONCURRENT)
    loop = asyncio.get_running_loop()

    async def one(n: int) -> DmscConnection:
        tls = TlsIdentity(authority.issue(f"agent-{index}-{n}", Kind.AGENT),
                          authority.trust_store)
        async with limit:
            for attempt in range(5):
                try:
                    conn = await connect(host, port, tls, timeout=PATIENCE)
                    break
                except Exception:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)
        await conn.request(EchoRequest(transaction_id=n, sequence=n, timestamp=0),
                           timeout=PATIENCE)
        return conn

    while line := await loop.run_in_executor(None, sys.stdin.readline):
        target = int(line)
        conns += await asyncio.gather(*(one(n) for n in range(len(conns), target)))
        print("ok", flush=True)
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.5)


def _gateway_config(root: Path) -> tuple[Path, Path]:
    domain = Domain.create(root, "bench.example")
    config = write_gateway_config(domain, "gw")
    with config.open("a") as out:
        out.write("quic_max_connections = 100000\nquic_max_per_address = 100000\n"
                  "quic_max_pending = 100000\nquic_retry_threshold = 100000\n"
                  f"quic_handshake_timeout = {PATIENCE}\n")
    return domain.directory, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,100,1000,10000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        directory, host, port, index = args.worker
        asyncio.run(_worker(Path(directory), host, int(port), int(index)))
        return

    counts = sorted(int(c) for c in args.counts.split(","))
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory, config = _gateway_config(Path(tmp))
        gateway, address = start_gateway("--config", str(config))
        host, port = address.rsplit(":", 1)
        workers = [subprocess.Popen(
            [sys.executable, __file__, "--worker", str(directory), host, port, str(i)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for i in range(args.workers)]
        try:
            time.sleep(1.0)
            base = _rss_kb(gateway.pid)
            out["rss_kb_0"] = base
            for count in counts:
                started = time.perf_counter()
                for i, worker in enumerate(workers):
                    assert worker.stdin is not None
                    share = count // len(workers) + (i < count % len(workers))
                    worker.stdin.write(f"{share}\n")
                    worker.stdin.flush()
                for worker in workers:
                    assert worker.stdout is not None
                    if worker.stdout.readline().strip() != "ok":
                        raise RuntimeError("a worker failed")
                out["connect_s"] = round(time.perf_counter() - started, 1)
                time.sleep(2.0)  # handshake leftovers collected, the gateway idle
                rss = _rss_kb(gateway.pid)
                out[f"rss_kb_{count}"] = rss
                out[f"kb_per_agent_{count}"] = round((rss - base) / count, 1)
                print(f"{count} agents: gateway RSS {rss} kB, "
                      f"{(rss - base) / count:.1f} kB per agent", file=sys.stderr)
        finally:
            for worker in workers:
                if worker.stdin is not None:
                    worker.stdin.close()
            try:
                for worker in workers:
                    try:
                        worker.wait(120)
                    except subprocess.TimeoutExpired:
                        worker.kill()
            finally:
                gateway.terminate()
                gateway.wait(30)
    print(json.dumps({"kb_per_agent": out[f"kb_per_agent_{counts[-1]}"],
                      "agents": counts[-1], **out}))


if __name__ == "__main__":
    main()
