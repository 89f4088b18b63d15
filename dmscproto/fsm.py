"""Table-driven state machines: the one shape every DMSC machine has
(draft-dmsc-state-machines-00, Section 1).

It sits below every other layer, so that the protocol machines
(:class:`dmscproto.protocol.machine.Machine`) and the reliability layer of the datagram
transports (:mod:`dmscproto.transport.reliability`) share it:

* a machine class declares its ``State``, ``Input`` and ``Action`` enums, ``INITIAL``
  and ``TABLE[(State, Input)] = (Action, next State)``, the message types each input
  can come from (``MESSAGE_INPUTS``) and the timers it uses (``TIMERS``); the draft's
  diagrams are generated from these (``tools/gen_state_diagrams.py``);
* it is stepped with input *objects*: each is a small frozen dataclass, a
  :class:`StepInput` whose ``KIND`` is its member of ``Input``, carrying what the action
  needs; the machine classifies everything it is given into such an input, refusals
  included, so every outcome is a row of the table;
* :meth:`TableMachine.run` is the only place the state changes; the action of a row is
  the method ``_`` + the action's name in lower case, taking ``(now, input)``; actions
  start and stop the machine's timers, nothing else does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")


def slot_stores(cls: type[_T]) -> type[_T]:
    """Class decorator, outside ``@dataclass(frozen=True, slots=True)``: the same
    ``__init__`` (its parameters in field order, positional or by keyword, with their
    defaults) storing each field through its slot's descriptor, where the frozen
    dataclass's calls ``object.__setattr__`` per field (a RequestCompleted in 0.6x the
    time, timeit); the instance is as frozen as before.  For objects made on every
    request and answer; not for a field with a default factory, keyword-only or left out
    of ``__init__``, nor with a ``__post_init__`` (TypeError)."""
    made = fields(cls)
    if hasattr(cls, "__post_init__") or any(
            f.default_factory is not MISSING or not f.init or f.kw_only for f in made):
        raise TypeError(f"{cls.__name__}: a field or __post_init__ slot_stores would not "
                        "honour")
    names = [f.name for f in made]
    defaults = {f.name: f.default for f in made if f.default is not MISSING}
    closure = [f"_set_{n}" for n in names] + [f"_default_{n}" for n in defaults]
    params = [f"{n}=_default_{n}" if n in defaults else n for n in names]
    namespace: dict[str, Any] = {}
    # made from source, of field names only, as dataclasses makes its own; the function's
    # globals are its module's, where its annotations name what they name (for
    # documentation tools), the slots' setters and the defaults its closure's
    exec(f"def make({', '.join(closure)}):\n"
         f"    def __init__(self, {', '.join(params)}):\n"
         + "".join(f"        _set_{n}(self, {n})\n" for n in names)
         + "    return __init__\n", sys.modules[cls.__module__].__dict__, namespace)
    init = namespace["make"](*(getattr(cls, n).__set__ for n in names), *defaults.values())
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@dataclass(frozen=True, slots=True)
class StepInput:
    """Base of the input dataclasses: ``KIND`` is the input's member of ``Input``."""

    KIND: ClassVar[Enum]


class TableMachine:
    """Base of the table-driven machines (module doc)."""

    __slots__ = ("state",)

    #: Short name used for the draft's generated regions and diagrams.
    NAME: ClassVar[str]
    #: One line for the draft: what the machine is and where it runs.
    TITLE: ClassVar[str]
    State: ClassVar[type[Enum]]
    Input: ClassVar[type[Enum]]
    Action: ClassVar[type[Enum]]
    INITIAL: ClassVar[Enum]
    TABLE: ClassVar[Mapping[tuple[Any, Any], tuple[Any, Any]]]
    #: The inputs a received message of each type can be (the classification decides
    #: which); a message of a type not listed is unexpected in every state.
    MESSAGE_INPUTS: ClassVar[Mapping[Any, tuple[Any, ...]]] = {}
    #: The timers of draft-dmsc-protocol-00 Section 8 the machine uses, by name.
    TIMERS: ClassVar[tuple[str, ...]] = ()

    #: ``TABLE`` as :meth:`run` reads it, made when the class is: keyed by the identities
    #: of the (singleton) enum members, whose hash is computed in Python, each action's
    #: method looked up once; and the states some row leaves.
    _ROWS: ClassVar[dict[tuple[int, int], tuple[Callable[[Any, float, Any], None], Enum]]]
    _LIVE: ClassVar[frozenset[int]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = getattr(cls, "TABLE", None)
        if table is not None:
            cls._ROWS = {(id(s), id(i)): (getattr(cls, "_" + a.name.lower()), n)
                         for (s, i), (a, n) in table.items()}
            cls._LIVE = frozenset(id(s) for s, _ in table)

    def __init__(self) -> None:
        self.state: Enum = self.INITIAL

    def no_row(self, kind: Enum) -> Exception:
        """The error for an input the current state has no row for (machines classify
        so that this does not happen)."""
        return LookupError(f"{kind.value} in state {self.state.name} of {self.NAME}")

    def run(self, inp: StepInput, now: float) -> None:
        """Run the transition for ``inp`` from the current state."""
        entry = self._ROWS.get((id(self.state), id(inp.KIND)))
        if entry is None:
            raise self.no_row(inp.KIND)
        action, nxt = entry
        action(self, now, inp)
        self.state = nxt

    def run_from(self, state: Enum, inp: StepInput, now: float) -> None:
        """Run the transition for ``inp`` from ``state``: the step of a machine whose
        state is held per key elsewhere (a gateway's registry holds each agent's) and
        loaded for each input."""
        self.state = state
        self.run(inp, now)

    @property
    def finished(self) -> bool:
        """Whether the current state has no row leaving it (a transaction's last)."""
        return id(self.state) not in self._LIVE

    def rows_for(self, kind: Enum) -> bool:
        """Whether the current state has a row for ``kind``."""
        return (id(self.state), id(kind)) in self._ROWS
