"""``dmsc agent``: run a DMSC agent from the command line (DESIGN.md §5).

With ``--skill`` it registers and serves routed requests until SIGINT/SIGTERM (answering
with ``--reply`` TEXT followed by the request payload, or echoing the payload); with
``--discover`` or ``--call`` it does that one thing and exits.  ``dmsc ping`` and
``dmsc trace`` share its identity options (:func:`add_identity`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError

if TYPE_CHECKING:
    from ..agent import Agent
    from ..runtime.config import AgentConfig


def add_identity(p: argparse.ArgumentParser) -> None:
    """The options naming an agent's certificate, key, trust anchor and home gateway:
    ``--config FILE`` (:class:`~dmscproto.runtime.config.AgentConfig`) or each one."""
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="the agent's TOML configuration (instead of the four below)")
    p.add_argument("--cert", type=Path, help="the agent's certificate (PEM)")
    p.add_argument("--key", type=Path, help="its private key (PEM)")
    p.add_argument("--ca", type=Path, action="append",
                   help="trust anchor: the domain authority's certificate (repeatable)")
    p.add_argument("--gateway", metavar="HOST:PORT", help="the home gateway's address")
    p.add_argument("--server-name", default="localhost",
                   help="name the gateway certificate must carry (default: localhost)")
    p.add_argument("--transport", choices=["quic", "dtls"],
                   help="how to reach the gateway (default quic, or the file's); lab-mode "
                        "cleartext UDP only through a --config file with agent.lab = true")
    p.add_argument("--token", metavar="JWT|@FILE",
                   help="access token sent with every request (see dmsc authority token)")


def agent_of(args: argparse.Namespace) -> tuple[Agent, AgentConfig | None]:
    """The :class:`~dmscproto.agent.Agent` the identity options describe, and its
    configuration file's contents if ``--config`` was given."""
    from ..agent import Agent
    from ..runtime.config import AgentConfig, ConfigError
    config = None
    try:
        if args.config is not None:
            config = AgentConfig.load(args.config)
            token = args.token or (f"@{config.token}" if config.token else None)
            gateway = "{}:{}".format(*config.gateway)
            cert, key, anchors = config.certificate, config.key, list(config.trust_anchors)
            server_name = config.server_name
            transport = args.transport or config.transport
            lab = config.lab
        else:
            if not (args.cert and args.key and args.ca and args.gateway):
                raise UsageError("give --config, or --cert, --key, --ca and --gateway")
            host, sep, port = args.gateway.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise UsageError(f"--gateway must be HOST:PORT, not {args.gateway!r}")
            cert, key, anchors, gateway = args.cert, args.key, args.ca, args.gateway
            server_name, token = args.server_name or None, args.token
            transport, lab = args.transport or "quic", False
        if token is not None and token.startswith("@"):
            token = Path(token[1:]).read_text(encoding="ascii").strip()
        return Agent.from_files(cert, key, anchors, gateway=gateway, server_name=server_name,
                                token=token, transport=transport, lab=lab), config
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def target_id(text: str) -> bytes:
    """An Agent ID given as 32 hex digits."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 16:
        raise UsageError(f"an Agent ID is 32 hex digits, not {text!r}")
    return value


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "agent", help="register and serve, discover, or call, as an agent",
        description="Act as a DMSC agent of the certificate's domain over QUIC: with "
                    "--skill, register and answer routed requests until interrupted; "
                    "with --discover or --call, do that and exit.")
    add_identity(p)
    p.add_argument("--skill", action="append", default=[],
                   help="a skill to register (repeatable)")
    p.add_argument("--lease", type=int, help="lease to ask for, seconds (default 300)")
    p.add_argument("--reply", default="", help="answer: this text, then the payload")
    p.add_argument("--discover", action="append", metavar="SKILL",
                   help="print the agents having SKILL (repeatable) and exit")
    p.add_argument("--call", metavar="AGENT_ID|SKILL",
                   help="send --payload to an Agent ID (hex) or the best agent with SKILL")
    p.add_argument("--payload", default="", help="payload of --call (text)")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..agent import AgentError, DiscoveryQuery, Request
    from ..runtime import loop
    from ..transport import TransportError

    agent, config = agent_of(args)
    skills = args.skill or (list(config.skills) if config else [])
    lease = args.lease or (config.lease if config else 300)
    if not (skills or args.discover or args.call):
        raise UsageError("give --skill (serve), --discover or --call")

    async def main() -> int:
        import signal
        async with agent:
            if args.discover:
                for f in await agent.discover(skills=args.discover):
                    print(f"{f.score:6d}  {f.agent_uri}  {f.agent_id.hex()}  "
                          f"{','.join(s.id for s in f.record.skills)}")
            if args.call:
                to: bytes | DiscoveryQuery = (
                    target_id(args.call) if len(args.call) == 32
                    and all(c in "0123456789abcdefABCDEF" for c in args.call)
                    else DiscoveryQuery(skills=(args.call,)))
                print((await agent.call(to, args.payload.encode())).decode(errors="replace"))
            if skills:
                prefix: bytes = args.reply.encode()

                def answer(payload: bytes, request: Request) -> bytes:
                    return prefix + payload
                agent.serve(answer)
                granted = await agent.register(skills=skills, lease=lease)
                print(f"registered {agent.uri} ({agent.agent_id.hex()}), lease {granted} s",
                      flush=True)
                stop = asyncio.Event()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    asyncio.get_running_loop().add_signal_handler(sig, stop.set)
                waits = [asyncio.ensure_future(agent.wait_closed()),
                         asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        return EXIT_OK

    try:
        return loop.run(main())
    except (AgentError, TransportError, OSError) as exc:
        import sys
        print(f"dmsc agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
