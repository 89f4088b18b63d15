"""OpenTelemetry for the benchmarks' ``--metrics`` runs (issue 11 item 8).

:func:`provider` is a ``TracerProvider`` (opentelemetry-sdk) that records every span and
hands it to a ``BatchSpanProcessor``, as a deployment exporting to a collector would;
the exporter then drops the batches, so the cost measured is the spans' creation,
recording and batching, not an exporter's encoding or network.  :data:`GATEWAY` is the
``python -c`` code that starts ``dmsc gateway`` with it installed as the global provider
(what ``opentelemetry-instrument dmsc gateway`` does with a configured exporter).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

GATEWAY = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
           "import traced; traced.install(); "
           "from dmscproto.cli import main; sys.exit(main())")


class Discard(SpanExporter):
    """Counts the spans exported and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def provider() -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(BatchSpanProcessor(Discard()))
    return p


def install() -> None:
    """Make :func:`provider` the process's global TracerProvider."""
    trace.set_tracer_provider(provider())
