"""Trace context, OpenTelemetry spans and logs of each hop (draft-dmsc-protocol-00,
Section 7.5).

:class:`GatewayHops` is the gateway's :class:`~dmscproto.protocol.tracecontext.HopTracer`:
every ROUTE_REQUEST, TRACE_REQUEST and DISCOVER the gateway relays or answers is one
hop, and each hop

* sends on a traceparent with the incoming trace-id and its own span id as parent-id
  (:func:`~dmscproto.protocol.tracecontext.hop_context`);
* with ``opentelemetry-api`` installed and a recording ``TracerProvider`` (the global
  one, or the one given), is an OpenTelemetry span (kind SERVER, named ``dmsc`` and the
  request type, attributes ``dmsc.gateway``, ``dmsc.domain`` and ``dmsc.status``) whose
  parent is the incoming traceparent, so that a trace collector joins the hops of all
  gateways and agents into one trace; the span id sent on is the span's own (also when
  the provider's sampler drops the span), and a request without a usable traceparent
  starts a new trace;
* logs one DEBUG line when it ends (``routed call``, ``trace`` or ``discovery``, with
  the trace id, source, target, status and latency) and one INFO line
  (``request refused``) when this gateway, not the next hop, answered with an error.

:class:`AgentSpans` does the same for the SDK: it creates the TRACE_CONTEXT of a request
when the caller gives none (a CLIENT span's, child of the current OpenTelemetry
context, or a new trace) and records a SERVER span around the handler of a request
delivered to the agent.  Without ``opentelemetry-api`` only the trace context and the
logs remain.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..codec.registry import ErrorCode, MessageType
from ..codec.values import TraceContext
from ..protocol.tracecontext import (
    SAMPLED,
    SPAN_ID_SIZE,
    TRACE_ID_SIZE,
    Hop,
    TraceParent,
    hop_context,
    new_ids,
    new_span_id,
    start_trace,
    trace_id_of,
)
from .logs import facts

try:
    from opentelemetry import trace as otel
    from opentelemetry.context import Context
except ImportError:  # the optional extra "telemetry"
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger("dmsc.gateway")

#: The DEBUG line of a hop, by request type.
_WHAT = {MessageType.ROUTE_REQUEST: "routed call", MessageType.TRACE_REQUEST: "trace",
         MessageType.DISCOVER: "discovery"}
#: Read at the end of every hop, bound once: an Enum member read is ~60 ns on 3.11 (timeit).
_SUCCESS = ErrorCode.SUCCESS


#: Whether the API keeps its global provider where :meth:`_Recorder.tracer` reads it
#: (an attribute read, not a ``getattr`` call with a default, each hop).
_GLOBAL_READ = otel is not None and hasattr(otel, "_TRACER_PROVIDER")


class _Recorder:
    """The OpenTelemetry tracer of ``provider``, or of the global provider once one that
    records is set (None until then: the API's proxy would only hand out no-op spans,
    at a cost)."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self._tracer: Tracer | None = None
        self._of: object = None
        if otel is not None and provider is None:
            otel.get_tracer_provider()  # loads one OTEL_PYTHON_TRACER_PROVIDER names

    def tracer(self) -> Tracer | None:
        """The tracer, or None when nothing records.  Without a provider given, the
        global one: OpenTelemetry's module global, read directly, once one is set (it
        is set at most once; ``get_tracer_provider()`` looks up an environment variable
        on every call until then, a microsecond for every request and hop), the API's
        own call when the module has none; its proxy (none set yet) records nothing."""
        if otel is None:
            return None
        tp: Any = self.provider  # Any: no cast() call per hop
        if tp is None:
            tp = otel._TRACER_PROVIDER if _GLOBAL_READ else otel.get_tracer_provider()
            if tp is None:
                return None
        if tp is not self._of:
            self._of = tp
            self._tracer = None if isinstance(tp, otel.ProxyTracerProvider
                                               | otel.NoOpTracerProvider) \
                else tp.get_tracer("dmscproto")
        return self._tracer


def _parent_context(parent: TraceParent | None, state: str | None) -> Context:
    """The OpenTelemetry context whose span is the remote ``parent`` (an empty context,
    a new trace, without one)."""
    assert otel is not None
    if parent is None:
        return Context()
    ctx = otel.SpanContext(int.from_bytes(parent.trace_id), int.from_bytes(parent.parent_id),
                           is_remote=True, trace_flags=otel.TraceFlags(parent.flags & SAMPLED),
                           trace_state=otel.TraceState.from_header([state]) if state else None)
    return otel.set_span_in_context(otel.NonRecordingSpan(ctx), Context())


def _sent(span: Span, state: str | None) -> TraceContext:
    """The TRACE_CONTEXT of ``span``, to send on with ``state`` as tracestate."""
    sc = span.get_span_context()
    return TraceContext(str(TraceParent(sc.trace_id.to_bytes(TRACE_ID_SIZE),
                                        sc.span_id.to_bytes(SPAN_ID_SIZE),
                                        SAMPLED if sc.trace_flags.sampled else 0)), state)


