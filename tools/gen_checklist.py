"""Regenerate the conformance checklist of drafts/draft-dmsc-protocol-00.md.

Every sentence of the draft that states a requirement with MUST or MUST NOT (BCP 14)
is numbered in the appendix "Conformance Checklist", with the tests that cover it.
Which tests cover which sentence is written by hand in ``drafts/conformance.toml``, one
entry per sentence, matched by the sentence's exact text (whitespace collapsed)::

    [[requirement]]
    text = "A sender MUST send TLVs in ascending order of their 16-bit type code."
    tests = ["vector:tlv-order", "tests/test_codec_robustness.py::test_tlv_order"]

A test is a test node id (``tests/FILE.py::test_name``, parameters left out) or a
vector of Appendix A (``vector:NAME``).  ``python tools/gen_checklist.py`` rewrites the
checklist region; ``--check`` exits 1 if the region is stale, if a MUST sentence has no
entry, if an entry names no test or a test that does not exist, or if an entry matches
no sentence (edited or removed), and says exactly what to add, change or delete.
Requirements are sentences outside code blocks and generated regions; list items and
definition-list entries are sentences of their own.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
import draft_regions
import draft_vectors

ROOT = Path(__file__).resolve().parent.parent
DRAFT = ROOT / "drafts" / "draft-dmsc-protocol-00.md"
MAPPING = ROOT / "drafts" / "conformance.toml"
REGION = "conformance"
TOOL = "tools/gen_checklist.py"

_MUST = re.compile(r"\bMUST\b")
_HEADING = re.compile(r"^(#+)\s+(.*?)\s*(\{#[^}]*\})?\s*$")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_ITEM = re.compile(r"^\s*(?:[*+-]|\d+\.)\s+|^:\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"`])")
_TEST_ID = re.compile(r"^(tests/[\w/]+\.py)::(\w+)(?:::(\w+))?$")


@dataclass(frozen=True)
class Requirement:
    """One MUST sentence: where it is and what it says."""

    section: str
    line: int
    text: str


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the draft's body outside front matter, code blocks and
    generated regions; other lines become blank, so paragraphs stay apart."""
    lines = text.splitlines()
    out: list[tuple[int, str]] = []
    body = False
    fence: str | None = None
    generated = False
    for n, line in enumerate(lines, 1):
        keep = ""
        if line.strip() == "--- middle":
            body = True
        elif not body:
            pass
        elif fence is not None:
            if line.startswith(fence):
                fence = None
        elif m := _FENCE.match(line):
            fence = m.group(1)
        elif line.startswith("<!-- BEGIN GENERATED:"):
            generated = True
        elif line.startswith("<!-- END GENERATED:"):
            generated = False
        elif not generated and not line.startswith("{:") and not line.startswith("{::"):
            keep = line
        out.append((n, keep))
    return out


def requirements(text: str) -> list[Requirement]:
    """Every MUST sentence of the draft ``text``, in document order, with its section
    number as xml2rfc numbers it (middle: 1, 1.1, ...; back: A, A.1, ...)."""
    found: list[Requirement] = []
    counters: list[int] = []
    back = False
    numbered_off = False
    section = ""
    block: list[str] = []
    block_line = 0

    def flush() -> None:
        nonlocal block
        joined = " ".join(x.strip() for x in block).strip()
        for sentence in _SENTENCE_END.split(joined):
            if _MUST.search(sentence):
                found.append(Requirement(section, block_line, sentence.strip()))
        block = []

    lines = _prose_lines(text)
    raw = text.splitlines()
    for n, line in lines:
        if raw[n - 1].strip() == "--- back":
            flush()
            back, counters = True, []
            continue
        h = _HEADING.match(line)
        if h:
            flush()
            level = len(h.group(1))
            numbered_off = n < len(raw) and raw[n].strip() == '{:numbered="false"}'
            if numbered_off:
                section = h.group(2)
                continue
            counters = counters[:level] + [0] * (level - len(counters))
            counters[level - 1] += 1
            first = chr(ord("A") + counters[0] - 1) if back else str(counters[0])
            section = ".".join([first, *map(str, counters[1:level])])
            continue
        if not line.strip():
            flush()
            continue
        if _ITEM.match(line):
            flush()
        if not block:
            block_line = n
        block.append(_ITEM.sub("", line) if not block else line)
    flush()
    return found


@dataclass(frozen=True)
class Entry:
    text: str
    tests: tuple[str, ...]


def load_mapping(path: Path = MAPPING) -> list[Entry]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Entry(" ".join(str(e["text"]).split()), tuple(e.get("tests", ())))
            for e in data.get("requirement", [])]


