"""``dmsc ping``: ECHO-REQUEST round trips to the home gateway (Section 6.8)."""

from __future__ import annotations

import argparse

from . import EXIT_FAILURE, EXIT_OK, Subparsers
from .agent import add_identity, agent_of, connect, progress, run_agent


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ping", help="ECHO-REQUEST round trips to the home gateway",
        description="Connect to the gateway over QUIC with an agent's certificate and "
                    "time ECHO-REQUEST / ECHO-REPLY round trips.")
    add_identity(p)
    p.add_argument("-c", "--count", type=int, default=4, help="how many (default 4)")
    p.add_argument("-i", "--interval", type=float, default=0.2,
                   help="seconds between requests (default 0.2)")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio
    import statistics

    agent, _config = agent_of(args)

    async def main() -> list[float]:
        rtts = []
        await connect(agent, retry=False)
        async with agent:
            for seq in range(1, args.count + 1):
                async with progress(f"waiting for ECHO_REPLY seq={seq} from {agent.address}"):
                    rtt = await agent.echo()
                rtts.append(rtt)
                print(f"ECHO_REPLY from {agent.address}: seq={seq} time={rtt * 1e3:.2f} ms",
                      flush=True)
                if seq < args.count:
                    await asyncio.sleep(args.interval)
        return rtts

    rtts = run_agent("ping", args.timeout, main)
    if isinstance(rtts, int):
        return rtts
    ms = [r * 1e3 for r in rtts]
    if ms:
        print(f"{len(ms)} replies, rtt min/median/max = {min(ms):.2f}/"
              f"{statistics.median(ms):.2f}/{max(ms):.2f} ms")
    return EXIT_OK if ms else EXIT_FAILURE
