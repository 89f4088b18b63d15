"""The common shape of every DMSC protocol state machine (draft-dmsc-state-machines-00).

Each machine is sans-I/O, in the style of aioquic's ``QuicConnection`` and h11/h2:

* it is fed decoded messages with ``receive(source, msg, now)``, local calls (``register()``,
  ``start()`` ...) and timer expiries with ``handle_timer(now)``; ``now`` is the caller's
  clock in seconds, the machine never reads one;
* it writes what to send and what happened into an :class:`Outbox` (``(destination,
  message)`` pairs and event dataclasses), and ``get_timer()`` says when it next wants
  ``handle_timer``;
* its transitions are ONE table, ``TABLE[(State, Input)] = (Action, NextState)``, stepped
  with input objects (:class:`~dmscproto.fsm.TableMachine`).  A message the state has no
  row for raises :class:`ProtocolError` carrying a registered :class:`ErrorCode`
  (UNEXPECTED_MESSAGE), after the answer the draft prescribes has been queued
  (:func:`error_answer`), and the state is left as it was.

The tables, and the input, state and action enums, are what
``tools/gen_state_diagrams.py`` renders into the draft.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..codec.messages import MESSAGE_CLASSES, Error, Message
from ..codec.registry import ANSWER_TO, ErrorCode, MessageType
from ..errors import DmscError
from ..fsm import TableMachine

if TYPE_CHECKING:
    from .events import ProtocolEvent

#: Who a message comes from or goes to: an agent, a peer gateway or a home gateway, as the
#: caller names them (an address, a connection, a name).
Handle = Hashable

MsgT = TypeVar("MsgT", bound=Message)


class ProtocolError(DmscError):
    """An input the machine's table has no entry for, or a message it cannot accept.

    ``code`` is the registered error code sent on the wire (UNEXPECTED_MESSAGE for a
    missing table entry); ``message_type`` the offending message's type, if any."""

    def __init__(self, code: ErrorCode, diagnostic: str,
                 message_type: MessageType | None = None) -> None:
        self.diagnostic = diagnostic
        self.message_type = message_type
        super().__init__(diagnostic, code)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a node's hook (admission, OPEN check, record check, forwarding) refuses a
    message or a record: the registered error code for STATUS and the reason for the
    DIAGNOSTIC TLV (Section 5.4) and the logs, and when to try again (RETRY_AFTER, in
    ms), if the refusal is for a time."""

    code: ErrorCode
    diagnostic: str
    retry_after: int | None = None


def error_answer(msg: Message, code: ErrorCode, diagnostic: str,
                 retry_after: int | None = None) -> Error | None:
    """The wire answer to a request that cannot be processed (Section 5.4): ERROR with the
    request's transaction id and type (and RETRY_AFTER in ms, Section 10.7).  Answers,
    one-way messages and ERROR itself are never answered (None): they are dropped."""
    if msg.TYPE not in ANSWER_TO:
        return None
    return Error(transaction_id=msg.transaction_id, status=code,
                 offending_type=int(msg.TYPE), diagnostic=diagnostic, retry_after=retry_after)


def refusal_answer(msg: Message, code: ErrorCode, diagnostic: str,
                   retry_after: int | None = None) -> Message | None:
    """The answer to a request that was decoded but cannot be accepted (Section 5): its
    answer message with the error in STATUS when that message has a STATUS TLV, ERROR
    otherwise (either with RETRY_AFTER in ms if given, Section 10.7); nothing for
    answers and one-way messages."""
    answer_type = ANSWER_TO.get(msg.TYPE)
    if answer_type is None:
        return None
    cls = MESSAGE_CLASSES[answer_type]
    if any(s.name == "status" for s in cls.SPEC) and answer_type is not MessageType.UPDATE:
        return cls(transaction_id=msg.transaction_id, status=code,  # type: ignore[call-arg]
                   diagnostic=diagnostic, retry_after=retry_after)
    return error_answer(msg, code, diagnostic, retry_after)


@dataclass
class Outbox:
    """What machines produce: messages to send (in order) and events (in order).

    Machines composed into one node or client share one outbox; the owner drains it with
    :meth:`messages_to_send` and :meth:`next_event`."""

    messages: list[tuple[Handle, Message]] = field(default_factory=list)
    events: deque[ProtocolEvent] = field(default_factory=deque)

    def send(self, dest: Handle, msg: Message) -> None:
        self.messages.append((dest, msg))

    def emit(self, event: ProtocolEvent) -> None:
        self.events.append(event)

    def messages_to_send(self) -> list[tuple[Handle, Message]]:
        out, self.messages = self.messages, []
        return out

    def next_event(self) -> ProtocolEvent | None:
        return self.events.popleft() if self.events else None


class TransactionIds:
    """Transaction ids for new requests (Section 3.3): a counter from a random start, so
    ids are not reused while outstanding and are hard to guess off-path."""

    def __init__(self, rng: random.Random | None = None) -> None:
        start = (rng or random.SystemRandom()).getrandbits(63)
        self._ids: Iterator[int] = itertools.count(start)

    def __call__(self) -> int:
        return next(self._ids) % 2**64


class Machine(TableMachine):
    """Base of the protocol machines: a :class:`~dmscproto.fsm.TableMachine` writing
    into an :class:`Outbox`, whose missing rows are :class:`ProtocolError`."""

    MESSAGE_INPUTS: ClassVar[Mapping[MessageType, tuple[Any, ...]]] = {}
    #: The base of the events the machine reports (:mod:`.events`; None: it reports none).
    EVENTS: ClassVar[type[ProtocolEvent] | None] = None

    def __init__(self, outbox: Outbox) -> None:
        # TableMachine's __init__, its one line here: a frame less for each machine made
        # (a RouteRelay per routed call)
        self.state = self.INITIAL
        self.outbox = outbox

    def no_row(self, kind: Enum) -> ProtocolError:
        return ProtocolError(ErrorCode.UNEXPECTED_MESSAGE,
                             f"{kind.value} in state {self.state.name} of {self.NAME}")

    def unexpected(self, msg: Message, why: str = "") -> ProtocolError:
        """The error for a message this machine has no input for in its state."""
        return ProtocolError(ErrorCode.UNEXPECTED_MESSAGE,
                             f"{msg.TYPE.name} in state {self.state.name} of {self.NAME}"
                             + (f" ({why})" if why else ""), msg.TYPE)

    def refuse(self, source: Handle, msg: Message, err: ProtocolError) -> None:
        """Queue the wire answer to a message that raised ``err`` (default: ERROR for a
        request, nothing otherwise; peer sessions answer NOTIFY)."""
        answer = error_answer(msg, err.code, err.diagnostic)
        if answer is not None:
            self.outbox.send(source, answer)


def expect(msg: object, cls: type[MsgT]) -> MsgT:
    """``msg`` as ``cls`` (actions know which message their input carries)."""
    assert isinstance(msg, cls), f"expected {cls.__name__}, got {type(msg).__name__}"
    return msg


def timestamp_ms(now: float) -> int:
    """A TIMESTAMP value (milliseconds since the epoch, Section 4.3) for ``now``."""
    return int(now * 1000)


def earliest(*deadlines: float | None) -> float | None:
    """The earliest of the deadlines that are set."""
    at = None
    for d in deadlines:  # no list (asked for after every turn that ran a machine)
        if d is not None and (at is None or d < at):
            at = d
    return at


def slice_of(clock: Callable[[], float] | None, seconds: float) -> Callable[[], bool]:
    """Whether a slice of ``seconds`` of ``clock``, begun now, has time left (always,
    without a clock): work over many records checks it between records."""
    if clock is None:
        return lambda: True
    end = clock() + seconds
    return lambda: clock() < end


class StepBudget:
    """Time for learning records, shared by the machines of one gateway (every
    session's UPDATEs): ``seconds`` of ``clock`` per step of the gateway, a step known
    by its ``now`` (the machines of one step are given one time).  :meth:`left` is the
    ``learn_budget`` of :class:`~.sync_in.SyncIn`; a gateway process gives its event
    loop's turn budget instead (:class:`~dmscproto.transport.driver.TurnBudget`)."""

    __slots__ = ("_clock", "_end", "_now", "seconds")

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self._clock = clock
        self.seconds = seconds
        self._now: float | None = None
        self._end = 0.0

    def left(self, now: float) -> float:
        """Seconds of ``clock`` left in the step at ``now`` (a new step starts with it)."""
        if now != self._now:
            self._now, self._end = now, self._clock() + self.seconds
        return self._end - self._clock()


def learning_budget(budget: Callable[[float], float] | None, clock: Callable[[], float] | None,
                    seconds: float) -> Callable[[float], float] | None:
    """``budget`` if given, else ``seconds`` of ``clock`` per step (:class:`StepBudget`);
    None without either (no slices)."""
    if budget is not None or clock is None:
        return budget
    return StepBudget(clock, seconds).left
