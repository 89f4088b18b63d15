"""Which machine takes a received message, read from the machines' tables
(draft-dmsc-state-machines-00, Section 1).

A gateway or an agent runs several machines.  Which one a received message goes to is
not written by hand: it follows from each machine's ``MESSAGE_INPUTS`` and ``TABLE``.

* A message type *starts* a machine when one of the inputs it can be has a row leaving
  the initial state (ROUTE_REQUEST starts a routing transaction, OPEN a peer session):
  the owner makes a new instance for it (:attr:`Role.START`).
* The machine's other message types *continue* an instance: the owner hands them to the
  instance waiting for them (by association and transaction id, or by association), if
  there is one (:attr:`Role.CONTINUE`).
* A machine the owner runs once (a responder) takes all of its types (:attr:`Role.ALL`).

The owner lists its machines as :class:`Receiver`\\ s, in the order they are asked;
:func:`dispatch_table` turns the list into the takers of each message type.  The owner
asks them in turn until one takes the message, so an answer goes to the transaction it
matches before anything else (Section 3.3 of draft-dmsc-protocol-00).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from ..codec.messages import Message
from ..codec.registry import MessageType
from .machine import Handle, Machine

#: Hands a message to a machine: ``(source, message, now)``; False when the machine has
#: no instance for it (the next taker is asked).
Take = Callable[[Handle, Message, float], bool]


class Role(Enum):
    """Which of its message types a :class:`Receiver` takes (module doc)."""

    START = "the types that start an instance"
    CONTINUE = "the types that continue an instance"
    ALL = "every type of MESSAGE_INPUTS"


@dataclass(frozen=True, slots=True)
class Receiver:
    """One machine of a node, in one role, and how the node hands it a message."""

    machine: type[Machine]
    role: Role
    take: Take


def starting_types(machine: type[Machine]) -> frozenset[MessageType]:
    """The message types one of whose inputs has a row leaving the initial state."""
    initial = machine.INITIAL
    return frozenset(t for t, inputs in machine.MESSAGE_INPUTS.items()
                     if any(machine.TABLE.get((initial, i), (None, initial))[1] is not initial
                            for i in inputs))


def receiver_types(r: Receiver) -> frozenset[MessageType]:
    """The message types ``r`` takes."""
    every = frozenset(r.machine.MESSAGE_INPUTS)
    if r.role is Role.ALL:
        return every
    starting = starting_types(r.machine)
    return starting if r.role is Role.START else every - starting


def dispatch_table(receivers: Iterable[Receiver],
                   extra: Mapping[MessageType, Take] | None = None
                   ) -> dict[MessageType, tuple[Take, ...]]:
    """The takers of each message type, in the order of ``receivers`` (one taker is not
    asked twice for a type), then ``extra``'s (a type no machine runs: a ROUTE_REQUEST
    delivered to an agent's application)."""
    table: dict[MessageType, list[Take]] = {}
    for r in receivers:
        for t in sorted(receiver_types(r)):
            takers = table.setdefault(t, [])
            if r.take not in takers:
                takers.append(r.take)
    for t, take in (extra or {}).items():
        table.setdefault(t, []).append(take)
    return {t: tuple(takers) for t, takers in table.items()}
