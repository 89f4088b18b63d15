"""``dmsc a2a``: the A2A bridge (draft-dmsc-a2a-00), ``pip install 'dmscproto[a2a]'``.

``dmsc a2a serve --config FILE`` serves, for every agent the bridge's identity can see
and call, an A2A Agent Card and JSON-RPC endpoint, and a discovery endpoint, and
imports the ``[[a2a.import]]`` agents (:mod:`dmscproto.a2a.config`);
``dmsc a2a import CARD_URL --agent FILE`` imports one A2A agent under the identity of
the agent file.  Both run until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "a2a", help="bridge A2A agents and clients into DMSC (draft-dmsc-a2a-00)",
        description="Serve DMSC agents to A2A clients (agent cards, JSON-RPC, discovery) "
                    "and import A2A agents as bridged DMSC records.")
    sub = p.add_subparsers(dest="a2a_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser("serve", help="run a bridge from its TOML file",
                           description="Run the [a2a] table of FILE: serve on a2a.listen, "
                                       "import every [[a2a.import]].")
    serve.add_argument("--config", type=Path, required=True, metavar="FILE")
    imp = sub.add_parser("import", help="import one A2A agent",
                         description="Resolve CARD_URL, verify its signature when it has "
                                     "one, register its bridged record under the identity "
                                     "of the agent file and forward its calls.")
    imp.add_argument("card", metavar="CARD_URL", help="the agent card's URL")
    imp.add_argument("--agent", type=Path, required=True, metavar="FILE",
                     help="the proxy's identity: an agent TOML file (dmsc agent --config)")
    imp.add_argument("--jwks", metavar="FILE|URL",
                     help="the JWK Set of the card's signers (default: each signature's jku)")
    imp.add_argument("--require-signature", action="store_true",
                     help="refuse a card without a signature")
    imp.add_argument("--refresh", type=float, default=30.0, metavar="SECONDS",
                     help="fetch the card again every SECONDS (default 30)")
    imp.add_argument("--token", type=Path, metavar="FILE",
                     help="a bearer token the A2A agent requires (its card's "
                          "securitySchemes say where to get one)")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..errors import DmscError, require_extra

    require_extra("a2a.types", "a2a", "dmsc a2a", "a2a-sdk")
    from ..a2a.config import BridgeConfig, ImportSpec
    from ..a2a.service import Service
    from ..host.config import ConfigError

    if args.a2a_command == "serve":
        try:
            config = BridgeConfig.load(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    else:
        if args.refresh <= 0:
            raise UsageError("--refresh must be positive")
        config = BridgeConfig(None, None, imports=(ImportSpec(
            args.card, args.agent, args.jwks, args.require_signature, args.refresh,
            args.token),))

    async def main() -> None:
        service = Service(config, say=lambda line: print(line, flush=True))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await service.start()
        try:
            await stop.wait()
        finally:
            await service.close()

    try:
        asyncio.run(main())
    except DmscError as exc:
        print(f"dmsc a2a {args.a2a_command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