def _start_span(tracer: Tracer | None, request: MessageType, incoming: TraceContext | None
                ) -> tuple[Span | None, TraceContext | None]:
    """A SERVER span of ``request`` child of ``incoming`` (a root span without a usable
    one), if it records, and the TRACE_CONTEXT it sends on (the incoming tracestate, if
    the traceparent was usable); (None, None) without a recording tracer."""
    if tracer is None:
        return None, None
    assert otel is not None
    parent = None if incoming is None else TraceParent.parse(incoming.traceparent)
    state = incoming.tracestate if parent is not None and incoming is not None else None
    span = tracer.start_span(f"dmsc {request.name}", context=_parent_context(parent, state),
                             kind=otel.SpanKind.SERVER)
    # a span the sampler dropped still has its own id: sent on, nothing to end
    return span if span.is_recording() else None, _sent(span, state)


def _end_span(span: Span, status: ErrorCode, diagnostic: str | None) -> None:
    assert otel is not None
    span.set_attribute("dmsc.status", status.name)
    if status is not ErrorCode.SUCCESS:
        span.set_status(otel.Status(otel.StatusCode.ERROR, diagnostic or status.name))
    span.end()


class _GatewayHop:
    """One hop at a gateway (:class:`~dmscproto.protocol.tracecontext.Hop`)."""

    __slots__ = ("context", "request", "span", "started")

    def __init__(self, request: MessageType, context: TraceContext | None,
                 span: Span | None) -> None:
        self.request = request
        self.context = context
        self.span = span
        self.started = time.perf_counter()

    def end(self, status: ErrorCode, diagnostic: str | None = None,
            source: bytes | None = None, target: bytes | None = None,
            relayed: bool = False) -> None:
        if self.span is not None:
            _end_span(self.span, status, diagnostic)
        refused = status is not _SUCCESS and not relayed
        debug = log.isEnabledFor(logging.DEBUG)
        if not refused and not debug:
            return
        who = {"source": source.hex() if source else None,
               "target": target.hex() if target else None}
        if refused:
            log.info("request refused", extra=facts(
                request=self.request, status=status, reason=diagnostic,
                trace_id=trace_id_of(self.context), **who))
        if debug:
            log.debug(_WHAT.get(self.request, self.request.name), extra=facts(
                trace_id=trace_id_of(self.context), **who, status=status,
                latency_ms=round((time.perf_counter() - self.started) * 1e3, 3)))


class GatewayHops:
    """The gateway's hops (module docstring): ``gateway`` and ``domain`` name it in its
    spans; ``provider`` is the OpenTelemetry ``TracerProvider`` (default: the global
    one)."""

    def __init__(self, gateway: str, domain: str, *,
                 provider: TracerProvider | None = None) -> None:
        rng = random.Random()
        self.ids, self.bits = new_ids(rng), rng.getrandbits
        self.attributes = {"dmsc.gateway": gateway, "dmsc.domain": domain}
        self._recorder = _Recorder(provider)

    def begin(self, request: MessageType, incoming: TraceContext | None) -> Hop:
        tracer = self._recorder.tracer()
        if tracer is None:  # nothing records: a span id of our own
            return _GatewayHop(request, hop_context(incoming, new_span_id(self.bits), self.ids),
                               None)
        span, sent = _start_span(tracer, request, incoming)
        if span is not None:
            span.set_attributes(self.attributes)
        return _GatewayHop(request, sent, span)


class AgentSpans:
    """The SDK's side of the trace (module docstring); ``provider`` as for
    :class:`GatewayHops`."""

    def __init__(self, agent: str, *, provider: TracerProvider | None = None) -> None:
        self.ids = new_ids()
        self.attributes = {"dmsc.agent": agent}
        self._recorder = _Recorder(provider)

    def request(self, request: MessageType, trace: TraceContext | None
                ) -> tuple[TraceContext, AbstractContextManager[object] | None]:
        """The TRACE_CONTEXT to send a request with, and a context manager spanning the
        wait for its answer (None when there is no span to end): the caller's ``trace``
        unchanged if given, else a CLIENT span's (child of the current OpenTelemetry
        span, if any), else a new trace."""
        tracer = self._recorder.tracer()
        if trace is not None or tracer is None:
            return trace or start_trace(self.ids), None
        assert otel is not None
        span = tracer.start_span(f"dmsc {request.name}", kind=otel.SpanKind.CLIENT,
                                 attributes=self.attributes)
        state = span.get_span_context().trace_state.to_header() or None
        if not span.is_recording():  # dropped by the sampler: its id, nothing to end
            return _sent(span, state), None
        return _sent(span, state), otel.use_span(span, end_on_exit=True)

    def serve(self, request: MessageType, trace: TraceContext | None
              ) -> AbstractContextManager[object] | None:
        """A SERVER span, child of the request's traceparent, to run its handler in (the
        handler's own spans nest in it); None when no span records."""
        tracer = self._recorder.tracer()
        if tracer is None:  # nothing records (the common case: no span to start)
            return None
        span, _sent_on = _start_span(tracer, request, trace)
        if span is None:
            return None
        assert otel is not None
        span.set_attributes(self.attributes)
        return otel.use_span(span, end_on_exit=True)
