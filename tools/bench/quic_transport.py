"""QUIC transport benchmark: DMSC request/response vs a plain aioquic echo (Section 9.1).

    python tools/bench/quic_transport.py [--seconds S] [--rounds R] [--inflight N] [--size BYTES]

The server runs in a child process, the client in this one (two processes on one box,
as in issue 4 item 7).  Each run keeps N requests in flight for S seconds, a new
bidirectional stream per request; the configurations below are run in turn, R rounds
(``--rounds``), and the median rate of each is reported:

* ``dmsc``: :func:`dmscproto.transport.connect` / :func:`serve` with mutual TLS 1.3
  (Ed25519 certificates from a fresh domain authority); the request is an ECHO-REQUEST
  with a BYTES-octet payload, the server handler answers with an ECHO-REPLY, each side
  encodes and decodes PDUs.
* ``aioquic`` (baseline): the bare aioquic asyncio API, server-only TLS with the same
  gateway certificate, echoing BYTES raw octets per stream.

Both are run on the default asyncio loop and, when uvloop is installed, on uvloop.
``handshake_ms`` is the mean time of :func:`connect` (handshake, certificate checks on
both ends and the confirming PING) over 20 connections.  The last line printed is one
JSON object; ``ratio`` is dmsc/aioquic on the same loop, ``uvloop_gain`` is DMSC on
uvloop over DMSC on asyncio.  The DMSC side coalesces the packets of requests issued
in the same loop iteration (aioquic's ``transmit`` is deferred with ``call_soon``) while
the baseline client transmits per request, as aioquic's examples do; that is why the
ratio can exceed 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from aioquic.asyncio.client import connect as aioquic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve as aioquic_serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from dmscproto.codec.messages import EchoReply, EchoRequest, Message
from dmscproto.codec.registry import ALPN
from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.transport import PeerInfo, TlsIdentity, connect, serve

T = TypeVar("T")

HOST = "127.0.0.1"


class _Echo(QuicConnectionProtocol):
    """Baseline server: echo each stream's data back with FIN."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffers: dict[int, bytes] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            data = self._buffers.pop(event.stream_id, b"") + event.data
            if event.end_stream:
                # datagram_received() transmits after processing the events
                self._quic.send_stream_data(event.stream_id, data, end_stream=True)
            else:
                self._buffers[event.stream_id] = data


