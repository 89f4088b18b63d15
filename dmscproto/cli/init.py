"""``dmsc init DIR``: a working single-domain setup in a new directory (authority,
gateway certificate and configuration, two agent identities, the SDK examples); see
:mod:`dmscproto.quickstart`."""

from __future__ import annotations

import argparse

from . import EXIT_OK, Subparsers, UsageError


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "init", help="write a working single-domain setup into a new directory",
        description="Create DIR (absent or empty) holding a domain authority (DIR/ca), a "
                    "gateway certificate and gateway.toml, two agents with distinct "
                    "identities (hello.toml serving 'greet', client.toml) and the SDK "
                    "examples hello_agent.py and call_agent.py.  Everything in DIR refers "
                    "to DIR only, so the commands printed work from there.")
    p.add_argument("dir", metavar="DIR", help="the directory to create")
    p.add_argument("--domain", default="a.example",
                   help="the domain's name (default a.example)")
    p.add_argument("--listen", default="127.0.0.1:4433", metavar="HOST:PORT",
                   help="where the gateway listens and the agents find it "
                        "(default 127.0.0.1:4433)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..quickstart import write

    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT, not {args.listen!r}")
    try:
        files = write(args.dir, domain=args.domain, host=host, port=int(port))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.dir}: authority of {args.domain} in ca/, "
          + ", ".join(f.name for f in files))
    print(f"next:\n  cd {args.dir}\n  dmsc gateway --config gateway.toml &\n"
          "  dmsc agent --config hello.toml &\n"
          "  dmsc agent --config client.toml --call greet --payload bob")
    return EXIT_OK
