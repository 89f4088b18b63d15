"""The gateway's counters (draft-dmsc-yang-00, Section 3; issue 11 item 3).

Cheap on the hot path: every PDU a gateway sends or receives costs a dictionary
lookup and one or two list increments (:meth:`GatewayMetrics.received`,
:meth:`GatewayMetrics.sent`), with no third-party object touched.  The exposition
formats are built from these plain integers only when asked: the RFC 7951 state document
(:mod:`.restconf`) and the Prometheus text (:mod:`.prometheus`, on scrape).

Counted per association (:class:`LinkStats`, an agent's or a peer gateway's
connection): PDUs in and out by message type, errors (a non-SUCCESS STATUS in an
answer, ERROR or NOTIFY) by code, the ADVERTISE entries a peer sent and what became of
them, DIGESTs and the time spent on them.  When an association ends its PDU and error
counts are folded into the per-transport totals, so gateway-wide counters never go
back.  Latencies: routed calls (ROUTE_REQUEST received to its ROUTE_REPLY or ERROR sent)
and discoveries (DISCOVER to DISCOVER_REPLY or ERROR), as histograms.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..codec.messages import MESSAGE_CLASSES, Message, Update
from ..codec.registry import ErrorCode, MessageType
from ..protocol.events import RecordRefused, SessionClosed, SessionEstablished, TableChanged
from ..protocol.machine import Handle

_M = MessageType
#: Message types whose PDU carries a STATUS (answers, ERROR, NOTIFY).
WITH_STATUS = frozenset(MessageType(t) for t, cls in MESSAGE_CLASSES.items()
                        if "status" in cls.__dataclass_fields__)
#: Requests whose time to answer is measured, by the answer types that end them.
_TIMED = {_M.ROUTE_REQUEST: frozenset({_M.ROUTE_REPLY, _M.ERROR}),
          _M.DISCOVER: frozenset({_M.DISCOVER_REPLY, _M.ERROR})}
_ANSWERS = frozenset().union(*_TIMED.values())
#: One slot per possible message type code (8 bits).
_TYPES = 256
#: Histogram bucket upper bounds in seconds (the last, +Inf, is implicit).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Observations counted in fixed buckets (cumulated only when exported)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at most that)``, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(eq=False, slots=True)
class LinkStats:
    """The counters of one association (an agent's or a peer gateway's connection)."""

    transport: str
    #: When the association was first seen (seconds since the epoch).
    since: float
    inp: list[int] = field(default_factory=lambda: [0] * _TYPES)
    out: list[int] = field(default_factory=lambda: [0] * _TYPES)
    errors_in: dict[int, int] = field(default_factory=dict)
    errors_out: dict[int, int] = field(default_factory=dict)
    #: ADVERTISE entries received, those learned (a new version or route) and refused.
    records_received: int = 0
    records_accepted: int = 0
    records_refused: int = 0
    #: DIGESTs received and the time spent handling them.
    digests: int = 0
    digest_seconds: float = 0.0
    #: The peer session: when it was established, its gateway id, and the last error
    #: sent or received on it (code, "sent" or "received", time, diagnostic).
    established_at: float | None = None
    hold_time: int | None = None
    last_error: tuple[int, str, float, str | None] | None = None


@dataclass(slots=True)
class _Totals:
    """PDU and error counts of one transport, the ended associations' included."""

    inp: list[int] = field(default_factory=lambda: [0] * _TYPES)
    out: list[int] = field(default_factory=lambda: [0] * _TYPES)
    errors_in: dict[int, int] = field(default_factory=dict)
    errors_out: dict[int, int] = field(default_factory=dict)


def _add(into: list[int] | dict[int, int], counts: list[int] | dict[int, int]) -> None:
    items = counts.items() if isinstance(counts, dict) else enumerate(counts)
    for key, n in items:
        if n:
            into[key] = into.get(key, 0) + n if isinstance(into, dict) else into[key] + n


