"""The results of a run: ``results.json``, ``matrix.md`` and ``index.html`` (a table per
transport, a row per case, a column per pair of implementations, each cell linking to
the case's logs, as the QUIC interop runner's page does)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cases import Case
from .manifest import Implementation
from .runner import FAILED, PASSED, UNSUPPORTED, Result

SYMBOL = {PASSED: "✓", FAILED: "✗", UNSUPPORTED: "?"}
COLOUR = {PASSED: "#2e7d32", FAILED: "#c62828", UNSUPPORTED: "#9e9e9e"}


def summary(results: Sequence[Result]) -> dict[str, int]:
    """The counts the summary line gives."""
    return {"cases": len({r.case for r in results}),
            "pairs": len({r.pair for r in results}),
            "runs": len(results),
            PASSED: sum(r.status == PASSED for r in results),
            FAILED: sum(r.status == FAILED for r in results),
            UNSUPPORTED: sum(r.status == UNSUPPORTED for r in results)}


def summary_line(results: Sequence[Result]) -> str:
    s = summary(results)
    return (f"{s['cases']} cases, {s['pairs']} pairs, {s['runs']} runs: {s[PASSED]} passed, "
            f"{s[FAILED]} failed, {s[UNSUPPORTED]} unsupported")


def _grid(results: Sequence[Result]) -> dict[str, dict[str, dict[tuple[str, str], Result]]]:
    """transport -> case -> pair -> result."""
    grid: dict[str, dict[str, dict[tuple[str, str], Result]]] = {}
    for r in results:
        grid.setdefault(r.transport, {}).setdefault(r.case, {})[r.pair] = r
    return grid


def _pairs(results: Sequence[Result]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(r.pair for r in results))


def _heading(transport: str) -> str:
    return "codec (decoder role)" if transport == "-" else transport.upper()


def markdown(results: Sequence[Result], cases: Sequence[Case]) -> str:
    pairs = _pairs(results)
    described = {c.name: c.description for c in cases}
    out = ["# DMSC interop matrix", "", summary_line(results), "",
           "Columns are pairs: agent x gateway (peering cases: gateway x peer-gateway). "
           "✓ passed, ✗ failed, ? unsupported; each cell links to the case's logs.", ""]
    for transport, rows in _grid(results).items():
        out += [f"## {_heading(transport)}", "",
                "| case | " + " | ".join(f"{a} x {b}" for a, b in pairs) + " |",
                "|---|" + "---|" * len(pairs)]
        for case, cells in rows.items():
            line = [f"[{SYMBOL[r.status]}]({r.logs}/)" if (r := cells.get(p)) else ""
                    for p in pairs]
            out.append(f"| {case} | " + " | ".join(line) + " |")
        out.append("")
    failed = [r for r in results if r.status == FAILED]
    if failed:
        out += ["## Failures", ""]
        out += [f"- {r.case} ({r.transport}, {r.pair[0]} x {r.pair[1]}): {r.reason}"
                for r in failed]
        out.append("")
    out += ["## Cases", ""] + [f"- **{n}**: {d}" for n, d in described.items()
                               if any(r.case == n for r in results)]
    return "\n".join(out) + "\n"


def page(results: Sequence[Result], started: str) -> str:
    """A self-contained HTML page of the matrix."""
    pairs = _pairs(results)
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>DMSC interop"
             "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
             "collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 10px;"
             "text-align:center}td.case{text-align:left}a{color:white;text-decoration:none;"
             "display:block}</style></head><body>",
             f"<h1>DMSC interop matrix</h1><p>{e(started)}: {e(summary_line(results))}</p>"]
    for transport, rows in _grid(results).items():
        parts.append(f"<h2>{e(_heading(transport))}</h2><table><tr><th>case</th>"
                     + "".join(f"<th>{e(a)}<br>&times;<br>{e(b)}</th>" for a, b in pairs)
                     + "</tr>")
        for case, cells in rows.items():
            parts.append(f"<tr><td class='case'>{e(case)}</td>")
            for p in pairs:
                r = cells.get(p)
                if r is None:
                    parts.append("<td></td>")
                    continue
                parts.append(f"<td style='background:{COLOUR[r.status]}' title='{e(r.reason)}'>"
                             f"<a href='{e(r.logs)}/'>{SYMBOL[r.status]} "
                             f"{r.duration:.1f}s</a></td>")
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(output: Path, results: Sequence[Result], cases: Sequence[Case],
          impls: Sequence[Implementation], started: str, finished: str) -> None:
    data: dict[str, Any] = {
        "started": started, "finished": finished,
        "implementations": {i.name: {"roles": sorted(i.roles), "transports": list(i.transports),
                                     "url": i.url} for i in impls},
        "cases": {c.name: c.description for c in cases},
        "summary": summary(results),
        "results": [r.as_dict() for r in results],
    }
    (output / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (output / "matrix.md").write_text(markdown(results, cases), encoding="utf-8")
    (output / "index.html").write_text(page(results, started), encoding="utf-8")
