"""``dmsc demo``: the whole protocol suite in one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import Subparsers, UsageError


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="two domains, two gateways, four agents on loopback over QUIC",
        description="Create two domains (authorities, certificates), start a gateway per "
                    "domain and four agents on 127.0.0.1 over QUIC, then register, peer, "
                    "sync, discover across the domains and route calls, printing each "
                    "step.  Nothing is left behind; exit status 0 only if every step "
                    "succeeded.")
    p.add_argument("--capture", type=Path, metavar="DIR",
                   help="write every datagram to DIR/dmsc-demo.pcap and the TLS secrets to "
                        "DIR/keys.log, and print the tshark command that decrypts them")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="copy the generated certificates, configurations and stores to DIR")
    p.add_argument("--quiet", action="store_true", help="steps only, not every message")
    p.add_argument("--transport", choices=["quic", "dtls", "udp"], default="quic",
                   help="the agents' transport: QUIC (default, Section 9.1) or DTLS 1.2 "
                        "(Section 9.2; the gateways then listen on both and peer over "
                        "QUIC); udp is LAB MODE (Section 9.4): everything over cleartext "
                        "UDP, no confidentiality, no peer authentication beyond record "
                        "signatures, no access tokens, for readable captures only")
    p.add_argument("--loss", type=float, default=0.0, metavar="P",
                   help="run every path through an impairment relay that loses this "
                        "fraction of datagrams (0-0.5) and duplicates and reorders 5%%")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the relays' random draws (default 1)")
    p.add_argument("--a2a", action="store_true",
                   help="also bridge A2A (draft-dmsc-a2a-00): an A2A client calling weather "
                        "through a bridge and both gateways, an A2A agent imported into "
                        "b.example and called by client (needs dmscproto[a2a])")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio

    if not 0.0 <= args.loss <= 0.5:
        raise UsageError("--loss must be between 0 and 0.5")
    from ..sandbox.demo import Extension, run_demo

    extension: Extension | None = None
    if args.a2a:
        if args.transport == "udp":
            raise UsageError("--a2a needs access tokens: not with --transport udp")
        from ..errors import require_extra

        require_extra("a2a.types", "a2a", "dmsc demo --a2a", "a2a-sdk")
        from ..a2a.demo import a2a_steps
        extension = a2a_steps
    return asyncio.run(run_demo(sys.stdout, capture=args.capture, keep=args.keep,
                                quiet=args.quiet, transport=args.transport,
                                loss=args.loss, seed=args.seed, extension=extension))
