"""Render the drafts as a spec author submits them: kramdown-rfc to RFCXML, then xml2rfc
to text and HTML.

    python tools/render_drafts.py [--out DIR] [DRAFT.md ...]   # default: every draft

writes ``DIR/<docname>.xml``, ``.txt`` and ``.html`` (default ``DIR``: ``build/drafts``)
and exits 1 if either tool reports an error or a warning, printing it.  Nothing is
fetched: kramdown-rfc runs offline (``KRAMDOWN_OFFLINE=1``) with its reference cache in
``drafts/refcache/`` (one ``reference.RFC.NNNN.xml`` or ``reference.I-D.NAME.xml`` per
cited document, in the bibxml format kramdown-rfc itself caches), and xml2rfc with
``--no-network``.  A draft citing a document the cache lacks fails with the file to add.
Needs the Debian package ruby-kramdown-rfc2629 and xml2rfc from PyPI (the test extra).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRAFTS = ROOT / "drafts"
REFCACHE = DRAFTS / "refcache"
OUT = ROOT / "build" / "drafts"
#: Dates are pinned so renders are reproducible and never warn about an expired draft.
DATE = "2026-12-01"
_MISSING = re.compile(r"KRAMDOWN_OFFLINE: Inserting broken reference for (\S+)")
_CELL = re.compile(r"(<(?:c|td|th)\b[^>]*>)(.*?)(</(?:c|td|th)>)", re.S)
_VERBATIM = re.compile(r"(<(?:tt|spanx style=\"verb\")>)(.*?)(</(?:tt|spanx)>)", re.S)
_BREAK = re.compile(r"(?<=[_/-])(?=\w)|(?<=::)|(?<=\w)(?=\[)")


def breakable_cells(xml: str) -> str:
    """``xml`` with a zero-width space (a break opportunity for xml2rfc, invisible in
    HTML) after each ``_``, ``/``, ``-`` and ``::``, and before ``[``, in the code spans
    of table cells, so that test names and paths wrap instead of widening a table
    beyond 72 columns."""
    def code(m: re.Match[str]) -> str:
        return m[1] + _BREAK.sub("\u200b", m[2]) + m[3]

    def cell(m: re.Match[str]) -> str:
        return m[1] + _VERBATIM.sub(code, m[2]) + m[3]
    return _CELL.sub(cell, xml)


def _kramdown() -> str:
    tool = shutil.which("kramdown-rfc") or shutil.which("kramdown-rfc2629")
    if tool is None:
        raise FileNotFoundError("kramdown-rfc not found (Debian: ruby-kramdown-rfc2629)")
    return tool


def render(draft: Path, out: Path) -> list[str]:
    """Render ``draft`` into ``out``; the problems reported (empty: clean)."""
    problems: list[str] = []
    name = draft.stem
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # kramdown-rfc may write into its cache; give it a copy, keep drafts/ clean
        cache = Path(tmp) / "refcache"
        shutil.copytree(REFCACHE, cache)
        env = {**os.environ, "KRAMDOWN_OFFLINE": "1", "KRAMDOWN_REFCACHEDIR": str(cache)}
        done = subprocess.run([_kramdown(), str(draft)], capture_output=True, text=True,
                              env=env, timeout=120, cwd=tmp)
    missing = sorted(set(_MISSING.findall(done.stderr)))
    for ref in missing:
        problems.append(f"{draft.name}: {ref} is not in {REFCACHE.relative_to(ROOT)}/: add "
                        "it (the bibxml entry of the cited document)")
    if not missing:
        problems += [f"{draft.name}: kramdown-rfc: {line}" for line in
                     done.stderr.splitlines() if line.strip()]
    if done.returncode != 0:
        problems.append(f"{draft.name}: kramdown-rfc exited {done.returncode}")
    if problems:  # xml2rfc would only repeat them
        return problems
    xml = out / f"{name}.xml"
    xml.write_text(breakable_cells(done.stdout), encoding="utf-8")
    rendered = subprocess.run(
        [sys.executable, "-c", "import sys; from xml2rfc.run import main; sys.exit(main())",
         "--no-network", "--skip-config-files",
         "--date", DATE, "--text", "--html", "--path", str(out), str(xml)],
        capture_output=True, text=True, timeout=300)
    problems += [f"{draft.name}: xml2rfc: {line}" for line in
                 (rendered.stdout + rendered.stderr).splitlines()
                 if line.strip() and not line.strip().startswith("Created file")]
    if rendered.returncode != 0:
        problems.append(f"{draft.name}: xml2rfc exited {rendered.returncode}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("drafts", nargs="*", type=Path, help="drafts (default: drafts/*.md)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    args = ap.parse_args(argv)
    drafts = args.drafts or sorted(DRAFTS.glob("draft-*.md"))
    problems = [p for d in drafts for p in render(d.resolve(), args.out)]
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        for d in drafts:
            print(f"{args.out / d.stem}.html")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
