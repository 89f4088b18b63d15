"""The federation as one gateway sees it, as a Graphviz DOT graph (``dmsc status
--gateway ... --topology FILE``).

Drawn from the RFC 7951 state document alone: the gateway itself, its peers (one edge
each, solid and labelled with the records accepted when ESTABLISHED, dashed with the
state otherwise) and the gateways the learned records' paths cross, down to each
record's originating gateway (edges along the paths).  Gateways are grouped in one
cluster per domain (a path's gateways other than its origin are of unknown domain) and
show how many of the records held originate there.  Edges point from this gateway
towards the records' origins, the way calls are routed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

#: Edge colours by session state.
_COLOURS = {"established": "darkgreen", "idle": "red"}


def _quote(*lines: str) -> str:
    """A DOT string of one or more lines."""
    return '"' + "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"')
                             for t in lines) + '"'


def _short(gateway_id: str) -> str:
    return gateway_id.replace(":", "")[:8]


def _domain_of(uri: str) -> str:
    return uri.removeprefix("dmsc://").split("/", 1)[0]


def dot(document: dict[str, Any]) -> str:
    """The DOT text of a ``{"ietf-dmsc:dmsc": ...}`` document."""
    top = document["ietf-dmsc:dmsc"]
    gw = top["gateway"]
    me = gw["gateway-id"]
    records = top.get("records", {}).get("record", [])
    domain_of: dict[str, str] = {me: gw["domain"]}
    label: dict[str, str] = {me: gw.get("name", me)}
    peers = top.get("peers", {}).get("peer", [])
    for p in peers:
        pid = p.get("gateway-id", f"peer:{p['name']}")
        domain_of[pid] = p["domain"]
        label.setdefault(pid, p["name"])
    originated: Counter[str] = Counter()
    edges: dict[tuple[str, str], tuple[str, str]] = {}
    for r in records:
        if r["origin"] == "local":
            originated[me] += 1
            continue
        best = next((x for x in r.get("route", []) if x.get("best")), None)
        if best is None or not best.get("path"):
            continue
        path = best["path"]
        originated[path[0]] += 1
        domain_of.setdefault(path[0], _domain_of(r["uri"]))
        hops = [me, *(g for g in reversed(path) if g != me)]  # towards the origin
        for a, b in pairwise(hops):
            edges.setdefault((a, b), ("gray40", ""))
    for p in peers:
        pid = p.get("gateway-id", f"peer:{p['name']}")
        state = p.get("session-state", "idle")
        accepted = p.get("statistics", {}).get("records-accepted", "0")
        text = f"{accepted} records" if state == "established" else state
        edges[(me, pid)] = (_COLOURS.get(state, "orange"), text)
    nodes = set(domain_of) | {n for e in edges for n in e}
    lines = ["digraph federation {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor=white, '
             'fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];']
    by_domain: dict[str, list[str]] = {}
    for n in sorted(nodes):
        by_domain.setdefault(domain_of.get(n, "?"), []).append(n)
    for i, (domain, members) in enumerate(sorted(by_domain.items())):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_quote(domain if domain != '?' else 'domain unknown')};")
        for n in members:
            text = [label.get(n, _short(n))]
            if n in label and not n.startswith("peer:"):  # its Gateway ID after the name
                text.append(_short(n))
            if originated[n]:
                text.append(f"records: {originated[n]}")
            extra = ", fillcolor=lightblue, penwidth=2" if n == me else ""
            lines.append(f"    {_quote(n)} [label={_quote(*text)}{extra}];")
        lines.append("  }")
    for (a, b), (colour, text) in sorted(edges.items()):
        style = "solid" if colour in ("darkgreen", "gray40") else "dashed"
        lines.append(f"  {_quote(a)} -> {_quote(b)} [color={colour}, style={style}"
                     + (f", label={_quote(text)}" if text else "") + "];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(document: dict[str, Any], path: Path) -> list[Path]:
    """Write ``path`` (DOT) and, when Graphviz's ``dot`` is installed, the SVG beside it
    (``path`` with the suffix ``.svg``); returns the files written."""
    path.write_text(dot(document), encoding="utf-8")
    written = [path]
    tool = shutil.which("dot")
    if tool is not None:
        svg = path.with_suffix(".svg")
        subprocess.run([tool, "-Tsvg", "-o", str(svg), str(path)], check=True, timeout=60)
        written.append(svg)
    return written
