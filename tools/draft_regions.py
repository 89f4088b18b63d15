"""The generated regions of a draft, shared by tools/gen_draft.py,
tools/gen_state_diagrams.py and tools/gen_checklist.py, and the markdown table they
are mostly made of (:func:`table`).

A region is the text between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->``; a generator tool rewrites each from the code, and its
``--check`` exits 1 naming the stale ones.  A region the tool knows but the draft lacks,
one it does not know, or one that appears twice is an error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

REGION = re.compile(
    r"(?P<begin><!-- BEGIN GENERATED: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- END GENERATED: (?P=name) -->)", re.S)


def table(head: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> str:
    """A markdown table with its kramdown title, columns padded, ending in a newline."""
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(x.ljust(w) for x, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows), f'{{: title="{title}"}}']) + "\n"


def regenerate(text: str, generators: Mapping[str, Callable[[], str]], *,
               foreign: Collection[str] = (), region: re.Pattern[str] = REGION
               ) -> tuple[str, list[str]]:
    """Return ``text`` with every region rewritten by its generator, and the stale region
    names.  Regions named in ``foreign`` belong to another tool and are left as they are.
    ``region`` matches a region (default: the draft's HTML comments; groups ``begin``,
    ``name``, ``body``, ``end``).  Raises ``ValueError`` for unknown, missing or repeated
    regions."""
    found = [m["name"] for m in region.finditer(text)]
    unknown = sorted(set(found) - set(generators) - set(foreign))
    missing = sorted(set(generators) - set(found))
    twice = sorted({n for n in found if found.count(n) > 1})
    if unknown or missing or twice:
        raise ValueError(f"generated regions: unknown {unknown}, missing {missing}, "
                         f"repeated {twice}")
    stale: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m["name"] not in generators:
            return m[0]
        # blank lines around the body keep kramdown from gluing it to the markers
        body = "\n" + generators[m["name"]]() + "\n"
        if body != m["body"]:
            stale.append(m["name"])
        return m["begin"] + body + m["end"]

    return region.sub(sub, text), stale


def main(argv: list[str] | None, *, description: str, draft: Path, tool: str,
         regenerate: Callable[[str], tuple[str, list[str]]]) -> int:
    """The command line of a generator tool: rewrite ``draft``, or ``--check`` it."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the draft is out of date instead of rewriting it")
    ap.add_argument("--draft", type=Path, default=draft, help="draft to process")
    args = ap.parse_args(argv)
    text = args.draft.read_text(encoding="utf-8")
    try:
        new, stale = regenerate(text)
    except ValueError as exc:
        print(f"{args.draft}: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if stale:
            print(f"{args.draft}: out of date: {', '.join(stale)}; run python {tool}",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.draft.write_text(new, encoding="utf-8")
        print(f"{args.draft}: regenerated {', '.join(stale)}")
    return 0
