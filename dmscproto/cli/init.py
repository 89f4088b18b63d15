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
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where the gateway listens and the agents find it (default: "
                        "127.0.0.1 and a UDP port free now, written into the files)")
    return p


def run(args: argparse.Namespace) -> int:
    import socket

    from ..quickstart import write

    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT, not {args.listen!r}")
    number = int(port)
    if number == 0:  # a port free now, so that two setups on one machine do not clash
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((host, 0))
                number = probe.getsockname()[1]
        except OSError as exc:
            raise UsageError(f"--listen {args.listen}: {exc.strerror}") from None
    try:
        files = write(args.dir, domain=args.domain, host=host, port=number)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.dir}: authority of {args.domain} in ca/, "
          + ", ".join(f.name for f in files) + f"; the gateway listens on {host}:{number}")
    print(f"next:\n  cd {args.dir}\n  dmsc gateway --config gateway.toml &\n"
          "  dmsc agent --config hello.toml &\n"
          "  dmsc agent --config client.toml --call greet --payload bob")
    return EXIT_OK
