"""Machines whose inputs carry their data (draft-dmsc-state-machines-00, Section 1).

A :class:`TypedMachine` is a :class:`~.machine.Machine` (same ``TABLE`` of ``(State,
Input kind) -> (Action, next State)``, same enums, so the draft's diagrams are generated
from it unchanged) stepped with input *objects* instead of bare enum members:

* each input is a small frozen dataclass, a :class:`StepInput` whose ``KIND`` is its
  member of the machine's ``Input`` enum, carrying what the action needs (the message,
  the refusal, the negotiated values);
* the machine classifies everything it is given into such an input, refusals included
  (a refused OPEN, an unexpected message are inputs with their own table rows), so no
  action vetoes its transition and every outcome is a row of the table;
* :meth:`TypedMachine.run` is the only place the state changes; actions start and
  stop the machine's timers (deadlines held by the machine), nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from .machine import Machine


@dataclass(frozen=True, slots=True)
class StepInput:
    """Base of the input dataclasses: ``KIND`` is the input's member of ``Input``."""

    KIND: ClassVar[Enum]


class TypedMachine(Machine):
    """Base of the machines stepped with :class:`StepInput` objects (module doc).  The
    action for a row is the method ``_`` + its name in lower case, taking ``(now,
    input)``; its return value is ignored."""

    def run(self, inp: StepInput, now: float) -> None:
        """Run the transition for ``inp`` from the current state (ProtocolError if the
        table has none; machines classify so that this does not happen)."""
        action, nxt = self.lookup(self.state, inp.KIND)
        getattr(self, "_" + action.name.lower())(now, inp)
        self.state = nxt

    def rows_for(self, kind: Enum) -> bool:
        """Whether the current state has a row for ``kind``."""
        return (self.state, kind) in self.TABLE