class GatewayMetrics:
    """Every counter of one gateway (module docstring).  ``transport_of(handle)`` names
    an association's transport; ``clock`` gives seconds since the epoch."""

    def __init__(self, transport_of: Callable[[Handle], str],
                 clock: Callable[[], float] = time.time) -> None:
        self.transport_of = transport_of
        self.clock = clock
        #: When counting started (the counters' discontinuity time).
        self.started = clock()
        self.links: dict[Handle, LinkStats] = {}
        self._ended: dict[str, _Totals] = {}
        self._pending: dict[tuple[Handle, int], tuple[MessageType, float]] = {}
        self.routed_calls = Histogram()
        #: Routed calls by the status of their answer (SUCCESS included).
        self.routed_by_status: dict[int, int] = {}
        self.discoveries = Histogram()

    def link(self, handle: Handle) -> LinkStats:
        """The counters of ``handle`` (created on first use)."""
        s = self.links.get(handle)
        if s is None:
            s = self.links[handle] = LinkStats(self.transport_of(handle), self.clock())
        return s

    # --- the hot path: one call per PDU --------------------------------------------------
    def received(self, handle: Handle, msg: Message) -> None:
        s = self.links.get(handle) or self.link(handle)
        t = msg.TYPE
        s.inp[t] += 1
        if t in _TIMED:
            self._pending[(handle, msg.transaction_id)] = (t, time.perf_counter())
        elif t in WITH_STATUS and msg.status:  # type: ignore[attr-defined]
            code = int(msg.status)  # type: ignore[attr-defined]
            s.errors_in[code] = s.errors_in.get(code, 0) + 1
            if t is _M.NOTIFY:
                s.last_error = (code, "received", self.clock(), _diagnostic(msg))
        elif isinstance(msg, Update):
            s.records_received += len(msg.advertise)

    def sent(self, handle: Handle, msg: Message) -> None:
        s = self.links.get(handle) or self.link(handle)
        t = msg.TYPE
        s.out[t] += 1
        status = msg.status if t in WITH_STATUS else 0  # type: ignore[attr-defined]
        if status:
            code = int(status)
            s.errors_out[code] = s.errors_out.get(code, 0) + 1
            if t is _M.NOTIFY:
                s.last_error = (code, "sent", self.clock(), _diagnostic(msg))
        if t in _ANSWERS:
            started = self._pending.pop((handle, msg.transaction_id), None)
            if started is not None and t in _TIMED[started[0]]:
                elapsed = time.perf_counter() - started[1]
                if started[0] is _M.ROUTE_REQUEST:
                    self.routed_calls.observe(elapsed)
                    self.routed_by_status[status] = self.routed_by_status.get(status, 0) + 1
                else:
                    self.discoveries.observe(elapsed)

    def digest_handled(self, handle: Handle, seconds: float) -> None:
        """A DIGEST from ``handle`` took ``seconds`` to handle."""
        s = self.link(handle)
        s.digests += 1
        s.digest_seconds += seconds

    # --- events --------------------------------------------------------------------------
    def event(self, event: object) -> None:
        """A node event: sessions established and closed, records learned or refused."""
        if isinstance(event, SessionEstablished):
            s = self.link(event.handle)
            s.established_at, s.hold_time = self.clock(), event.hold_time
        elif isinstance(event, SessionClosed):
            s = self.link(event.handle)
            s.established_at = None
            if event.status is not ErrorCode.SUCCESS and (
                    s.last_error is None or s.last_error[0] != event.status):
                s.last_error = (int(event.status), "received" if event.by_peer else "sent",
                                self.clock(), None)
        elif isinstance(event, TableChanged):
            self.link(event.from_handle).records_accepted += len(event.advertised)
        elif isinstance(event, RecordRefused):
            self.link(event.handle).records_refused += 1

    def ended(self, handle: Handle) -> None:
        """The association ``handle`` is gone: fold its counts into its transport's."""
        s = self.links.pop(handle, None)
        if s is None:
            return
        totals = self._ended.setdefault(s.transport, _Totals())
        _add(totals.inp, s.inp)
        _add(totals.out, s.out)
        _add(totals.errors_in, s.errors_in)
        _add(totals.errors_out, s.errors_out)
        for key in [k for k in self._pending if k[0] is handle]:
            del self._pending[key]

    # --- totals (for the exporters) ------------------------------------------------------
    def totals(self) -> dict[str, _Totals]:
        """PDU and error counts by transport, ended and live associations together."""
        out = {name: _Totals(list(t.inp), list(t.out), dict(t.errors_in),
                             dict(t.errors_out)) for name, t in self._ended.items()}
        for s in self.links.values():
            t = out.setdefault(s.transport, _Totals())
            _add(t.inp, s.inp)
            _add(t.out, s.out)
            _add(t.errors_in, s.errors_in)
            _add(t.errors_out, s.errors_out)
        return out

    def errors(self) -> tuple[dict[int, int], dict[int, int]]:
        """Errors sent and received by code, over every transport."""
        sent: dict[int, int] = {}
        received: dict[int, int] = {}
        for t in self.totals().values():
            _add(sent, t.errors_out)
            _add(received, t.errors_in)
        return sent, received


def message_counts(counts: list[int]) -> Iterable[tuple[MessageType, int]]:
    """The non-zero counts of registered message types, in registry order."""
    return ((m, counts[m]) for m in MessageType if counts[m])


def _diagnostic(msg: Message) -> str | None:
    return getattr(msg, "diagnostic", None)

