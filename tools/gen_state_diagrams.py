"""Regenerate the state machine sections of drafts/draft-dmsc-state-machines-00.md.

Each machine of :data:`dmscproto.protocol.catalog.MACHINES` and of
:data:`dmscproto.transport.transactions.MACHINES` has a region::

    <!-- BEGIN GENERATED: <machine name> -->
    ...
    <!-- END GENERATED: <machine name> -->

holding its states, an ASCII state diagram and its transition table, all drawn from the
machine's ``TABLE`` (the one the code runs), plus a ``timers`` region naming the timers
each machine uses.  ``python tools/gen_state_diagrams.py`` rewrites the regions in
place; ``--check`` exits 1 and names the stale ones instead.  The prose around them is
written by hand.

The diagram stacks the states vertically, in the order of the state enum.  Each pair of
states joined by transitions gets one vertical lane to the right; an arrowhead ``<``
marks the state a lane enters, and the numbers ``[n]`` at the right of the row a lane
leaves from are the transitions' rows in the table (``5-8``: rows 5 to 8).
``--.`` / ``<-'`` is a
transition back to the same state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path

from dmscproto.codec.registry import TIMERS
from dmscproto.fsm import TableMachine
from dmscproto.protocol.catalog import MACHINES as PROTOCOL_MACHINES
from dmscproto.transport.transactions import MACHINES as DATAGRAM_MACHINES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
import draft_regions

ROOT = Path(__file__).resolve().parent.parent
DRAFT = ROOT / "drafts" / "draft-dmsc-state-machines-00.md"
#: Every machine with a region in the draft.
MACHINES: tuple[type[TableMachine], ...] = (*PROTOCOL_MACHINES, *DATAGRAM_MACHINES)


@dataclass(frozen=True)
class Row:
    """One transition, numbered as in the table."""

    number: int
    state: Enum
    input: Enum
    action: Enum
    next: Enum


def rows(machine: type[TableMachine]) -> list[Row]:
    """The table in state order, then input order, numbered from 1."""
    states, inputs = list(machine.State), list(machine.Input)
    keys = sorted(machine.TABLE, key=lambda k: (states.index(k[0]), inputs.index(k[1])))
    return [Row(n, s, i, *machine.TABLE[(s, i)]) for n, (s, i) in enumerate(keys, 1)]


def _numbers(ns: Sequence[int]) -> str:
    """``[1,2,5-8]``: row numbers, a run of three or more as first-last."""
    runs: list[list[int]] = []
    for n in sorted(ns):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return "[" + ",".join(f"{r[0]}-{r[-1]}" if len(r) >= 3 else ",".join(map(str, r))
                          for r in runs) + "]"


def diagram(machine: type[TableMachine]) -> str:
    """The ASCII state diagram (module doc)."""
    states = list(machine.State)
    index = {s: i for i, s in enumerate(states)}
    table = rows(machine)
    groups: dict[tuple[Enum, Enum], list[int]] = {}
    for r in table:
        groups.setdefault((r.state, r.next), []).append(r.number)
    arcs = sorted((k for k in groups if k[0] is not k[1]),
                  key=lambda k: (abs(index[k[0]] - index[k[1]]),
                                 min(index[k[0]], index[k[1]]), index[k[0]]))
    lane = {k: n for n, k in enumerate(arcs)}
    box_w = max(len(s.name) for s in states) + 4
    x0 = box_w + 4
    label_x = x0 + 2 * len(arcs) + 1

    # ports: one row inside a box per lane end (two for a loop), upward lanes first
    # (inner ones higher), then loops, then downward lanes (outer ones higher)
    ports: dict[Enum, list[tuple[str, tuple[Enum, Enum]]]] = {s: [] for s in states}
    for s in states:
        up: list[tuple[str, tuple[Enum, Enum]]] = []
        down: list[tuple[str, tuple[Enum, Enum]]] = []
        for k in arcs:
            if s in k:
                other = k[1] if k[0] is s else k[0]
                role = "out" if k[0] is s else "in"
                (up if index[other] < index[s] else down).append((role, k))
        up.sort(key=lambda p: lane[p[1]])
        down.sort(key=lambda p: -lane[p[1]])
        loop = [("loop-out", (s, s)), ("loop-in", (s, s))] if (s, s) in groups else []
        ports[s] = [*up, *loop, *down]

    grid: list[list[str]] = []
    port_row: dict[tuple[str, tuple[Enum, Enum]], int] = {}

    def put(y: int, x: int, ch: str) -> None:
        while len(grid) <= y:
            grid.append([])
        line = grid[y]
        while len(line) <= x:
            line.append(" ")
        line[x] = ch

    def text(y: int, x: int, s: str) -> None:
        for i, ch in enumerate(s):
            put(y, x + i, ch)

    y = 0
    for s in states:
        text(y, 0, "+" + "-" * (box_w - 2) + "+")
        inner = max(1, len(ports[s]))
        for j in range(inner):
            text(y + 1 + j, 0, "|" + (s.name.center(box_w - 2) if j == 0 else
                                       " " * (box_w - 2)) + "|")
        for j, (role, k) in enumerate(ports[s]):
            port_row[(role, k)] = y + 1 + j
        text(y + 1 + inner, 0, "+" + "-" * (box_w - 2) + "+")
        y += inner + 3

    for (role, k), py in port_row.items():
        if role == "loop-out":
            text(py, box_w, "--.")
        elif role == "loop-in":
            text(py, box_w, "<-'")
            text(py, label_x, _numbers(groups[k]))
        else:
            lx = x0 + 2 * lane[k]
            text(py, box_w, ("<" if role == "in" else "-") + "-" * (lx - box_w - 1) + "+")
            if role == "out":
                text(py, label_x, _numbers(groups[k]))
    for k in arcs:
        lx = x0 + 2 * lane[k]
        y1, y2 = sorted((port_row[("out", k)], port_row[("in", k)]))
        for yy in range(y1 + 1, y2):
            put(yy, lx, "|")
    return "\n".join("".join(line).rstrip() for line in grid)


def cell(text: str) -> str:
    """Markdown table cell text: brackets escaped, so kramdown does not read a link."""
    return text.replace("[", "\\[").replace("]", "\\]")


def transition_table(machine: type[TableMachine]) -> str:
    body = [(str(r.number), r.state.name, cell(str(r.input.value)), cell(str(r.action.value)),
             r.next.name) for r in rows(machine)]
    return draft_regions.table(("#", "State", "Input", "Action", "Next state"), body,
                               f"{machine.TITLE}: transitions").rstrip("\n")


def machine_section(machine: type[TableMachine]) -> str:
    states = ", ".join(s.name for s in machine.State)
    return "\n".join([
        f"States: {states}.  Initial state: {machine.INITIAL.name}.",
        "",
        "~~~~ ascii-art",
        diagram(machine),
        "~~~~",
        f'{{: title="{machine.TITLE}: state diagram"}}',
        "",
        transition_table(machine),
    ])


def timers_section() -> str:
    """Which timers (Section 8 of the protocol draft) each machine uses."""
    body = []
    for t in TIMERS:
        users = [m.NAME for m in MACHINES if t.name in m.TIMERS]
        if users:
            default = f"{t.default_s:g}"
            if len(default) > 4:  # a ratio such as 1/3, written as the protocol draft does
                default = str(Fraction(t.default_s).limit_denominator(100))
            body.append((t.name, default, ", ".join(users)))
    return draft_regions.table(("Timer", "Default", "Machines"), body,
                               "Timers used by each machine").rstrip("\n")


def generators() -> dict[str, Callable[[], str]]:
    """Each region's generator; a section ends with a blank line before its end marker."""
    out: dict[str, Callable[[], str]] = {
        m.NAME: (lambda m=m: machine_section(m) + "\n") for m in MACHINES}
    out["timers"] = lambda: timers_section() + "\n"
    return out


def regenerate(text: str) -> tuple[str, list[str]]:
    """Return ``text`` with every generated region rewritten, and the stale region names
    (:func:`draft_regions.regenerate`)."""
    return draft_regions.regenerate(text, generators())


def main(argv: list[str] | None = None) -> int:
    return draft_regions.main(argv, description=__doc__.split("\n\n")[0], draft=DRAFT,
                              tool="tools/gen_state_diagrams.py", regenerate=regenerate)


if __name__ == "__main__":
    sys.exit(main())
