"""Registration, gateway side (draft-dmsc-protocol-00, Section 5.1); the agent side is
:mod:`.agent_registration`.

:class:`GatewayRegistration` answers REGISTER, REFRESH and DEREGISTER at the gateway.
Its per-agent state is read from the :class:`~dmscproto.gateway.core.GatewayCore` (a
local record is REGISTERED), so it survives a restart; REGISTER_ACK is sent only after
the core has committed the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..codec.cose import SignedRecord
from ..codec.messages import (
    Deregister,
    DeregisterAck,
    Message,
    Refresh,
    RefreshAck,
    Register,
    RegisterAck,
)
from ..codec.registry import ErrorCode, MessageType
from ..codec.signing import SignatureError, verify_record
from ..codec.wire import VersionedId
from .events import (
    AgentRegistered,
    AgentRemoved,
    GatewayRegistrationEvent,
)
from .machine import (
    Handle,
    Outbox,
    Refusal,
    expect,
)
from .ports import RegisterOutcome, RegistrationTable
from .typed import StepInput, TypedMachine

#: Checks a signed record before it is stored or learned, given the association it came
#: from (an agent's REGISTER, a peer's UPDATE) and ``now``; returns the refusal, or None.
RecordVerifier = Callable[[Handle, SignedRecord, float], Refusal | None]


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
    EVENTS = GatewayRegistrationEvent
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
        self.run_from(before, self._decide(source, msg, now), now)
        # The table's next state is what the registry now holds: they cannot disagree.
        assert self.state_of(aid) is self.state, aid.hex()

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
            self.run_from(_GS.REGISTERED, LeaseEnded(vid), now)
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
