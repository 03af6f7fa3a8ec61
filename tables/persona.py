"""The persona transition: a persona's behaviour (docs/behaviour.md) over one ordered inbox.

``apply(txn, record, position)`` is a pure function of the persona's state (read through
``txn``) and one inbox record: it leaves the new state in ``txn`` and returns the records
to publish (outbox events, receipts, run notices, dispatches, dead letters). No clock, no
randomness: time is the record's event time, ids derive from the input.

The persona's clock is the latest event time of the inputs it accepted. An input that
ingress refused (its time too far ahead), a fenced report and a rejected command are
answered without moving it.

A trigger for a persona that has no binding waits for one (:mod:`tables.holds`). New work
passes the gates (:mod:`tables.gates`); commands change the persona's mode through its
state machine (:mod:`tables.commands`); reports and run control about external runs are
:mod:`tables.reports` and :mod:`tables.runcontrol`; after each input the persona takes up
what waits (:mod:`tables.scheduler`). Everything with a deadline has a row in the timer
index (:mod:`tables.timers`), which the wall-clock timer reads to tick the persona.

The decisions on the original runtime's quirks are in ``docs/behaviour.md``; each is pinned by a
test in ``tests/tables/test_persona_quirks.py``.
"""

from __future__ import annotations

from streams import tracing
from streams.inbox import (
    PERSONA_INPUT,
    BindingChanged,
    ControlReceived,
    HandoffSettled,
    PersonaInput,
    RunControlReceived,
    RunReportReceived,
    RunReportsReceived,
    Tick,
    TriggerReceived,
    persona_of,
)
from streams.outputs import Output
from streams.tracing import Span
from streams.wire import Trace

from . import commands, gates, handoffs, holds, reports, runcontrol, scheduler
from .envelope import SCHEDULE_PROVIDER, normalize_trigger_envelope, schedule_envelope, schedule_name
from .schedule import due, earliest_due, next_occurrence
from .state import PERSONAS, PersonaHead, PersonaState, TraceRef
from .step import RequestKind, Step, receipt_output, request_origin, request_trace
from .store import Transaction
from .timefmt import format_ms


def apply(
    txn: Transaction, record: PersonaInput, position: int | None = None, spans: list[Span] | None = None
) -> list[Output]:
    """Apply one inbox record; ``position`` is its inbox offset (None in pure tests). The
    transition's spans are appended to ``spans`` if given."""
    if isinstance(record, RunReportsReceived):  # its reports in order, as if each came alone
        return [output for report in record.reports for output in apply(txn, report, position, spans)]
    persona = persona_of(record)
    state = PersonaState(txn, persona)
    redelivered = _redelivered(state, record)
    if redelivered is not None:
        return redelivered
    head = state.head()
    if record.refused is not None:
        return _refused(state, head, record, position)
    if head is None or not head.bound:
        if isinstance(record, ControlReceived) or (isinstance(record, TriggerReceived) and record.hold_ms <= 0):
            return _unknown_persona(record)
        if isinstance(record, TriggerReceived):
            return _hold(state, head or PersonaHead(name=persona), record, position)
        if head is None and not (isinstance(record, BindingChanged) and record.binding is not None):
            return []  # a notice about a persona that never existed: nothing to change
        head = head or PersonaHead(name=persona)
    step = Step(state, head, head.clock_ms, _cause(record, position), spans=spans)
    _enter(step, record)
    if isinstance(record, RunReportReceived):
        reports.on_report(step, record)  # moves the clock only if the report is accepted
        scheduler.settle(step, by_time=False)
    elif isinstance(record, RunControlReceived):
        runcontrol.on_control(step, record)
        scheduler.settle(step, by_time=False)
    else:
        step.advance(record.at_ms)
        if isinstance(record, BindingChanged):
            _on_binding(step, record)
        elif isinstance(record, TriggerReceived):
            _on_trigger(step, record)
        elif isinstance(record, ControlReceived):
            if commands.apply(step, record):
                scheduler.settle(step)
        elif isinstance(record, Tick):
            _on_tick(step)
        else:
            handoffs.on_settled(step, record)
    _finish(step)
    return step.outputs


def _enter(step: Step, record: PersonaInput) -> None:
    """The input's trace: a request's (its producer's context, else the fallback of its id:
    then this transition's span starts the trace), or the executor's span a report comes from."""
    if isinstance(record, TriggerReceived):
        given, request_id = record.request.trace, record.request.request_id
    elif isinstance(record, ControlReceived | RunControlReceived):
        given, request_id = record.command.trace, record.command.command_id
    elif isinstance(record, RunReportReceived):
        context = tracing.parse(record.event.trace.traceparent) if record.event.trace is not None else None
        if context is not None:
            step.origin = TraceRef(trace_id=context.trace_id, span_id=context.span_id)
        return
    else:
        return
    step.origin, step.rooted = request_origin(request_id, given)
    if isinstance(record, TriggerReceived):
        step.origin_request = request_id


