"""Registration, agent side and gateway side (draft-dmsc-protocol-00, Section 5.1).

:class:`AgentRegistration` keeps one agent registered with its home gateway: REGISTER,
REFRESH after REFRESH_FRACTION of the granted lease, REGISTER again when the gateway has
lost the registration or the lease ended unrefreshed, DEREGISTER.  Every request waits
REQUEST_TIMEOUT for its answer, and carries the agent's current access token, if it has
one, in ACCESS_TOKEN (Section 10.3).

:class:`GatewayRegistration` answers those requests at the gateway.  Its per-agent state
is read from the :class:`~dmscproto.gateway.core.GatewayCore` (a local record is
REGISTERED), so it survives a restart; REGISTER_ACK is sent only after the core has
committed the record.
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
from ..codec.signing import SignatureError, verify_record
from ..codec.wire import VersionedId
from .events import (
    AgentRegistered,
    AgentRemoved,
    Deregistered,
    LeaseRefreshed,
    Registered,
    RegistrationFailed,
    RegistrationLost,
)
from .machine import (
    Handle,
    Outbox,
    ProtocolError,
    Refusal,
    TransactionIds,
    earliest,
    expect,
    timestamp_ms,
)
from .ports import RegisterOutcome, RegistrationTable
from .typed import StepInput, TypedMachine

#: Checks a signed record before it is stored or learned, given the association it came
#: from (an agent's REGISTER, a peer's UPDATE) and ``now``; returns the refusal, or None.
RecordVerifier = Callable[[Handle, SignedRecord, float], Refusal | None]


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
                        self.lease_end if self.state is _S.REFRESHING else None)

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


# --- gateway side ------------------------------------------------------------------------------
class GatewayState(Enum):
    UNREGISTERED = "UNREGISTERED"
    REGISTERED = "REGISTERED"


class GatewayInput(Enum):
    REGISTER = "REGISTER [committed]"
    REGISTER_REFUSED = "REGISTER [refused]"
    REFRESH = "REFRESH [committed]"
    REFRESH_REFUSED = "REFRESH [refused]"
    DEREGISTER = "DEREGISTER [committed]"
    DEREGISTER_REFUSED = "DEREGISTER [refused]"
    LEASE_END = "lease timer"


class GatewayAction(Enum):
    ACK_REGISTER = ("answer REGISTER_ACK SUCCESS with the lease (the record was verified "
                    "and committed, GatewayCore.register); report AgentRegistered")
    ACK_REFRESH = "answer REFRESH_ACK SUCCESS (the new lease end was committed)"
    ACK_DEREGISTER = ("answer DEREGISTER_ACK SUCCESS (the removal was committed); "
                      "report AgentRemoved")
    REFUSE = "answer the request's ACK with the refusal's STATUS and DIAGNOSTIC"
    EXPIRE = "report AgentRemoved (GatewayCore.expire removed every due record in one commit)"


_GS, _GI, _GA = GatewayState, GatewayInput, GatewayAction


# --- inputs: the registry's decision on one request, or the lease end -------------------------
@dataclass(frozen=True, slots=True)
class RegisterCommitted(StepInput):
    KIND = _GI.REGISTER
    source: Handle
    request: Register
    outcome: RegisterOutcome


@dataclass(frozen=True, slots=True)
class RefreshCommitted(StepInput):
    KIND = _GI.REFRESH
    source: Handle
    request: Refresh
    outcome: RegisterOutcome


@dataclass(frozen=True, slots=True)
class DeregisterCommitted(StepInput):
    KIND = _GI.DEREGISTER
    source: Handle
    request: Deregister
    version: int


@dataclass(frozen=True, slots=True)
class Refused(StepInput):
    """A request the verifier or the registry refused: nothing was written."""

    KIND = _GI.REGISTER_REFUSED
    source: Handle
    request: Register | Refresh | Deregister
    status: ErrorCode
    diagnostic: str | None


@dataclass(frozen=True, slots=True)
class RefreshRefused(Refused):
    KIND = _GI.REFRESH_REFUSED


@dataclass(frozen=True, slots=True)
class DeregisterRefused(Refused):
    KIND = _GI.DEREGISTER_REFUSED


@dataclass(frozen=True, slots=True)
class LeaseEnded(StepInput):
    KIND = _GI.LEASE_END
    removed: VersionedId


def verify_signature(source: Handle, signed: SignedRecord, now: float) -> Refusal | None:
    """The default record check, whoever sent it: the COSE signature and the
    key-derived Agent ID (Sections 7.2.1, 3.2); BAD_SIGNATURE on failure."""
    try:
        verify_record(signed)
    except SignatureError as exc:
        return Refusal(ErrorCode.BAD_SIGNATURE, str(exc))
    return None


class GatewayRegistration(TypedMachine):
    """The gateway's answers to REGISTER, REFRESH and DEREGISTER, and lease expiry
    (Section 5.1), a typed machine (:mod:`.typed`).  The state of an agent is REGISTERED
    while the registry holds its local record (until the lease timer removes it).  The
    registry (:class:`~.ports.RegistrationTable`) decides each request and commits it
    before the machine steps: the input is that decision, so every outcome is a row and
    an answer of SUCCESS follows its commit."""

    NAME = "gateway-registration"
    TITLE = "Registration, gateway side (per agent)"
    State, Input, Action = GatewayState, GatewayInput, GatewayAction
    INITIAL = GatewayState.UNREGISTERED
    TIMERS = ("MIN_LEASE", "MAX_LEASE")
    TABLE = {
        (_GS.UNREGISTERED, _GI.REGISTER): (_GA.ACK_REGISTER, _GS.REGISTERED),
        (_GS.UNREGISTERED, _GI.REGISTER_REFUSED): (_GA.REFUSE, _GS.UNREGISTERED),
        (_GS.UNREGISTERED, _GI.REFRESH_REFUSED): (_GA.REFUSE, _GS.UNREGISTERED),
        (_GS.UNREGISTERED, _GI.DEREGISTER_REFUSED): (_GA.REFUSE, _GS.UNREGISTERED),
        (_GS.REGISTERED, _GI.REGISTER): (_GA.ACK_REGISTER, _GS.REGISTERED),
        (_GS.REGISTERED, _GI.REGISTER_REFUSED): (_GA.REFUSE, _GS.REGISTERED),
        (_GS.REGISTERED, _GI.REFRESH): (_GA.ACK_REFRESH, _GS.REGISTERED),
        (_GS.REGISTERED, _GI.REFRESH_REFUSED): (_GA.REFUSE, _GS.REGISTERED),
        (_GS.REGISTERED, _GI.DEREGISTER): (_GA.ACK_DEREGISTER, _GS.UNREGISTERED),
        (_GS.REGISTERED, _GI.LEASE_END): (_GA.EXPIRE, _GS.UNREGISTERED),
    }
    MESSAGE_INPUTS = {MessageType.REGISTER: (_GI.REGISTER, _GI.REGISTER_REFUSED),
                      MessageType.REFRESH: (_GI.REFRESH, _GI.REFRESH_REFUSED),
                      MessageType.DEREGISTER: (_GI.DEREGISTER, _GI.DEREGISTER_REFUSED)}

    def __init__(self, outbox: Outbox, core: RegistrationTable,
                 verifier: RecordVerifier = verify_signature) -> None:
        super().__init__(outbox)
        self.core = core
        self.verifier = verifier
        #: How to reach each agent registered since start (for ROUTE_REQUEST delivery).
        self.handles: dict[bytes, Handle] = {}

    def state_of(self, agent_id: bytes) -> GatewayState:
        e = self.core.get(agent_id)
        return _GS.REGISTERED if e is not None and e.origin is None else _GS.UNREGISTERED

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        """REGISTER, REFRESH or DEREGISTER from an agent: the registry decides (and
        commits), then the decision steps the agent's machine."""
        if isinstance(msg, Register):
            aid = msg.record.record.agent_id
        elif isinstance(msg, Refresh | Deregister):
            aid = msg.agent_id
        else:  # no input of MESSAGE_INPUTS
            err = self.unexpected(msg)
            self.refuse(source, msg, err)
            raise err
        before = self.state_of(aid)
        inp = self._decide(source, msg, now)
        self.state = before
        self.run(inp, now)
        # The table's next state is what the registry now holds: they cannot disagree.
        assert self.state_of(aid) is self.state, (aid.hex(), inp.KIND)

    def _decide(self, source: Handle, msg: Message, now: float) -> StepInput:
        """The registry's decision on ``msg``, committed when it is a success."""
        if isinstance(msg, Register):
            bad = self.verifier(source, msg.record, now)
            if bad is not None:
                return Refused(source, msg, bad.code, bad.diagnostic)
            out = self.core.register(msg.record, msg.lease, now)  # committed on return
            if out.status is not ErrorCode.SUCCESS:
                return Refused(source, msg, out.status, out.diagnostic)
            return RegisterCommitted(source, msg, out)
        if isinstance(msg, Refresh):
            out = self.core.refresh(msg.agent_id, msg.lease, now)
            if out.status is not ErrorCode.SUCCESS:
                return RefreshRefused(source, msg, out.status, out.diagnostic)
            return RefreshCommitted(source, msg, out)
        dereg = expect(msg, Deregister)
        held = self.core.get(dereg.agent_id)
        status = self.core.deregister(dereg.agent_id, now)
        if status is not ErrorCode.SUCCESS or held is None:
            return DeregisterRefused(source, dereg, status, None)
        return DeregisterCommitted(source, dereg, held.version)

    def get_timer(self) -> float | None:
        return self.core.next_expiry()

    def handle_timer(self, now: float) -> None:
        """Lease timer: the core removes every registration due, in one commit; then each
        goes through its (REGISTERED, LEASE_END) transition."""
        for vid in self.core.expire(now):
            self.state = _GS.REGISTERED
            self.run(LeaseEnded(vid), now)
            assert self.state_of(vid.agent_id) is self.state

    # --- actions ------------------------------------------------------------------------------
    def _ack_register(self, now: float, inp: RegisterCommitted) -> None:
        reg, out, aid = inp.request, inp.outcome, inp.request.record.record.agent_id
        self.outbox.send(inp.source, RegisterAck(
            transaction_id=reg.transaction_id, status=ErrorCode.SUCCESS, agent_id=aid,
            lease=out.lease, diagnostic=out.diagnostic, trace=reg.trace))
        before = self.handles.get(aid)
        self.handles[aid] = inp.source
        self.outbox.emit(AgentRegistered(
            aid, out.lease, inp.source,
            replaced=before if before not in (None, inp.source) else None))

    def _ack_refresh(self, now: float, inp: RefreshCommitted) -> None:
        ref = inp.request
        self.outbox.send(inp.source, RefreshAck(
            transaction_id=ref.transaction_id, status=ErrorCode.SUCCESS,
            lease=inp.outcome.lease, diagnostic=inp.outcome.diagnostic, trace=ref.trace))
        self.handles[ref.agent_id] = inp.source

    def _ack_deregister(self, now: float, inp: DeregisterCommitted) -> None:
        dereg = inp.request
        self.outbox.send(inp.source, DeregisterAck(
            transaction_id=dereg.transaction_id, status=ErrorCode.SUCCESS, trace=dereg.trace))
        bound = self.handles.pop(dereg.agent_id, None)
        self.outbox.emit(AgentRemoved(
            VersionedId(dereg.agent_id, inp.version), ErrorCode.SUCCESS,
            bound=bound if bound not in (None, inp.source) else None))

    def _refuse(self, now: float, inp: Refused) -> None:
        req = inp.request
        answer: Message
        if isinstance(req, Register):
            answer = RegisterAck(transaction_id=req.transaction_id, status=inp.status,
                                 diagnostic=inp.diagnostic, trace=req.trace)
        elif isinstance(req, Refresh):
            answer = RefreshAck(transaction_id=req.transaction_id, status=inp.status,
                                diagnostic=inp.diagnostic, trace=req.trace)
        else:
            answer = DeregisterAck(transaction_id=req.transaction_id, status=inp.status,
                                   trace=req.trace)
        self.outbox.send(inp.source, answer)

    def _expire(self, now: float, inp: LeaseEnded) -> None:
        self.handles.pop(inp.removed.agent_id, None)
        self.outbox.emit(AgentRemoved(inp.removed, ErrorCode.LEASE_EXPIRED))
