"""Traces through the pure persona transition: every receipt, outbox event and dispatch of a
run carries its request's trace; the transition's spans form one tree with the executor's;
a replay gives the same ids."""

from __future__ import annotations

from typing import Any

import msgspec

from streams import tracing, wire
from streams.inbox import BindingChanged, RunReportReceived, TriggerReceived
from streams.tracing import Span
from tables import persona as transition
from tables.store import MemoryStore

from .harness import T0, request, seen
from .test_execution import P, Runs, runner

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER = "00f067aa0ba902b7"


class Traced(Runs):
    """The run harness, keeping the spans each transition produced."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Span] = []

    def feed(self, record: Any, position: int | None = None) -> list[Any]:
        txn = self.store.transaction()
        outputs = seen(transition.apply(txn, record, next(self.offsets), self.spans))
        self.store.apply(txn)
        self.outputs.extend(outputs)
        return outputs

    def traced_trigger(self, request_id: str, trace: wire.Trace | None, number: int = 1) -> None:
        req = request(P, "github", "pull_request", {"repository": "r", "number": str(number)}, request_id=request_id)
        self.feed(TriggerReceived(at_ms=T0, request=_with(req, trace=trace)))

    def report_from(self, run_id: str, kind: str, span: str, **fields: Any) -> None:
        event = wire.RunEvent(
            event_id=f"ev-{next(self.ids)}", run_id=run_id, lease_id=self.lease(run_id), kind=kind,
            trace=wire.Trace(traceparent=f"00-{TRACE}-{span}-01"), **fields,
        )  # fmt: skip
        self.feed(RunReportReceived(at_ms=T0 + 1, persona=P, event=event))


def _with(struct: Any, **changes: Any) -> Any:
    return msgspec.structs.replace(struct, **changes)


def trace_of(record: Any) -> tracing.SpanContext:
    parsed = tracing.parse(record.trace.traceparent)
    assert parsed is not None, record
    return parsed


def test_a_runs_receipts_events_and_dispatches_carry_the_producers_trace_and_its_spans_form_one_tree():
    h = Traced()
    h.bind(runner())
    h.traced_trigger("req-1", wire.Trace(traceparent=f"00-{TRACE}-{PRODUCER}-01", tracestate="vendor=1", baggage="k=v"))
    [dispatch] = h.dispatches()
    run_id = dispatch.run_id
    assert (dispatch.trace.tracestate, dispatch.trace.baggage) == ("vendor=1", "k=v")  # handed on to the executor
    executor_span = "1111111111111111"  # the executor's span, a child of the dispatch's
    h.report_from(run_id, "started", executor_span)
    h.report_from(run_id, "completed", executor_span)
    receipts, events = h.receipts("req-1"), [e for e in h.events() if e.run_id == run_id]
    assert [r.status for r in receipts] == ["dispatched", "completed"]
    assert {trace_of(x).trace_id for x in (*receipts, *events, dispatch)} == {TRACE}

    by_id = {s.span_id: s for s in h.spans if s.trace_id == TRACE}
    arrival = by_id[trace_of(receipts[0]).span_id]
    assert arrival.parent_id == PRODUCER and arrival.name == "persona.trigger"
    assert arrival.attributes["personaflow.decision"] == "dispatched"
    sent = by_id[trace_of(dispatch).span_id]
    assert sent.parent_id == arrival.span_id and sent.name == "dispatch.start"
    final = by_id[trace_of(receipts[-1]).span_id]
    assert final.parent_id == executor_span and final.attributes["personaflow.decision"] == "completed"
    assert final.attributes["personaflow.persona"] == P and final.attributes["personaflow.kind"] == "run_report"


def test_a_trigger_without_trace_context_starts_the_seeds_fallback_trace():
    h = Traced()
    h.bind(runner())
    h.traced_trigger("req-9", None)
    fallback = tracing.fallback("req-9")
    [receipt] = h.receipts("req-9")
    [dispatch] = h.dispatches()
    assert trace_of(receipt) == fallback  # the arrival's span is the trace's root: the seed's ids
    assert trace_of(dispatch).trace_id == fallback.trace_id
    [root] = [s for s in h.spans if s.span_id == fallback.span_id]
    assert root.parent_id is None


def test_an_invalid_traceparent_falls_back_to_the_requests_trace():
    h = Traced()
    h.bind(runner())
    h.traced_trigger("req-3", wire.Trace(traceparent="00-zz-yy-01"))
    assert trace_of(h.receipts("req-3")[0]) == tracing.fallback("req-3")


def test_a_queued_request_keeps_its_trace_until_its_run_and_a_handoff_continues_it():
    h = Traced()
    h.bind(runner())
    h.control(P, "pause")
    h.traced_trigger("req-1", wire.Trace(traceparent=f"00-{TRACE}-{PRODUCER}-01"))
    h.control(P, "resume")  # drained by a transition whose own trace is the command's
    receipts = h.receipts("req-1")
    assert [r.status for r in receipts] == ["queued", "dispatched"]
    assert {trace_of(r).trace_id for r in receipts} == {TRACE}
    [dispatch] = h.dispatches()
    assert trace_of(dispatch).trace_id == TRACE
    h.report_from(dispatch.run_id, "handoff", "2222222222222222", target_persona="other", task="review")
    [handoff] = [o.value for o in h.outputs if o.role == "persona_inbox" and isinstance(o.value, TriggerReceived)]
    assert trace_of(handoff.request).trace_id == TRACE


def test_a_replay_gives_the_same_trace_and_span_ids():
    def play() -> tuple[list[bytes], list[Span]]:
        h = Traced()
        h.bind(runner())
        h.traced_trigger("req-1", None)
        [dispatch] = h.dispatches()
        h.report_from(dispatch.run_id, "completed", "3333333333333333")
        return [o.value_bytes() or b"" for o in h.outputs], h.spans

    assert play() == play()


def test_outputs_not_about_a_request_or_run_get_the_fallback_of_their_input():
    store = MemoryStore()
    txn = store.transaction()
    outputs = transition.apply(txn, BindingChanged(at_ms=T0, persona=P, binding=runner()), 7)
    [event] = [o for o in seen(outputs) if o.role == "outbox"]
    assert tracing.parse(event.value.trace.traceparent) is not None
