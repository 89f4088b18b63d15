"""Machines whose inputs carry their data (draft-dmsc-state-machines-00, Section 1).

A :class:`TypedMachine` is a :class:`~.machine.Machine` stepped with input *objects*
(:class:`~dmscproto.fsm.StepInput`) by :meth:`~dmscproto.fsm.TableMachine.run`:

* each input is a small frozen dataclass whose ``KIND`` is its member of the machine's
  ``Input`` enum, carrying what the action needs (the message, the refusal, the
  negotiated values);
* the machine classifies everything it is given into such an input, refusals included
  (a refused OPEN, an unexpected message are inputs with their own table rows), so no
  action vetoes its transition and every outcome is a row of the table;
* ``run`` is the only place the state changes; actions start and stop the machine's
  timers (deadlines held by the machine), nothing else does.
"""

from __future__ import annotations

from ..fsm import StepInput
from .machine import Machine

__all__ = ["StepInput", "TypedMachine"]


class TypedMachine(Machine):
    """Base of the protocol machines stepped with :class:`StepInput` objects (module
    doc); the action for a row is the method ``_`` + its name in lower case, taking
    ``(now, input)``; its return value is ignored."""
