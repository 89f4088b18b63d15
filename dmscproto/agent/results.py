"""What the agent SDK gives an application (draft-dmsc-protocol-00, Section 5): the
answers of discovery, routing and tracing, the request an application handler gets,
and the errors of a refused request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..codec.cose import SignedRecord
from ..codec.registry import ErrorCode
from ..codec.values import CapabilityRecord, HopRecord, TraceContext
from ..errors import DmscError
from ..fsm import slot_stores


class AgentError(DmscError):
    """The gateway refused or failed a request: ``code`` is the STATUS it answered with
    (also as ``status``), ``diagnostic`` its DIAGNOSTIC text, if any, and
    ``retry_after`` the seconds after which the gateway said the same request would be
    accepted (its RETRY_AFTER, Section 10.7), if it said so."""

    def __init__(self, status: ErrorCode, diagnostic: str | None = None,
                 retry_after: float | None = None) -> None:
        self.diagnostic = diagnostic
        self.retry_after = retry_after
        super().__init__(diagnostic or "", status)

    @property
    def status(self) -> ErrorCode:
        """The error code (the same as ``code``)."""
        return self.code

    @classmethod
    def of(cls, status: ErrorCode, diagnostic: str | None,
           retry_after_ms: int | None) -> AgentError:
        """The error for an answer: :class:`RateLimited` for RATE_LIMITED."""
        after = None if retry_after_ms is None else retry_after_ms / 1000
        kind = RateLimited if status is ErrorCode.RATE_LIMITED else AgentError
        return kind(status, diagnostic, after)


class RateLimited(AgentError):
    """RATE_LIMITED: the gateway refused the request for the sender's rate or cost
    (Section 10.7); a caller should wait ``retry_after`` seconds (when the gateway gave
    the hint) before sending it again."""


@dataclass(frozen=True, slots=True)
class Found:
    """One discovery answer: the signed record and its score (Section 5.2)."""

    score: int
    signed: SignedRecord

    @property
    def record(self) -> CapabilityRecord:
        return self.signed.record

    @property
    def agent_id(self) -> bytes:
        return self.signed.record.agent_id

    @property
    def agent_uri(self) -> str:
        return self.signed.record.agent_uri


@slot_stores  # one a request an agent serves (slot_stores' docstring)
@dataclass(frozen=True, slots=True)
class Request:
    """A routed request delivered to this agent."""

    source_agent: bytes
    payload: bytes
    transaction_id: int
    #: The W3C trace context the request carried (Section 7.5), if any.
    trace: TraceContext | None = None
    #: The caller's deadline (the TIMEOUT TLV) in seconds, if it gave one.
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """What a TRACE_REQUEST found (Section 6.8): the gateways on the path, in order, and
    how the trace ended (SUCCESS when it reached the target's gateway)."""

    status: ErrorCode
    hops: tuple[HopRecord, ...]
    diagnostic: str | None = None

    @property
    def reached(self) -> bool:
        return self.status is ErrorCode.SUCCESS


#: An application handler: payload and request in, answer payload out.
Handler = Callable[[bytes, Request], Awaitable[bytes] | bytes]