def unknown_tests(tests: tuple[str, ...], vectors: set[str]) -> list[str]:
    """The references in ``tests`` that name no vector of the draft and no test."""
    bad = []
    for ref in tests:
        if ref.startswith("vector:"):
            if ref.removeprefix("vector:") not in vectors:
                bad.append(ref)
            continue
        m = _TEST_ID.match(ref)
        path = ROOT / m.group(1) if m else None
        if m is None or path is None or not path.is_file():
            bad.append(ref)
            continue
        name = m.group(3) or m.group(2)
        if not re.search(rf"^\s*(?:async\s+)?def {name}\(", path.read_text(encoding="utf-8"),
                         re.M):
            bad.append(ref)
    return bad


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def problems(text: str, mapping: list[Entry]) -> list[str]:
    """What is wrong with the mapping for ``text``, each with the fix (module doc)."""
    reqs = requirements(text)
    vectors = {name for name, _expect, _pdu in draft_vectors.vectors(text)}
    by_text = {e.text: e for e in mapping}
    wanted = {" ".join(r.text.split()) for r in reqs}
    out: list[str] = []
    for r in reqs:
        key = " ".join(r.text.split())
        entry = by_text.get(key)
        if entry is None or not entry.tests:
            out.append(
                f"Section {r.section} (draft line {r.line}) states a requirement no test "
                f"covers.  Add to {MAPPING.relative_to(ROOT)}, with the tests that check "
                f"it (test node ids 'tests/FILE.py::test_name' or Appendix A vectors "
                f"'vector:NAME'), then run python {TOOL}:\n\n"
                f"[[requirement]]\ntext = {_toml_string(key)}\ntests = [\"tests/...\"]\n")
            continue
        bad = unknown_tests(entry.tests, vectors)
        if bad:
            out.append(f"Section {r.section} (draft line {r.line}): {MAPPING.relative_to(ROOT)}"
                       f" names tests that do not exist: {', '.join(bad)} (a test node id "
                       "is tests/FILE.py::test_name, without parameters; a vector is "
                       f"vector:NAME of Appendix A).  Requirement: {key}")
    seen: set[str] = set()
    for e in mapping:
        if e.text in seen:
            out.append(f"{MAPPING.relative_to(ROOT)} lists this requirement twice; merge "
                       f"the entries: {e.text}")
        seen.add(e.text)
        if e.text not in wanted:
            out.append(f"{MAPPING.relative_to(ROOT)} has an entry that matches no MUST "
                       "sentence of the draft (edited or removed?): set its text to the "
                       f"sentence as it now reads, or delete it: {e.text}")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def checklist(text: str, mapping: list[Entry]) -> str:
    """The body of the checklist region: one numbered row per MUST sentence."""
    by_text = {e.text: e for e in mapping}
    rows = ["| #   | Section | Requirement | Covered by |",
            "|-----|---------|-------------|------------|"]
    for n, r in enumerate(requirements(text), 1):
        entry = by_text.get(" ".join(r.text.split()))
        tests = ", ".join(f"`{t}`" for t in entry.tests) if entry else "(none)"
        rows.append(f"| C{n} | {r.section} | {_cell(r.text)} | {_cell(tests)} |")
    rows.append('{: title="Conformance checklist"}')
    return "\n".join(rows)


def regenerate(text: str, mapping: list[Entry]) -> tuple[str, list[str]]:
    """``text`` with the checklist region rewritten, and ``[REGION]`` if it was stale."""
    others = {m["name"] for m in draft_regions.REGION.finditer(text)} - {REGION}
    return draft_regions.regenerate(text, {REGION: lambda: checklist(text, mapping)},
                                    foreign=others)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the checklist is stale or a MUST has no test")
    ap.add_argument("--draft", type=Path, default=DRAFT, help="draft to process")
    ap.add_argument("--mapping", type=Path, default=MAPPING, help="requirement -> tests")
    args = ap.parse_args(argv)
    text = args.draft.read_text(encoding="utf-8")
    mapping = load_mapping(args.mapping)
    try:
        new, stale = regenerate(text, mapping)
    except ValueError as exc:
        print(f"{args.draft}: {exc}", file=sys.stderr)
        return 1
    found = problems(text, mapping)
    for p in found:
        print(f"{args.draft}: {p}", file=sys.stderr)
    if args.check:
        if stale:
            print(f"{args.draft}: the conformance checklist is out of date; run python "
                  f"{TOOL}", file=sys.stderr)
        return 1 if stale or found else 0
    if new != text:
        args.draft.write_text(new, encoding="utf-8")
        print(f"{args.draft}: regenerated the conformance checklist")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
