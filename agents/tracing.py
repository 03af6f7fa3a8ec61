"""Spans of the transitions, to OpenTelemetry.

A transition describes its spans as data (:class:`streams.tracing.Span`), with ids derived
from its input, because the records it publishes name them (``trace.traceparent``) and a
replay must give the same ids. This module hands them to the OpenTelemetry SDK as they
are: the SDK's id generator is told each span's ids before the span starts.

Spans are exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP over HTTP, the
SDK's ``OTEL_*`` variables apply); otherwise nothing is recorded and transitions are not
asked for spans. A span is exported after its pass was processed, before its commit: a
pass that is processed again after a crash exports its spans again, with the same ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from streams.tracing import Span

SERVICE = "personaflow-worker"


class GivenIds(IdGenerator):
    """Ids set just before a span starts (else random). The worker's loop is one thread."""

    def __init__(self) -> None:
        self.trace_id: int | None = None
        self.span_id: int | None = None
        self._random = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        return self.trace_id if self.trace_id is not None else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        return self.span_id if self.span_id is not None else self._random.generate_span_id()


class SpanSink:
    """Exports the spans transitions describe through a tracer provider of its own."""

    def __init__(self, exporter: SpanExporter, service: str = SERVICE) -> None:
        self.ids = GivenIds()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=self.ids)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("personaflow.transitions")

    def export(self, spans: Iterable[Span], start_ns: int, end_ns: int) -> None:
        for span in spans:
            trace_id = int(span.trace_id, 16)
            if span.parent_id is None:
                context = None
            else:
                parent = SpanContext(trace_id, int(span.parent_id, 16), True, TraceFlags(TraceFlags.SAMPLED))
                context = trace.set_span_in_context(NonRecordingSpan(parent))
            self.ids.trace_id, self.ids.span_id = trace_id, int(span.span_id, 16)
            try:
                started = self.tracer.start_span(
                    span.name, context=context, attributes=span.attributes, start_time=start_ns
                )
            finally:
                self.ids.trace_id = self.ids.span_id = None
            started.end(end_time=end_ns)

    def close(self) -> None:
        self.provider.shutdown()


def from_environment() -> SpanSink | None:
    """An OTLP/HTTP sink if ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its traces variant) is set."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    return SpanSink(OTLPSpanExporter(), os.environ.get("OTEL_SERVICE_NAME", SERVICE))
