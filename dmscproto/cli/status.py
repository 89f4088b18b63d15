"""``dmsc status``: what a gateway holds and does.

``--gateway HOST:PORT`` asks a running gateway's management listener (draft-dmsc-yang-00,
Section 5) with an operator certificate (``--cert``, ``--key``; ``--ca``, the domain
authority's certificate): its peers with session state, uptime and counters, its agents,
its learned routes and its refusals, like ``birdc show protocols``; ``--json`` prints
the RFC 7951 document, ``--watch`` refreshes it, ``--topology FILE`` writes the peer
graph as Graphviz DOT (and SVG beside it when ``dot`` is installed).

``--config FILE`` reads the registry file named by the gateway's configuration offline
(SQLite in WAL mode can be read while the gateway runs): every local registration with
its lease, every record learned from peers with its path and next hop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status", help="a gateway's peers, agents, routes and counters",
        description="Show a running gateway's live state through its management "
                    "listener (--gateway, with an operator certificate), or the records "
                    "in the registry file of a gateway configuration (--config).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, metavar="FILE",
                       help="the gateway's TOML configuration (reads its registry offline)")
    where.add_argument("--gateway", metavar="HOST:PORT",
                       help="the gateway's management listener ([management] listen)")
    p.add_argument("--cert", type=Path, metavar="PEM",
                   help="operator certificate (dmsc authority issue DIR NAME --kind operator)")
    p.add_argument("--key", type=Path, metavar="PEM", help="its private key")
    p.add_argument("--ca", type=Path, metavar="PEM", help="the domain authority's certificate")
    p.add_argument("--json", action="store_true",
                   help="with --gateway: the RFC 7951 document; with --config: one JSON "
                        "object per record")
    p.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                   help="with --gateway: refresh every SECONDS (default 2) until Ctrl-C")
    p.add_argument("--topology", type=Path, metavar="FILE",
                   help="with --gateway: write the peer graph as Graphviz DOT to FILE (and "
                        "FILE.svg when Graphviz is installed)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.gateway is not None:
        return _live(args)
    if args.watch is not None or args.topology is not None:
        raise UsageError("--watch and --topology need --gateway")
    return _offline(args)


# --- a running gateway ------------------------------------------------------------------
def _live(args: argparse.Namespace) -> int:
    import json

    from ..management.client import ManagementError, Operator
    from ..management.topology import write

    host, sep, port = str(args.gateway).rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--gateway must be HOST:PORT, not {args.gateway!r}")
    missing = [f"--{n}" for n in ("cert", "key", "ca") if getattr(args, n) is None]
    if missing:
        raise UsageError(f"--gateway needs {', '.join(missing)} (an operator certificate)")
    for path in (args.cert, args.key, args.ca):
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    operator = Operator(args.cert, args.key, args.ca)
    while True:
        try:
            document = operator.state(host.strip("[]"), int(port))
        except ManagementError as exc:
            print(f"dmsc status: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if args.topology is not None:
            for path in write(document, args.topology):
                print(f"wrote {path}")
        if args.watch is not None:
            print("\033[H\033[J", end="")  # clear the terminal
        print(json.dumps(document, indent=2) if args.json else render(document), flush=True)
        if args.watch is None:
            return EXIT_OK
        time.sleep(args.watch)


def _ago(stamp: str | None, now: float) -> str:
    if stamp is None:
        return "-"
    seconds = int(now - dt.datetime.fromisoformat(stamp).timestamp())
    return str(dt.timedelta(seconds=max(0, seconds)))


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def render(document: dict[str, Any], now: float | None = None) -> str:
    """The state document as text: the gateway, then tables of peers, agents, learned
    records and refusals."""
    now = time.time() if now is None else now
    top = document["ietf-dmsc:dmsc"]
    gw = top["gateway"]
    listeners = ", ".join(f"{x['transport']} {x['address']}:{x.get('bound-port', x['port'])}"
                          for x in gw.get("listener", []))
    out = [f"gateway {gw.get('name', '?')} of {gw['domain']}  id {gw['gateway-id']}",
           f"  listening: {listeners}"]
    peers = top.get("peers", {}).get("peer", [])
    names = {p["gateway-id"]: p["name"] for p in peers if "gateway-id" in p}
    rows = [["Name", "Domain", "State", "Uptime", "Hold", "PDUs in/out", "Records rcv/acc/ref",
             "Last error"]]
    for p in peers:
        st = p.get("statistics", {})
        pdus_in = sum(int(m["in"]) for m in st.get("message", []))
        pdus_out = sum(int(m["out"]) for m in st.get("message", []))
        err = p.get("last-error")
        rows.append([p["name"], p["domain"], p.get("session-state", "idle"),
                     _ago(p.get("established-time"), now),
                     str(p.get("negotiated-hold-time", "-")), f"{pdus_in}/{pdus_out}",
                     f"{st.get('records-received', 0)}/{st.get('records-accepted', 0)}/"
                     f"{st.get('records-refused', 0)}",
                     f"{err['code']} ({err['direction']})" if err else "-"])
    out += ["", f"Peers ({len(peers)})", *_table(rows)]
    records = top.get("records", {}).get("record", [])
    local = [r for r in records if r["origin"] == "local"]
    rows = [["Agent", "Agent ID", "Version", "Lease left", "Connected"]]
    for r in local:
        left = dt.datetime.fromisoformat(r["lease-expires"]).timestamp() - now
        rows.append([r["uri"], r["agent-id"].replace(":", ""), r["version"],
                     f"{max(0, int(left))} s", "yes" if r.get("connected") else "no"])
    out += ["", f"Agents registered here ({len(local)})", *_table(rows)]
    learned = [r for r in records if r["origin"] == "learned"]
    rows = [["Record", "Agent ID", "Via", "Path", "Routes"]]
    for r in learned:
        routes = r.get("route", [])
        best = next((x for x in routes if x.get("best")), None)
        via = names.get(best["peer-gateway-id"], best["peer-gateway-id"]) if best else "-"
        rows.append([r["uri"], r["agent-id"].replace(":", ""), via,
                     str(len(best["path"])) if best else "-", str(len(routes))])
    out += ["", f"Routes learned ({len(learned)})", *_table(rows)]
    refusals = top.get("statistics", {}).get("refusal", [])
    rows = [["Error", "Sent", "Received"]]
    rows += [[str(x["code"]), x.get("sent", "0"), x.get("received", "0")] for x in refusals]
    out += ["", f"Errors and refusals ({len(refusals)} codes)", *_table(rows)]
    return "\n".join(out)


# --- the registry file, offline -----------------------------------------------------------
def _offline(args: argparse.Namespace) -> int:
    import json

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