def _finish(step: Step) -> None:
    """Settle handoffs decided in this step, then store the head, or drop it when nothing
    of the persona is left (a persona that was never bound and whose held triggers were all
    rejected)."""
    handoffs.settle(step)
    head = step.head
    head.clock_ms = step.now
    _refresh_next_run(head, step.now)
    if head.binding is None and not head.bound and head.held.count == 0 and head.seq == 0:
        step.state.txn.delete(PERSONAS, head.name)
    else:
        step.state.put_head(head)


# ------------------------------------------------------------------ idempotency


def _request_key(record: PersonaInput) -> tuple[RequestKind, str] | None:
    if isinstance(record, TriggerReceived):
        return "trigger", record.request.request_id
    if isinstance(record, ControlReceived):
        return "control", record.command.command_id
    if isinstance(record, RunControlReceived):
        return "run_control", record.command.command_id
    return None


def _given(record: PersonaInput) -> Trace | None:
    """The trace context a request came with."""
    if isinstance(record, TriggerReceived):
        return record.request.trace
    if isinstance(record, ControlReceived | RunControlReceived):
        return record.command.trace
    return None


def _redelivered(state: PersonaState, record: PersonaInput) -> list[Output] | None:
    """A request seen before gets its last receipt again (same ``receipt_id``), nothing else."""
    request = _request_key(record)
    if request is None:
        return None
    seen = state.request(*request)
    if seen is None:
        return None
    return [receipt_output(seen.last)] if seen.last is not None else []


def _unknown_persona(record: TriggerReceived | ControlReceived) -> list[Output]:
    persona = persona_of(record)
    request = _request_key(record)
    assert request is not None
    receipt = holds.rejection(
        persona, *request, record.at_ms, f"unknown persona {persona!r}: it has no binding on persona.bindings",
        _given(record),
    )  # fmt: skip
    if isinstance(record, TriggerReceived):
        return [receipt_output(receipt), *handoffs.rejected_unbound(record.request, receipt)]
    return [receipt_output(receipt)]


def _refused(state: PersonaState, head: PersonaHead | None, record: PersonaInput, position: int | None) -> list[Output]:
    """An input ingress refused to apply (``record.refused`` says why): it is answered with a
    rejection and changes nothing else — not the persona's clock."""
    reason = record.refused or ""
    if head is None:  # nobody to keep the answer: a first decision, answered again the same way
        request = _request_key(record)
        if request is None:
            return []
        receipt = holds.rejection(persona_of(record), *request, record.admitted_at_ms or 0, reason, _given(record))
        extra = handoffs.rejected_unbound(record.request, receipt) if isinstance(record, TriggerReceived) else []
        return [receipt_output(receipt), *extra]
    step = Step(state, head, head.clock_ms, _cause(record, position))
    _enter(step, record)
    if isinstance(record, RunReportReceived):
        reports.on_report(step, record)
    elif isinstance(record, RunControlReceived):
        runcontrol.on_control(step, record)
    elif isinstance(record, TriggerReceived):
        step.receipt("trigger", record.request.request_id, "rejected", error=reason)
    elif isinstance(record, ControlReceived):
        step.receipt("control", record.command.command_id, "rejected", error=reason)
    _finish(step)
    return step.outputs


def _cause(record: PersonaInput, position: int | None) -> dict[str, object]:
    if isinstance(record, TriggerReceived):
        return record.cause(position, request_id=record.request.request_id)
    if isinstance(record, ControlReceived):
        return record.cause(position, command_id=record.command.command_id)
    if isinstance(record, RunReportReceived):
        return record.cause(position, run_id=record.event.run_id, event_id=record.event.event_id)
    if isinstance(record, RunControlReceived):
        return record.cause(position, run_id=record.command.run_id, command_id=record.command.command_id)
    if isinstance(record, HandoffSettled):
        return record.cause(position, handoff_id=record.handoff_id, request_id=record.request_id)
    return record.cause(position)


# ------------------------------------------------------ triggers awaiting a binding


def _hold(state: PersonaState, head: PersonaHead, record: TriggerReceived, position: int | None) -> list[Output]:
    """Keep a trigger for a persona without a binding until one arrives (or its grace ends)."""
    step = Step(state, head, head.clock_ms, _cause(record, position))
    if holds.full(step):
        receipt = holds.rejection(
            head.name,
            "trigger",
            record.request.request_id,
            record.at_ms,
            f"unknown persona {head.name!r}: {holds.MAX_HELD} triggers already wait for its binding on persona.bindings",
            record.request.trace,
        )
        return [receipt_output(receipt)]
    step.advance(record.at_ms)
    holds.hold(step, record, position)
    _finish(step)
    return step.outputs


# --------------------------------------------------------------------- handlers


