"""What the reliability layer of the datagram transports reports (draft-dmsc-protocol-00,
Section 9.3): small frozen dataclasses on one base, drained with
:meth:`~.reliability.Reliability.next_event`, and its counters."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ..codec.errors import DecodeError
from ..codec.messages import Message
from ..codec.registry import ErrorCode

#: A peer's address, as the channel names it (opaque).
Address = Hashable


@dataclass(frozen=True, slots=True)
class ReliabilityEvent:
    """Base of what the reliability layer reports about ``peer``."""

    peer: Address


@dataclass(frozen=True, slots=True)
class RequestReceived(ReliabilityEvent):
    """A new request to hand to the application; answer it with
    :meth:`~.reliability.Reliability.respond`."""

    message: Message


@dataclass(frozen=True, slots=True)
class MessageReceived(ReliabilityEvent):
    """A one-way message (or an UPDATE that answers nothing outstanding)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ResponseReceived(ReliabilityEvent):
    """The answer to the outstanding request ``transaction_id``."""

    transaction_id: int
    response: Message


@dataclass(frozen=True, slots=True)
class RequestAbandoned(ReliabilityEvent):
    """The outstanding request ``transaction_id`` was abandoned."""

    transaction_id: int
    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class DatagramRejected(ReliabilityEvent):
    """A datagram that is not a valid PDU (Section 4.4)."""

    error: DecodeError


@dataclass(slots=True)
class Counters:
    """What the reliability layer did, for metrics and tests."""

    requests_sent: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    duplicates_answered: int = 0
    duplicates_in_progress: int = 0
    stray_answers: int = 0
    rejected: int = 0