class _EchoClient(QuicConnectionProtocol):
    """Baseline client: one new stream per request, a future per stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: dict[int, asyncio.Future[bytes]] = {}
        self._buffers: dict[int, bytes] = {}

    async def request(self, data: bytes) -> bytes:
        stream_id = self._quic.get_next_available_stream_id()
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters[stream_id] = waiter
        self._quic.send_stream_data(stream_id, data, end_stream=True)
        self.transmit()
        return await waiter

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            data = self._buffers.pop(event.stream_id, b"") + event.data
            if event.end_stream:
                self._waiters.pop(event.stream_id).set_result(data)
            else:
                self._buffers[event.stream_id] = data


async def _echo_handler(msg: Message, peer: PeerInfo) -> Message:
    assert isinstance(msg, EchoRequest)
    return EchoReply(transaction_id=msg.transaction_id, sequence=msg.sequence,
                     timestamp=msg.timestamp, gateway_id=bytes(16), payload=msg.payload)


def _identity(keys: Path, name: str) -> TlsIdentity:
    return TlsIdentity.from_files(keys / f"{name}.pem", keys / f"{name}.key",
                                  [keys / "ca.pem"])


async def _serve(mode: str, keys: Path) -> None:
    tls = _identity(keys, "gw")
    if mode == "dmsc":
        server = await serve(HOST, 0, tls, _echo_handler)
        port = server.address[1]
    else:
        config = QuicConfiguration(alpn_protocols=[ALPN], is_client=False,
                                   certificate=tls.credential.certificate,
                                   private_key=tls.credential.private_key)
        quic_server = await aioquic_serve(HOST, 0, configuration=config, create_protocol=_Echo)
        port = quic_server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


async def _load(call: Callable[[int], Awaitable[None]], seconds: float,
                inflight: int) -> tuple[float, list[float]]:
    for i in range(200):  # warm-up
        await call(i)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w
        while (now := time.perf_counter()) < end:
            await call(i)
            latencies.append(time.perf_counter() - now)
            i += inflight

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(inflight)))
    return len(latencies) / (time.perf_counter() - start), latencies


async def _client(mode: str, keys: Path, port: int, seconds: float, inflight: int,
                  size: int) -> tuple[float, list[float], float | None]:
    payload = bytes(size)
    if mode == "dmsc":
        tls = _identity(keys, "agent")
        started = time.perf_counter()
        for _ in range(20):
            conn = await connect(HOST, port, tls)
            conn.close()
        handshake = (time.perf_counter() - started) / 20
        conn = await connect(HOST, port, tls)

        async def call(i: int) -> None:
            await conn.request(EchoRequest(transaction_id=i, sequence=i & 0xFFFFFFFF,
                                           timestamp=0, payload=payload))
        rate, lat = await _load(call, seconds, inflight)
        conn.close()
        return rate, lat, handshake
    config = QuicConfiguration(alpn_protocols=[ALPN], is_client=True,
                               verify_mode=ssl.CERT_NONE)
    async with aioquic_connect(HOST, port, configuration=config,
                               create_protocol=_EchoClient) as client:
        echo = cast(_EchoClient, client)

        async def call(i: int) -> None:
            await echo.request(payload)
        rate, lat = await _load(call, seconds, inflight)
    return rate, lat, None


def _run(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    if use_uvloop:
        import uvloop

        result: T = uvloop.run(coro)
        return result
    return asyncio.run(coro)


def _measure(mode: str, keys: Path, use_uvloop: bool,
             args: argparse.Namespace) -> tuple[float, list[float], float | None]:
    cmd = [sys.executable, __file__, "--serve", mode, "--keys", str(keys)]
    if use_uvloop:
        cmd.append("--uvloop")
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        try:
            return _run(_client(mode, keys, port, args.seconds, args.inflight, args.size),
                        use_uvloop)
        finally:
            child.stdin.close()
            child.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--serve", choices=["dmsc", "aioquic"], help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            _run(_serve(args.serve, args.keys), args.uvloop)
        return

    have_uvloop = importlib.util.find_spec("uvloop") is not None
    configs = [(mode, loop) for loop in ([False, True] if have_uvloop else [False])
               for mode in ("dmsc", "aioquic")]
    rates: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    latencies: dict[bool, list[float]] = {False: [], True: []}
    handshakes: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp)
        ca = DomainAuthority.create("bench.example")
        ca.save(keys)
        ca.issue("gw", Kind.GATEWAY).save(keys)
        ca.issue("agent", Kind.AGENT).save(keys)
        for _ in range(args.rounds):  # interleaved, so load from elsewhere hits all alike
            for mode, use_uvloop in configs:
                rate, lat, handshake = _measure(mode, keys, use_uvloop, args)
                rates[mode, use_uvloop].append(rate)
                if handshake is not None:
                    latencies[use_uvloop].extend(lat)
                    handshakes[use_uvloop].append(handshake)
                print(f"{'uvloop' if use_uvloop else 'asyncio'} {mode}: {rate:.0f} req/s",
                      file=sys.stderr)
    out: dict[str, Any] = {"inflight": args.inflight, "size": args.size,
                           "rounds": args.rounds, "uvloop": have_uvloop}
    for use_uvloop in [False, True] if have_uvloop else [False]:
        prefix = "uvloop_" if use_uvloop else ""
        dmsc = statistics.median(rates["dmsc", use_uvloop])
        base = statistics.median(rates["aioquic", use_uvloop])
        lat = sorted(latencies[use_uvloop])
        out |= {f"{prefix}dmsc_per_s": round(dmsc, 1), f"{prefix}aioquic_per_s": round(base, 1),
                f"{prefix}ratio": round(dmsc / base, 3),
                f"{prefix}p50_ms": round(statistics.median(lat) * 1e3, 3),
                f"{prefix}p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
                f"{prefix}handshake_ms": round(statistics.median(handshakes[use_uvloop]) * 1e3,
                                               2)}
    if have_uvloop:
        out["uvloop_gain"] = round(out["uvloop_dmsc_per_s"] / out["dmsc_per_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