def _on_binding(step: Step, record: BindingChanged) -> None:
    source = record.source
    if source is not None:
        if source.offset <= step.head.binding_offset:
            return  # forwarded twice (ingress re-read it after a crash): applied already
        step.head.binding_offset = source.offset
    if record.binding is None:
        if step.head.bound:
            step.head.bound = False
            step.emit("persona.binding.removed", {"persona": step.persona, "removed_at_ms": step.now})
            step.set_timer("schedule", None)
        return
    step.head.binding = record.binding
    step.head.bound = True
    step.head.next_run_base_ms = None  # recompute: the schedules may have changed
    if step.head.schedule_cursor_ms is None:
        step.head.schedule_cursor_ms = step.now
    step.emit("persona.binding.updated", {"binding": record.binding, "updated_at_ms": step.now})
    _schedule_timer(step)
    cause = step.cause
    for held in holds.release(step):
        step.cause = _cause(held.record, held.position)
        _on_trigger(step, held.record)
    step.cause = cause
    scheduler.settle(step)


def _on_trigger(step: Step, record: TriggerReceived) -> None:
    request = record.request
    handoffs.received(step, request)
    scheduler.settle(step)
    if request.provider.lower() == SCHEDULE_PROVIDER:
        schedule = schedule_name(step.binding, request.metadata.get("schedule"))
        envelope = schedule_envelope(step.binding, schedule, step.now)
        step.emit("persona.schedule.fired", {"persona": step.persona, "envelope": envelope})
    else:
        envelope = normalize_trigger_envelope(
            request.provider,
            request.kind,
            request.metadata,
            step.now,
            request.request_id,
            request.raw,
            step.redact_keys,
        )
        step.emit("persona.trigger.received", {"persona": step.persona, "envelope": envelope})
    plan = gates.scheduling(step.binding, request, step.now)
    # The input's own trigger: its trace is the step's origin, derived once on entry. A held
    # trigger released by a binding has none of its own there: derive it.
    if step.origin is not None and step.origin_request == request.request_id:
        trace = step.origin
    else:
        trace = request_trace(request.request_id, request.trace)
    gates.gate_new(step, gates.item(step, request.request_id, envelope, request.cost, request.priority, plan, trace))


def _on_tick(step: Step) -> None:
    """Whatever fell due by the tick's time: a held trigger's grace, leases, retries, cron.
    An unbound persona's runs still settle (they finish under its last binding)."""
    if not step.head.bound:
        holds.reject_expired(step)
        scheduler.settle(step)
        return
    scheduler.settle(step)
    _fire_schedules(step)


def _fire_schedules(step: Step) -> None:
    binding = step.binding
    if not binding.schedules:
        return
    cursor = step.head.schedule_cursor_ms if step.head.schedule_cursor_ms is not None else step.now
    for schedule, at_ms in due(binding, cursor, step.now):
        request_id = f"schedule:{schedule}@{format_ms(at_ms)}"
        if step.state.request("trigger", request_id) is not None:
            continue
        envelope = schedule_envelope(binding, schedule, at_ms)
        step.emit("persona.schedule.fired", {"persona": step.persona, "envelope": envelope})
        plan = gates.scheduling(binding, None, at_ms)
        trace = request_trace(request_id, None)
        gates.gate_new(step, gates.item(step, request_id, envelope, None, 0, plan, trace))
    step.head.schedule_cursor_ms = max(cursor, step.now)
    _schedule_timer(step)


def _schedule_timer(step: Step) -> None:
    binding = step.head.binding
    cursor = step.head.schedule_cursor_ms
    due_at = None
    if step.head.bound and binding is not None and binding.schedules and cursor is not None:
        due_at = earliest_due(binding.schedules, cursor)
    step.set_timer("schedule", due_at)


# -------------------------------------------------------------- housekeeping


def _refresh_next_run(head: PersonaHead, now_ms: int) -> None:
    """``next_scheduled_run`` (the earliest occurrence after the last run, or
    after now before the first run), recomputed only when what it depends on moved."""
    binding = head.binding
    if binding is None or not binding.schedules:
        head.next_run_ms = head.next_run_base_ms = None
        return
    base = now_ms if head.last_run_ms is None else head.last_run_ms
    fresh = head.next_run_base_ms is not None and (
        head.next_run_base_ms == base
        or (
            head.last_run_ms is None
            and head.next_run_ms is not None
            and head.next_run_base_ms <= base < head.next_run_ms
        )
    )
    if fresh:
        return
    found = [t for t in (next_occurrence(e, base) for e in binding.schedules) if t is not None]
    head.next_run_ms = min(found) if found else None
    head.next_run_base_ms = base


def decode(value: bytes) -> PersonaInput:
    """An inbox record from its bytes (raises ``msgspec.DecodeError``/``ValidationError``)."""
    return PERSONA_INPUT.decode(value)
