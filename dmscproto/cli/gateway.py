"""``dmsc gateway --config FILE.toml``: run an Agent Gateway (Sections 5, 6 and 9).

The file's format is :mod:`dmscproto.host.config`.  SIGTERM or SIGINT stop the gateway
cleanly (peers are sent NOTIFY CEASE, connections closed, the registry closed; every
acknowledged registration is already committed).  A configuration that cannot be used
is reported with the key at fault and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gateway", help="run an Agent Gateway from a TOML configuration",
        description="Run an Agent Gateway: registry, discovery, routing and peering over "
                    "QUIC, configured by a TOML file (see dmscproto/host/config.py and "
                    "examples/gateway-a.toml).  Stops cleanly on SIGTERM or SIGINT.")
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the gateway's TOML configuration")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="log format (overrides [log] format): json = one object per line")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="event loop (default asyncio; see dmscproto/runtime/loop.py)")
    p.add_argument("--loop-probe", action="store_true",
                   help="measure the event loop's longest stall and log it at stop "
                        "(loop_stall_ms_max; costs about 1000 wake-ups a second)")
    p.add_argument("--check", action="store_true",
                   help="check the configuration (files, keys, anchors) and exit")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio
    import errno
    import logging
    import signal
    import sqlite3
    import sys

    from ..errors import DmscError
    from ..host import logs
    from ..host.config import ConfigError, GatewayConfig
    from ..runtime import loop
    from ..runtime.gateway import GatewayRuntime

    try:
        config = GatewayConfig.load(args.config)
        fmt = args.log_format or config.log_format
        level = "debug" if args.verbose > 1 else config.log_level
        logs.setup(fmt, level)
        gateway = GatewayRuntime(config, tune_gc=True,  # this process is the gateway
                                 loop_probe=args.loop_probe)
    except (ConfigError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    for warning in config.warnings():
        if args.check:
            print(f"{args.config}: warning: {warning}")
        else:
            logging.getLogger("dmscproto.cli.gateway").warning("%s: %s", args.config, warning)
    if args.check:
        print(f"{args.config}: OK ({gateway.identity.uri}, {len(config.peers)} peer(s))")
        return EXIT_OK

    async def main() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await gateway.start()
            await stop.wait()
        finally:
            await gateway.stop()

    try:
        loop.run(main(), args.loop)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            where = ", ".join(f"{h}:{p} ({t})" for t, (h, p) in config.listeners)
            print(f"dmsc gateway: cannot listen on {where}: address already in use "
                  "(another gateway? change [gateway] listen)", file=sys.stderr)
        else:
            print(f"dmsc gateway: cannot run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (DmscError, sqlite3.Error) as exc:  # StoreError, MissingExtra, ...
        print(f"dmsc gateway: cannot run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
