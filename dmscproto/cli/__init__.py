"""The ``dmsc`` command line.

Every public module of this package (name not starting with ``_``) is a subcommand and
is found automatically; adding one needs no edit here.  A subcommand module provides::

    def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
        return subparsers.add_parser("name", help="one line", description="...")

    def run(args: argparse.Namespace) -> int: ...

Conventions: keep module-level imports light (import transports, the gateway, etc.
inside ``run``) so ``dmsc --help`` and ``dmsc decode`` start fast; raise
:class:`UsageError` for input the user can fix (exit status 2); return
:data:`EXIT_OK` or :data:`EXIT_FAILURE`.  Logging goes to stderr at WARNING, INFO
with ``-v`` and DEBUG with ``-vv`` (before or after the subcommand).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

#: Exit statuses shared by all subcommands.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: The type ``add_parser`` receives (``argparse``'s private subparsers action).
if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time (pdoc evaluates the annotations)
    Subparsers = argparse._SubParsersAction


class UsageError(Exception):
    """Arguments or input the user can fix; ``main`` prints it and exits with status 2."""


class Subcommand(Protocol):
    """What a subcommand module provides."""

    def add_parser(self, subparsers: Subparsers) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace) -> int: ...


def subcommands() -> list[Subcommand]:
    """The subcommand modules of this package, in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not (callable(getattr(module, "add_parser", None))
                and callable(getattr(module, "run", None))):
            raise TypeError(f"{module.__name__} lacks add_parser() or run()")
        found.append(cast(Subcommand, module))
    return found


def _version() -> str:
    try:
        return version("dmscproto")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``dmsc`` parser with every subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="dmsc",
        description="DMSC reference implementation: agents, gateways, authorities, tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr (-v: info, -vv: debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in subcommands():
        sub = command.add_parser(subparsers)
        sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                         help="log more to stderr (-v: info, -vv: debug)")
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dmsc`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run = cast(Callable[[argparse.Namespace], int], args._run)
    try:
        return run(args)
    except UsageError as exc:
        print(f"dmsc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `dmsc decode ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
