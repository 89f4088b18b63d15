"""drafts/draft-dmsc-state-machines-00.md and the machines' tables cannot drift apart.

The transition tables are parsed back from the markdown and compared with each machine's
``TABLE``; the diagrams are checked to name every state and every transition exactly
once and to fit an Internet-Draft's line width; ``tools/gen_state_diagrams.py --check``
must pass and must notice a stale region.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import require_tool

from dmscproto.codec.registry import TIMERS, timer
from dmscproto.fsm import TableMachine
from dmscproto.protocol.catalog import MACHINES as PROTOCOL_MACHINES
from dmscproto.transport.transactions import MACHINES as DATAGRAM_MACHINES

#: Every machine with a region in the draft.
MACHINES: tuple[type[TableMachine], ...] = (*PROTOCOL_MACHINES, *DATAGRAM_MACHINES)

ROOT = Path(__file__).resolve().parent.parent
DRAFT = ROOT / "drafts" / "draft-dmsc-state-machines-00.md"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_state_diagrams",
                                                  ROOT / "tools" / "gen_state_diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GEN = _tool()
TEXT = DRAFT.read_text(encoding="utf-8")


def region(name: str) -> str:
    m = re.search(rf"<!-- BEGIN GENERATED: {name} -->\n(.*?)<!-- END GENERATED: {name} -->",
                  TEXT, re.S)
    assert m is not None, f"no region {name}"
    return m.group(1)


def unescape(cell: str) -> str:
    return cell.replace("\\[", "[").replace("\\]", "]")


def test_generator_check_passes() -> None:
    assert GEN.main(["--check"]) == 0


def test_generator_notices_a_stale_region() -> None:
    stale_text = TEXT.replace("| report RegistrationFailed", "| report nothing", 1)
    _, stale = GEN.regenerate(stale_text)
    assert stale == ["agent-registration"]


def test_front_matter_is_an_internet_draft() -> None:
    head = TEXT.split("--- abstract")[0]
    assert "docname: draft-dmsc-state-machines-00" in head and "ipr: trust200902" in head
    assert "--- middle" in TEXT and "--- back" in TEXT


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.NAME)
def test_transition_table_matches_the_code(machine: type[TableMachine]) -> None:
    body = region(machine.NAME)
    parsed = set()
    numbers = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 5 and cells[0].isdigit():
            numbers.append(int(cells[0]))
            parsed.add(tuple(unescape(c) for c in cells[1:]))
    expected = {(s.name, str(i.value), str(a.value), n.name)
                for (s, i), (a, n) in machine.TABLE.items()}
    assert parsed == expected
    assert numbers == list(range(1, len(expected) + 1))


def _expand(item: str) -> range:
    """Row numbers of a diagram label item: ``7`` or a run ``5-8``."""
    first, _, last = item.partition("-")
    return range(int(first), int(last or first) + 1)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.NAME)
def test_diagram_shows_every_state_and_transition(machine: type[TableMachine]) -> None:
    body = region(machine.NAME)
    m = re.search(r"~~~~ ascii-art\n(.*?)\n~~~~", body, re.S)
    assert m is not None
    art = m.group(1)
    assert max(len(line) for line in art.splitlines()) <= 72  # RFC 7322 line length
    boxes = re.findall(r"^\|\s*([A-Z_]+)\s*\|", art, re.M)
    assert boxes == [s.name for s in machine.State]
    labels = [n for group in re.findall(r"\[([\d,-]+)\]", art) for item in group.split(",")
              for n in _expand(item)]
    assert sorted(labels) == list(range(1, len(machine.TABLE) + 1))
    # one arrowhead per pair of distinct states joined by transitions
    pairs = {(s, n) for (s, _), (_, n) in machine.TABLE.items() if s is not n}
    assert art.count("|<-") - art.count("|<-'") == len(pairs)
    assert f"States: {', '.join(s.name for s in machine.State)}." in body


def test_timers_table_matches_the_code() -> None:
    rows = {}
    for line in region("timers").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[0] in {t.name for t in TIMERS}:
            rows[cells[0]] = set(cells[2].split(", "))
    used = {name for m in MACHINES for name in m.TIMERS}
    assert set(rows) == used
    for name in used:
        timer(name)  # a registered timer
        assert rows[name] == {m.NAME for m in MACHINES if name in m.TIMERS}


def test_every_machine_has_prose() -> None:
    for m in MACHINES:
        before = TEXT.split(f"<!-- BEGIN GENERATED: {m.NAME} -->")[0]
        prose = re.split(r"^#+ .*$", before, flags=re.M)[-1]
        assert len(prose.split()) >= 40, f"{m.NAME} has no prose before its tables"


def test_draft_converts_with_kramdown_rfc(tmp_path: Path) -> None:
    """Every generated figure and table survives the conversion to RFCXML."""
    kramdown = require_tool("kramdown-rfc")
    src = tmp_path / DRAFT.name
    src.write_text(TEXT, encoding="utf-8")
    done = subprocess.run([kramdown, src.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "KRAMDOWN_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    xml = done.stdout
    for m in MACHINES:
        assert f'<figure title="{m.TITLE}: state diagram">' in xml
        assert f'title="{m.TITLE}: transitions"' in xml
    assert "\\[" not in xml  # escaped brackets came out as brackets
