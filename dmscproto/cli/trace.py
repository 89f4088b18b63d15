"""``dmsc trace``: the gateways on the route to an agent (TRACE-REQUEST, Section 6.8)."""

from __future__ import annotations

import argparse

from . import EXIT_FAILURE, EXIT_OK, Subparsers
from .agent import add_identity, agent_of, target_id


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "trace", help="the gateways on the route to an agent",
        description="Send a TRACE-REQUEST towards an agent through the home gateway and "
                    "print every gateway that reported itself on the way.")
    add_identity(p)
    p.add_argument("target", metavar="AGENT_ID", help="the target's Agent ID (32 hex digits)")
    return p


def run(args: argparse.Namespace) -> int:
    import sys

    from ..agent import AgentError
    from ..codec.messages import TraceReply
    from ..codec.registry import ErrorCode
    from ..runtime import loop
    from ..transport import TransportError

    target = target_id(args.target)
    agent, _config = agent_of(args)

    async def main() -> TraceReply:
        async with agent:
            return await agent.trace(target)

    try:
        reply = loop.run(main())
    except (AgentError, TransportError, OSError) as exc:
        print(f"dmsc trace: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    first = reply.hops[0].timestamp if reply.hops else 0
    for n, hop in enumerate(reply.hops, 1):
        print(f"{n:2d}  {hop.name or '-':12} {hop.domain:20} {hop.gateway_id.hex()}  "
              f"+{hop.timestamp - first} ms")
    print(f"{reply.status.name}" + (f": {reply.diagnostic}" if reply.diagnostic else ""))
    return EXIT_OK if reply.status is ErrorCode.SUCCESS else EXIT_FAILURE
