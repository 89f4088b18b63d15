"""``dmsc status --config FILE``: what a gateway's registry holds.

Reads the registry file named by the gateway's configuration (SQLite in WAL mode can be
read while the gateway runs): every local registration with its lease, every record
learned from peers with its path and next hop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import EXIT_OK, Subparsers, UsageError


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status", help="the records a gateway's registry holds",
        description="Show the registrations and learned records in the registry file of "
                    "a gateway configuration.")
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the gateway's TOML configuration")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    return p


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from ..gateway.store import RegistryStore, StoreError
    from ..host.config import ConfigError, GatewayConfig

    try:
        config = GatewayConfig.load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not config.store.is_file():
        raise UsageError(f"{config.store}: no registry yet (the gateway has not run)")
    try:
        store = RegistryStore(config.store)
    except (StoreError, OSError) as exc:
        raise UsageError(str(exc)) from None
    now = time.time()
    with store:
        entries = sorted(store.all(), key=lambda e: (e.origin is not None,
                                                     e.signed.record.agent_uri))
    for e in entries:
        rec = e.signed.record
        local = e.origin is None
        skills = ",".join(s.id for s in rec.skills)
        lease_left = round(e.expires_at - now, 1) if local else None
        item = {"agent_uri": rec.agent_uri, "agent_id": e.agent_id.hex(),
                "version": e.version, "skills": [s.id for s in rec.skills],
                "local": local, "lease_left_s": lease_left,
                "path": [g.hex() for g in e.path],
                "next_hop": e.next_hop.hex() if e.next_hop else None}
        if args.json:
            print(json.dumps(item))
        elif local:
            print(f"local    {rec.agent_uri:40} {e.agent_id.hex()}  "
                  f"lease {lease_left} s  skills {skills}")
        else:
            print(f"learned  {rec.agent_uri:40} {e.agent_id.hex()}  "
                  f"via {item['next_hop']}  path {len(e.path)} gateway(s)  skills {skills}")
    if not args.json:
        local_n = sum(e.origin is None for e in entries)
        print(f"{config.domain}: {local_n} registered here, {len(entries) - local_n} learned")
    return EXIT_OK
