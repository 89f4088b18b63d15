"""``dmsc trace``: the gateways on the route to an agent (TRACE-REQUEST, Section 6.8)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError
from .agent import add_identity, agent_of, connect, is_target, progress, resolve, run_agent

if TYPE_CHECKING:
    from ..agent import Trace


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "trace", help="the gateways on the route to an agent",
        description="Send a TRACE-REQUEST towards an agent through the home gateway and "
                    "print every gateway that reported itself on the way.")
    add_identity(p)
    p.add_argument("target", metavar="AGENT",
                   help="the target: its Agent ID (32 hex digits) or its dmsc:// URI")
    return p


def run(args: argparse.Namespace) -> int:
    if not is_target(args.target):
        raise UsageError(f"an agent is 32 hex digits (its Agent ID) or a dmsc:// URI, "
                         f"not {args.target!r}")
    agent, _config = agent_of(args)

    async def main() -> Trace:
        await connect(agent, retry=False)
        async with agent, progress(f"tracing the route to {args.target}"):
            return await agent.trace(await resolve(agent, args.target))

    reply = run_agent("trace", args.timeout, main)
    if isinstance(reply, int):
        return reply
    first = reply.hops[0].timestamp if reply.hops else 0
    for n, hop in enumerate(reply.hops, 1):
        print(f"{n:2d}  {hop.name or '-':12} {hop.domain:20} {hop.gateway_id.hex()}  "
              f"+{hop.timestamp - first} ms")
    print(f"{reply.status.name}" + (f": {reply.diagnostic}" if reply.diagnostic else ""))
    return EXIT_OK if reply.reached else EXIT_FAILURE
