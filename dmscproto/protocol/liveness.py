"""Agent keepalive: an agent's watch on its home gateway (draft-dmsc-protocol-00, Section
6.8.3; draft-dmsc-state-machines-00).

An agent that has heard nothing from its gateway for its keepalive interval
(AGENT_KEEPALIVE by default) sends ECHO_REQUEST, and again every interval while the
silence lasts; anything received from the gateway (an ECHO_REPLY, any answer, any
request) ends the silence.  After the agent hold time, the keepalive interval divided
by KEEPALIVE_FRACTION (three intervals), of silence, the gateway is lost
(:class:`~.events.GatewayLost`): the agent closes the association and reconnects as
after any lost connection.  A dead gateway is thus noticed in three keepalive intervals,
not at the transport's idle timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..codec.registry import MessageType, timer
from .events import AgentEvent, GatewayLost
from .machine import Outbox
from .ports import LivenessPort
from .typed import StepInput, TypedMachine


class LivenessState(Enum):
    IDLE = "IDLE"
    WATCHING = "WATCHING"
    PROBING = "PROBING"
    LOST = "LOST"


class LivenessInput(Enum):
    START = "watch()"
    HEARD = "any message from the gateway"
    QUIET = "keepalive timer"
    SILENT = "agent hold timer"


class LivenessAction(Enum):
    RESTART = "restart the keepalive and agent hold timers"
    PROBE = "send ECHO_REQUEST; restart the keepalive timer"
    DECLARE_LOST = "stop both timers; report GatewayLost"
    IGNORE = "nothing"


_S, _I, _A = LivenessState, LivenessInput, LivenessAction


@dataclass(frozen=True, slots=True)
class Watch(StepInput):
    KIND = _I.START


@dataclass(frozen=True, slots=True)
class Heard(StepInput):
    KIND = _I.HEARD


@dataclass(frozen=True, slots=True)
class Quiet(StepInput):
    KIND = _I.QUIET


@dataclass(frozen=True, slots=True)
class Silent(StepInput):
    KIND = _I.SILENT


#: The inputs that carry nothing (one each, not one per message received).
_HEARD = Heard()


class GatewayLiveness(TypedMachine):
    """One agent's watch on its home gateway (module docstring)."""

    NAME = "agent-keepalive"
    TITLE = "Agent keepalive (agent side)"
    EVENTS = AgentEvent
    State, Input, Action = LivenessState, LivenessInput, LivenessAction
    INITIAL = LivenessState.IDLE
    TIMERS = ("AGENT_KEEPALIVE", "KEEPALIVE_FRACTION")
    MESSAGE_INPUTS = {t: (_I.HEARD,) for t in MessageType}
    TABLE = {
        (_S.IDLE, _I.START): (_A.RESTART, _S.WATCHING),
        (_S.IDLE, _I.HEARD): (_A.IGNORE, _S.IDLE),
        (_S.WATCHING, _I.HEARD): (_A.RESTART, _S.WATCHING),
        (_S.WATCHING, _I.QUIET): (_A.PROBE, _S.PROBING),
        (_S.WATCHING, _I.SILENT): (_A.DECLARE_LOST, _S.LOST),
        (_S.PROBING, _I.HEARD): (_A.RESTART, _S.WATCHING),
        (_S.PROBING, _I.QUIET): (_A.PROBE, _S.PROBING),
        (_S.PROBING, _I.SILENT): (_A.DECLARE_LOST, _S.LOST),
        (_S.LOST, _I.HEARD): (_A.IGNORE, _S.LOST),
    }

    def __init__(self, outbox: Outbox, port: LivenessPort,
                 keepalive: float = timer("AGENT_KEEPALIVE")) -> None:
        super().__init__(outbox)
        self.port = port
        self.keepalive = keepalive
        #: The agent hold time: three keepalive intervals.
        self.hold = keepalive / timer("KEEPALIVE_FRACTION")
        self._heard_at = 0.0
        self._quiet_at: float | None = None
        self._silent_at: float | None = None

    def watch(self, now: float) -> None:
        """Start watching (the association is open)."""
        self.run(Watch(), now)

    def heard(self, now: float) -> None:
        """A message came from the gateway (any: the silence ends)."""
        self.run(_HEARD, now)

    def get_timer(self) -> float | None:
        # earliest(quiet, silent) without the call: asked for after every turn
        quiet, silent = self._quiet_at, self._silent_at
        return quiet if silent is None or (quiet is not None and quiet <= silent) else silent

    def handle_timer(self, now: float) -> None:
        if self._silent_at is not None and now >= self._silent_at:
            self.run(Silent(), now)
        elif self._quiet_at is not None and now >= self._quiet_at:
            self.run(Quiet(), now)

    # --- actions ------------------------------------------------------------------------------
    def _restart(self, now: float, inp: Watch | Heard) -> None:
        self._heard_at = now
        self._quiet_at, self._silent_at = now + self.keepalive, now + self.hold

    def _probe(self, now: float, inp: Quiet) -> None:
        self.port.probe(now)
        self._quiet_at = now + self.keepalive

    def _declare_lost(self, now: float, inp: Silent) -> None:
        self._quiet_at = self._silent_at = None
        self.outbox.emit(GatewayLost(now - self._heard_at))

    def _ignore(self, now: float, inp: Heard) -> None:
        """Nothing is watched (not started, or already lost)."""
