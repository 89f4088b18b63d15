"""Probing a peer that relayed transactions wait on (draft-dmsc-protocol-00, Section
6.1.1): the actions of :class:`~.peering.PeerSession`'s probe rows.

While a relayed transaction waits on an established session (the port says so), the
session probes the peer: after PROBE_IDLE_FRACTION of the keepalive interval without
hearing from it, it sends ECHO_REQUEST; if it then hears nothing for
PROBE_TIMEOUT_FRACTION of the interval, it closes as if the hold timer had expired, so
a call in flight through a dead next hop fails in well under a keepalive interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..codec.messages import EchoRequest, Message
from ..codec.registry import ErrorCode, timer
from .machine import TransactionIds, timestamp_ms
from .peering_inputs import ProbeDue, ProbeIdle, ProbeLost, Watch


class _Close(Protocol):
    def __call__(self, status: ErrorCode, *, by_peer: bool) -> None: ...


class SessionProbe:
    """The probe part of :class:`~.peering.PeerSession` (its base, which sets the
    attributes declared here; module doc)."""

    keepalive: float | None
    _probe_at: float | None
    _probe_deadline: float | None
    _probes: int
    _txids: TransactionIds
    _send: Callable[[Message], None]
    _notify: Callable[[ErrorCode, str | None], None]
    _close: _Close

    def _probe_idle(self) -> float:
        assert self.keepalive is not None
        return self.keepalive * timer("PROBE_IDLE_FRACTION")

    def _start_probing(self, now: float, inp: Watch) -> None:
        if self._probe_at is None and self._probe_deadline is None:
            self._probe_at = now + self._probe_idle()

    def _send_probe(self, now: float, inp: ProbeDue) -> None:
        assert self.keepalive is not None
        self._probes += 1
        self._send(EchoRequest(transaction_id=self._txids(), sequence=self._probes,
                               timestamp=timestamp_ms(now)))
        self._probe_at = None
        self._probe_deadline = now + self.keepalive * timer("PROBE_TIMEOUT_FRACTION")

    def _stop_probing(self, now: float, inp: ProbeIdle) -> None:
        self._probe_at = None

    def _probe_expire(self, now: float, inp: ProbeLost) -> None:
        self._notify(ErrorCode.HOLD_TIMER_EXPIRED, "no answer to the probe of a peer that "
                     "relayed transactions wait on")
        self._close(ErrorCode.HOLD_TIMER_EXPIRED, by_peer=False)
