"""Traces end to end, on the broker: a trigger's ``traceparent`` reaches every receipt,
outbox event and dispatch of its run; the reference executor continues it; the worker's and
the executor's spans, exported over OTLP/HTTP to a receiver in this test, form one tree with
the producer's span at its root."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from personaflow.embedded import free_port
from personaflow.process import ExecutorProcess
from streams import tracing

from ..support.cluster import SyncWorker, own_pipeline
from ..support.personas import PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    found = {
                        "service": service,
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex() or None,
                        "attributes": {a.key: a.value.string_value or a.value.int_value for a in span.attributes},
                    }
                    with self.server.lock:
                        self.server.spans.append(found)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def traced(settings, broker, data_dir) -> Iterator[tuple[Collector, Any]]:
    """A worker and a reference executor of a pipeline of their own, exporting spans to a collector."""
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    patch = pytest.MonkeyPatch()
    patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    try:
        with own_pipeline(settings, broker, "trace", web_port=free_port()) as (own, kafka):
            worker = SyncWorker(own, kafka, data_dir / f"logs-{own.app_id}")
            executor = ExecutorProcess(own, data_dir / f"logs-{own.app_id}", group=f"{own.app_id}-executor")
            try:
                worker.start()
                executor.spawn()
                asyncio.run(executor.wait_ready())
                yield collector, kafka
            finally:
                executor.stop()
                worker.stop()
    finally:
        patch.undo()
        collector.shutdown()


def test_a_triggers_trace_reaches_every_record_of_its_run_and_the_spans_form_one_tree(traced, persona_name):
    collector, kafka = traced
    producer = TracerProvider()
    memory = InMemorySpanExporter()
    producer.add_span_processor(SimpleSpanProcessor(memory))
    probe = PersonaProbe(kafka, persona_name)
    try:
        probe.bind({"execution": "external", "entry_workflow": "wf/review"})
        with producer.get_tracer("webhook-bridge").start_as_current_span("github webhook") as root:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
        trace_id = f"{root.get_span_context().trace_id:032x}"
        request = {"request_id": f"{persona_name}-r1", "persona": persona_name, "provider": "github",
                   "kind": "pull_request", "metadata": {"repository": "acme/app", "number": "7",
                   "executor.steps": "2"}}  # fmt: skip
        kafka.send("triggers", persona_name, request, headers=[("traceparent", carrier["traceparent"])])
        final = probe.final_receipt(request["request_id"])
        assert final["status"] == "completed"
        run_id = final["run_id"]

        receipts = probe.receipts_for(request["request_id"], 2)
        events = [e for e in probe.events() if e.get("run_id") == run_id]
        dispatches = probe.dispatches_of(run_id)
        carried = {tracing.parse(r["trace"]["traceparent"]).trace_id for r in (*receipts, *events, *dispatches)}
        assert carried == {trace_id}, carried

        def tree() -> list[dict[str, Any]]:
            with collector.lock:
                spans = [s for s in collector.spans if s["trace_id"] == trace_id]
            names = {s["name"] for s in spans}
            final_span = tracing.parse(final["trace"]["traceparent"]).span_id
            wanted = {"persona.trigger", "dispatch.start", "run wf/review", "step s1", "step s2"}
            return spans if wanted <= names and final_span in {s["span_id"] for s in spans} else []

        spans = eventually(tree, what="the run's spans at the collector")
        by_id = {s["span_id"]: s for s in spans}
        by_id[f"{root.get_span_context().span_id:016x}"] = {"name": "github webhook", "parent_id": None}
        for span in spans:  # one tree: every span's parent is a span of the trace
            assert span["parent_id"] in by_id, span

        def chain(span_id: str) -> list[str]:
            names = []
            while span_id is not None:
                names.append(by_id[span_id]["name"])
                span_id = by_id[span_id]["parent_id"]
            return names[::-1]

        final_chain = chain(tracing.parse(final["trace"]["traceparent"]).span_id)
        assert final_chain[:4] == ["github webhook", "persona.trigger", "dispatch.start", "run wf/review"]
        assert final_chain[-1] == "persona.run_report"
        step = next(s for s in spans if s["name"] == "step s2")
        assert chain(step["span_id"]) == ["github webhook", "persona.trigger", "dispatch.start", "run wf/review",
                                          "step s2"]  # fmt: skip
        transition = next(s for s in spans if s["name"] == "persona.trigger")
        assert transition["attributes"]["personaflow.persona"] == persona_name
        assert transition["attributes"]["personaflow.decision"] == "dispatched"
        print("\n".join(" > ".join(chain(s["span_id"])) for s in spans))
    finally:
        probe.close()
