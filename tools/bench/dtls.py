"""DTLS transport benchmark, beside QUIC in the same run (Sections 9.1, 9.2, 9.3).

    python tools/bench/dtls.py [--seconds S] [--inflight N] [--handshakes K] [--loss RATE]

The server runs in a child process, the client in this one.  For each transport
(``dtls``: :mod:`dmscproto.transport.dtls`, ECDSA P-256 gateway certificate; ``quic``:
:mod:`dmscproto.transport.quic`, Ed25519 gateway certificate; both with an Ed25519 agent
certificate and mutual authentication):

* ``handshake_ms``: median time of ``connect`` over K fresh connections (DTLS: cookie
  exchange and full handshake; QUIC: handshake and the confirming PING);
* ``rate``: ECHO-REQUEST / ECHO-REPLY round trips completed per second (64-octet
  payload), N in flight on one connection for S seconds, handler on the server side,
  with the median and 99th percentile round-trip time (``p50_ms``, ``p99_ms``);
* ``dtls_lossy_rate``: the same over DTLS through the impairment relay at ``--loss``
  with as much reordering and duplication (the relay runs in the client's process).  The
  DMSC retransmission timers are at their registry values, so the tail latency is
  RETRANSMIT_INITIAL doubling (0.5, 1.5, 3.5 s after one, two, three losses);
  ``dtls_lossy_failed`` counts the requests abandoned at their transaction time
  (every copy of the request or of its answer lost: rare at 10%).

Ratios are DTLS over QUIC.  The last line printed is one JSON object.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from dmscproto.codec.messages import EchoReply, EchoRequest, Message
from dmscproto.codec.registry import ErrorCode
from dmscproto.security.ca import Credential, DomainAuthority, Kind
from dmscproto.transport import dtls, quic
from dmscproto.transport.errors import TransportError
from dmscproto.transport.tls import TlsIdentity

HOST = "127.0.0.1"
PAYLOAD = bytes(64)
Connect = Callable[[int], Awaitable[Any]]


async def handler(msg: Message, peer: Any) -> Message:
    assert isinstance(msg, EchoRequest)
    return EchoReply(sequence=msg.sequence, timestamp=msg.timestamp, gateway_id=bytes(16),
                     payload=msg.payload)


def make_pki(directory: Path) -> None:
    """A domain authority, a P-256 gateway (DTLS), an Ed25519 gateway (QUIC), an agent."""
    ca = DomainAuthority.create("a.example")
    ca.save(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue("gw-dtls", Kind.GATEWAY, public_key=key.public_key()).certificate
    Credential(cert, key).save(directory)
    ca.issue("gw-quic", Kind.GATEWAY).save(directory)
    ca.issue("agent", Kind.AGENT).save(directory)


def identity(directory: Path, name: str) -> TlsIdentity:
    return TlsIdentity.from_files(directory / f"{name}.pem", directory / f"{name}.key",
                                  [directory / "ca.pem"])


async def serve_forever(directory: Path) -> None:
    """Child process: both servers; print their ports, run until stdin closes."""
    d = await dtls.serve(HOST, 0, identity(directory, "gw-dtls"), handler)
    q = await quic.serve(HOST, 0, identity(directory, "gw-quic"), handler)
    print(json.dumps({"dtls": d.address[1], "quic": q.address[1]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def handshakes(connect: Connect, port: int, count: int) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn = await connect(port)
        times.append((time.perf_counter() - start) * 1000)
        conn.close()
        await asyncio.sleep(0.01)
    return statistics.median(times)


async def rate(conn: Any, seconds: float, inflight: int) -> tuple[float, float, float, int]:
    """Round trips completed within ``seconds`` per second, their median and 99th
    percentile latency in ms (requests still outstanding at the end are not counted),
    and how many requests were abandoned at their transaction time (TRANSACTION_TIMEOUT:
    through the lossy relay every copy of a request, or of its answer, can be lost)."""
    latencies: list[float] = []
    failed = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(w: int) -> None:
        nonlocal failed
        seq = 0
        while time.perf_counter() < deadline:
            seq += 1
            sent = time.perf_counter()
            try:
                answer = await conn.request(EchoRequest(sequence=seq, timestamp=w,
                                                        payload=PAYLOAD))
            except TransportError as exc:
                if exc.code is not ErrorCode.TRANSACTION_TIMEOUT:
                    raise
                failed += 1
                continue
            assert isinstance(answer, EchoReply)
            if time.perf_counter() <= deadline:
                latencies.append(time.perf_counter() - sent)
    await asyncio.gather(*(worker(w) for w in range(inflight)))
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    return len(latencies) / seconds, statistics.median(latencies) * 1000, p99 * 1000, failed


async def client(args: argparse.Namespace, directory: Path, ports: dict[str, int]
                 ) -> dict[str, Any]:
    from interop.relay import Impairment, Relay  # the repository root is on sys.path now

    agent = identity(directory, "agent")
    connects: dict[str, Connect] = {
        "dtls": lambda port: dtls.connect(HOST, port, agent),
        "quic": lambda port: quic.connect(HOST, port, agent),
    }
    out: dict[str, Any] = {"inflight": args.inflight, "seconds": args.seconds}
    for name, connect in connects.items():
        out[f"{name}_handshake_ms"] = round(
            await handshakes(connect, ports[name], args.handshakes), 3)
        conn = await connect(ports[name])
        await rate(conn, 0.3, args.inflight)  # warm up
        *figures, out[f"{name}_failed"] = await rate(conn, args.seconds, args.inflight)
        out[f"{name}_rate"], out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = (
            round(v, 3) for v in figures)
        conn.close()
    relay = await Relay.start((HOST, 0), (HOST, ports["dtls"]), Impairment(
        loss=args.loss, duplicate=args.loss, reorder=args.loss, seed=1))
    conn = await dtls.connect(*relay.address, agent, timeout=10)
    *figures, out["dtls_lossy_failed"] = await rate(conn, args.seconds, args.inflight)
    out["dtls_lossy_rate"], out["dtls_lossy_p50_ms"], out["dtls_lossy_p99_ms"] = (
        round(v, 3) for v in figures)
    out["loss"] = args.loss
    conn.close()
    relay.close()
    out["handshake_ratio_dtls_vs_quic"] = round(
        out["dtls_handshake_ms"] / out["quic_handshake_ms"], 3)
    out["rate_ratio_dtls_vs_quic"] = round(out["dtls_rate"] / out["quic_rate"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--handshakes", type=int, default=15)
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_forever(args.serve))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_pki(directory)
        root = Path(__file__).resolve().parents[2]
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(directory)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=root)
        try:
            assert child.stdout is not None
            ports = json.loads(child.stdout.readline())
            sys.path.insert(0, str(root))
            result = asyncio.run(client(args, directory, ports))
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=10)
    result["note"] = ("echo request/response, server in a child process; DTLS and QUIC in "
                      "the same run")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
