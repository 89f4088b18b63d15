"""Registration, agent side (draft-dmsc-protocol-00, Section 5.1); the gateway side is
:mod:`.registration`.

:class:`AgentRegistration` keeps one agent registered with its home gateway: REGISTER,
REFRESH after REFRESH_FRACTION of the granted lease, REGISTER again when the gateway has
lost the registration or the lease ended unrefreshed, DEREGISTER.  Every request waits
REQUEST_TIMEOUT for its answer, and carries the agent's current access token, if it has
one, in ACCESS_TOKEN (Section 10.3).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..codec.cose import SignedRecord
from ..codec.messages import (
    Deregister,
    DeregisterAck,
    Error,
    Message,
    Refresh,
    RefreshAck,
    Register,
    RegisterAck,
)
from ..codec.registry import NONCE_SIZE, ErrorCode, MessageType, timer
from .events import (
    Deregistered,
    LeaseRefreshed,
    Registered,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationLost,
)
from .machine import (
    Handle,
    Outbox,
    ProtocolError,
    TransactionIds,
    earliest,
    timestamp_ms,
)
from .typed import StepInput, TypedMachine


class AgentState(Enum):
    IDLE = "IDLE"
    REGISTERING = "REGISTERING"
    REGISTERED = "REGISTERED"
    REFRESHING = "REFRESHING"
    DEREGISTERING = "DEREGISTERING"


class AgentInput(Enum):
    REGISTER_CALL = "register()"
    DEREGISTER_CALL = "deregister()"
    REGISTER_ACK_OK = "REGISTER_ACK [SUCCESS]"
    REGISTER_ACK_REFUSED = "REGISTER_ACK [error]"
    REFRESH_ACK_OK = "REFRESH_ACK [SUCCESS]"
    REFRESH_ACK_REFUSED = "REFRESH_ACK [error]"
    DEREGISTER_ACK = "DEREGISTER_ACK"
    ERROR = "ERROR"
    REQUEST_TIMEOUT = "request timer"
    REFRESH_DUE = "refresh timer"
    LEASE_END = "lease timer"


class AgentAction(Enum):
    SEND_REGISTER = "send REGISTER, start request timer"
    GRANTED = "start refresh and lease timers; report Registered"
    FAILED = "report RegistrationFailed"
    SEND_REFRESH = "send REFRESH, start request timer"
    EXTENDED = "restart refresh and lease timers; report LeaseRefreshed"
    REREGISTER = "report RegistrationLost; send REGISTER, start request timer"
    SEND_DEREGISTER = "send DEREGISTER, start request timer"
    DEREGISTERED = "stop timers; report Deregistered"


_S, _I, _A = AgentState, AgentInput, AgentAction
#: read at each get_timer (3 a routed call): a module constant, where ``_S.REFRESHING``
#: (an enum member read through its class) costs ~120 ns on Python 3.11
_REFRESHING = _S.REFRESHING


# --- inputs (typed: each carries what its action needs) --------------------------------------
@dataclass(frozen=True, slots=True)
class RegisterCall(StepInput):
    """register(): the record to register and the lease asked for (seconds)."""

    KIND = _I.REGISTER_CALL
    signed: SignedRecord
    lease: int


@dataclass(frozen=True, slots=True)
class DeregisterCall(StepInput):
    KIND = _I.DEREGISTER_CALL


@dataclass(frozen=True, slots=True)
class RegisterGranted(StepInput):
    KIND = _I.REGISTER_ACK_OK
    ack: RegisterAck


@dataclass(frozen=True, slots=True)
class RegisterDenied(StepInput):
    KIND = _I.REGISTER_ACK_REFUSED
    ack: RegisterAck


@dataclass(frozen=True, slots=True)
class RefreshGranted(StepInput):
    KIND = _I.REFRESH_ACK_OK
    ack: RefreshAck


@dataclass(frozen=True, slots=True)
class RefreshDenied(StepInput):
    KIND = _I.REFRESH_ACK_REFUSED
    ack: RefreshAck


@dataclass(frozen=True, slots=True)
class DeregisterAnswered(StepInput):
    KIND = _I.DEREGISTER_ACK
    ack: DeregisterAck


@dataclass(frozen=True, slots=True)
class ErrorAnswered(StepInput):
    KIND = _I.ERROR
    error: Error


@dataclass(frozen=True, slots=True)
class RequestExpired(StepInput):
    KIND = _I.REQUEST_TIMEOUT


@dataclass(frozen=True, slots=True)
class RefreshDue(StepInput):
    KIND = _I.REFRESH_DUE


@dataclass(frozen=True, slots=True)
class LeaseEnd(StepInput):
    KIND = _I.LEASE_END


#: What an answer, or a timer, tells the agent: the status, the diagnostic and RETRY_AFTER.
_Outcome = RegisterDenied | RefreshDenied | DeregisterAnswered | ErrorAnswered


def _outcome(inp: StepInput) -> tuple[ErrorCode, str | None, int | None]:
    """The STATUS, DIAGNOSTIC and RETRY_AFTER an answer carries; TRANSACTION_TIMEOUT
    for the request timer, LEASE_EXPIRED for the lease timer."""
    if isinstance(inp, RequestExpired):
        return ErrorCode.TRANSACTION_TIMEOUT, None, None
    if isinstance(inp, LeaseEnd):
        return ErrorCode.LEASE_EXPIRED, None, None
    if isinstance(inp, DeregisterAnswered):
        return inp.ack.status, None, None
    assert isinstance(inp, _Outcome)
    answer = inp.error if isinstance(inp, ErrorAnswered) else inp.ack
    return answer.status, answer.diagnostic, answer.retry_after


class AgentRegistration(TypedMachine):
    """One agent's registration with its home gateway (Section 5.1), a typed machine
    (:mod:`.typed`): the answers are classified by type and STATUS
    (``MESSAGE_INPUTS``), and the timers are started and stopped by the actions."""

    NAME = "agent-registration"
    TITLE = "Registration, agent side"
    EVENTS = RegistrationEvent
    State, Input, Action = AgentState, AgentInput, AgentAction
    INITIAL = AgentState.IDLE
    TIMERS = ("DEFAULT_LEASE", "REFRESH_FRACTION", "REQUEST_TIMEOUT")
    #: (input on SUCCESS, input otherwise) per answer type.
    MESSAGE_INPUTS = {
        MessageType.REGISTER_ACK: (_I.REGISTER_ACK_OK, _I.REGISTER_ACK_REFUSED),
        MessageType.REFRESH_ACK: (_I.REFRESH_ACK_OK, _I.REFRESH_ACK_REFUSED),
        MessageType.DEREGISTER_ACK: (_I.DEREGISTER_ACK,),
        MessageType.ERROR: (_I.ERROR,),
    }
    TABLE = {
        (_S.IDLE, _I.REGISTER_CALL): (_A.SEND_REGISTER, _S.REGISTERING),
        (_S.REGISTERING, _I.REGISTER_ACK_OK): (_A.GRANTED, _S.REGISTERED),
        (_S.REGISTERING, _I.REGISTER_ACK_REFUSED): (_A.FAILED, _S.IDLE),
        (_S.REGISTERING, _I.ERROR): (_A.FAILED, _S.IDLE),
        (_S.REGISTERING, _I.REQUEST_TIMEOUT): (_A.FAILED, _S.IDLE),
        (_S.REGISTERED, _I.REFRESH_DUE): (_A.SEND_REFRESH, _S.REFRESHING),
        (_S.REGISTERED, _I.DEREGISTER_CALL): (_A.SEND_DEREGISTER, _S.DEREGISTERING),
        # a new record (other skills, say) replaces the registered one (Section 5.1)
        (_S.REGISTERED, _I.REGISTER_CALL): (_A.SEND_REGISTER, _S.REGISTERING),
        (_S.REFRESHING, _I.REGISTER_CALL): (_A.SEND_REGISTER, _S.REGISTERING),
        (_S.REGISTERING, _I.REGISTER_CALL): (_A.SEND_REGISTER, _S.REGISTERING),
        (_S.REFRESHING, _I.REFRESH_ACK_OK): (_A.EXTENDED, _S.REGISTERED),
        (_S.REFRESHING, _I.REFRESH_ACK_REFUSED): (_A.REREGISTER, _S.REGISTERING),
        (_S.REFRESHING, _I.ERROR): (_A.REREGISTER, _S.REGISTERING),
        (_S.REFRESHING, _I.REQUEST_TIMEOUT): (_A.SEND_REFRESH, _S.REFRESHING),
        (_S.REFRESHING, _I.LEASE_END): (_A.REREGISTER, _S.REGISTERING),
        (_S.REFRESHING, _I.DEREGISTER_CALL): (_A.SEND_DEREGISTER, _S.DEREGISTERING),
        (_S.DEREGISTERING, _I.DEREGISTER_ACK): (_A.DEREGISTERED, _S.IDLE),
        (_S.DEREGISTERING, _I.ERROR): (_A.DEREGISTERED, _S.IDLE),
        (_S.DEREGISTERING, _I.REQUEST_TIMEOUT): (_A.DEREGISTERED, _S.IDLE),
    }

    def __init__(self, outbox: Outbox, gateway: Handle, txids: TransactionIds, *,
                 nonce: Callable[[], bytes] = lambda: os.urandom(NONCE_SIZE),
                 token: Callable[[], bytes | None] = lambda: None,
                 request_timeout: float = timer("REQUEST_TIMEOUT"),
                 refresh_fraction: float = timer("REFRESH_FRACTION")) -> None:
        super().__init__(outbox)
        self.gateway = gateway
        self._txids = txids
        self._nonce = nonce
        self._token = token
        self.request_timeout = request_timeout
        self.refresh_fraction = refresh_fraction
        self.signed: SignedRecord | None = None
        self.requested_lease = int(timer("DEFAULT_LEASE"))
        self.agent_id: bytes | None = None
        self.lease = 0
        self._pending: int | None = None      # transaction id of the outstanding request
        self._sent_at = 0.0
        self._deadline: float | None = None
        self._refresh_at: float | None = None
        self.lease_end: float | None = None

    # --- inputs -----------------------------------------------------------------------------
    def register(self, signed: SignedRecord, lease: int, now: float) -> None:
        """Register ``signed`` asking for ``lease`` seconds (local call)."""
        self.run(RegisterCall(signed, lease), now)

    def deregister(self, now: float) -> None:
        """End the registration (local call)."""
        self.run(DeregisterCall(), now)

    def classify(self, msg: Message) -> StepInput:
        """The input an answer is: by its type and STATUS (``MESSAGE_INPUTS``);
        ProtocolError for anything else, for an answer to no outstanding request, or
        when the state has no row for it."""
        inp: StepInput
        if msg.transaction_id != self._pending and msg.TYPE in self.MESSAGE_INPUTS:
            raise self.unexpected(msg, "no request outstanding with its transaction id")
        ok = getattr(msg, "status", None) is ErrorCode.SUCCESS
        if isinstance(msg, RegisterAck):
            inp = RegisterGranted(msg) if ok else RegisterDenied(msg)
        elif isinstance(msg, RefreshAck):
            inp = RefreshGranted(msg) if ok else RefreshDenied(msg)
        elif isinstance(msg, DeregisterAck):
            inp = DeregisterAnswered(msg)
        elif isinstance(msg, Error):
            inp = ErrorAnswered(msg)
        else:
            raise self.unexpected(msg)
        if not self.rows_for(inp.KIND):
            raise self.unexpected(msg)
        return inp

    def receive(self, msg: Message, now: float) -> None:
        """An answer from the home gateway."""
        try:
            inp = self.classify(msg)
        except ProtocolError as err:
            self.refuse(self.gateway, msg, err)
            raise
        self.run(inp, now)

    def get_timer(self) -> float | None:
        return earliest(self._deadline, self._refresh_at,
                        self.lease_end if self.state is _REFRESHING else None)

    def handle_timer(self, now: float) -> None:
        if self.lease_end is not None and now >= self.lease_end \
                and self.state is _S.REFRESHING:
            self.run(LeaseEnd(), now)
        elif self._deadline is not None and now >= self._deadline:
            self.run(RequestExpired(), now)
        elif self._refresh_at is not None and now >= self._refresh_at:
            self.run(RefreshDue(), now)

    # --- helpers (called by actions only) -----------------------------------------------------
    def _request(self, msg: Message, now: float) -> None:
        self._pending = msg.transaction_id
        self._sent_at = now
        self._deadline = now + self.request_timeout
        self._refresh_at = None
        self.outbox.send(self.gateway, msg)

    def _register(self, now: float) -> None:
        assert self.signed is not None
        self._request(Register(transaction_id=self._txids(), record=self.signed,
                               lease=self.requested_lease, nonce=self._nonce(),
                               timestamp=timestamp_ms(now), token=self._token()), now)

    def _start_lease(self, lease: int | None) -> None:
        # The lease is counted from when the request was sent, so the agent never
        # believes itself registered for longer than the gateway does.
        self.lease = self.requested_lease if lease is None else lease
        self.lease_end = self._sent_at + self.lease
        self._refresh_at = self._sent_at + self.refresh_fraction * self.lease
        self._pending = self._deadline = None

    def _clear(self) -> None:
        self._pending = self._deadline = self._refresh_at = self.lease_end = None

    # --- actions ------------------------------------------------------------------------------
    def _send_register(self, now: float, inp: RegisterCall) -> None:
        self.signed, self.requested_lease = inp.signed, inp.lease
        self._register(now)

    def _send_refresh(self, now: float, inp: RefreshDue | RequestExpired) -> None:
        assert self.agent_id is not None
        self._request(Refresh(transaction_id=self._txids(), agent_id=self.agent_id,
                              lease=self.requested_lease, nonce=self._nonce(),
                              timestamp=timestamp_ms(now), token=self._token()), now)

    def _send_deregister(self, now: float, inp: DeregisterCall) -> None:
        assert self.agent_id is not None
        self._request(Deregister(transaction_id=self._txids(), agent_id=self.agent_id,
                                 nonce=self._nonce(), timestamp=timestamp_ms(now),
                                 token=self._token()), now)
        self.lease_end = None

    def _granted(self, now: float, inp: RegisterGranted) -> None:
        assert self.signed is not None
        self.agent_id = inp.ack.agent_id or self.signed.record.agent_id
        self._start_lease(inp.ack.lease)
        assert self.lease_end is not None
        self.outbox.emit(Registered(self.agent_id, self.lease, self.lease_end))

    def _extended(self, now: float, inp: RefreshGranted) -> None:
        self._start_lease(inp.ack.lease)
        assert self.lease_end is not None
        self.outbox.emit(LeaseRefreshed(self.lease, self.lease_end))

    def _failed(self, now: float, inp: RegisterDenied | ErrorAnswered | RequestExpired) -> None:
        self._clear()
        self.outbox.emit(RegistrationFailed(*_outcome(inp)))

    def _reregister(self, now: float, inp: RefreshDenied | ErrorAnswered | LeaseEnd) -> None:
        self._clear()
        self.outbox.emit(RegistrationLost(_outcome(inp)[0]))
        self._register(now)

    def _deregistered(self, now: float,
                      inp: DeregisterAnswered | ErrorAnswered | RequestExpired) -> None:
        self._clear()
        self.agent_id = None
        self.outbox.emit(Deregistered(_outcome(inp)[0]))
