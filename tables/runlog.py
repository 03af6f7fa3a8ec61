"""What the run core writes about runs: their streams, their messages to executors, their
registration, the lists of open and ready runs, and the timer that watches them.

Every change of a run's status goes through :func:`move` (the run machine in
:mod:`tables.machines`); an undeclared change raises :class:`~tables.machines.Rejected`.
"""

from __future__ import annotations

from typing import Any, Literal

from streams.inbox import RunRegistered
from streams.wire import RunDispatch, StepSlo, TriggerEnvelope

from . import ids, leases, rules
from .machines import EXECUTING, RunEvent, RunStatus, move_run
from .runstate import RunRow, RunState, TranscriptEntry
from .state import TraceRef
from .step import Step, outbox_output

TranscriptKind = Literal["guidance", "evidence", "a2a", "message"]


def runs(step: Step) -> RunState:
    return RunState(step.state)


def move(step: Step, run: RunRow, event: RunEvent) -> RunStatus:
    """The run's next status by the run machine (raises ``Rejected`` if undeclared),
    counted in the persona's run counters (the run summary)."""
    before = run.status
    after = move_run(run, event)
    step.head.counters.moved(before, after, at_breakpoint=run.active_pause is not None)
    return after


def emit(step: Step, run: RunRow, kind: str, payload: dict[str, Any]) -> str:
    """Append an event to the run's stream (``run:<run_id>``); return its id."""
    run.seq += 1
    output, run.digest = outbox_output(
        f"run:{run.run_id}",
        run.seq,
        kind,
        step.persona,
        run.run_id,
        step.now,
        step.redacted(payload),
        step.cause,
        step.trace(run.trace, run.run_id, kind),
        run.digest,
    )
    step.outputs.append(output)
    runs(step).put_event(run, run.seq, output.value)
    return ids.event_id(f"run:{run.run_id}", run.seq)


def send(
    step: Step,
    run: RunRow,
    action: str,
    *,
    command_id: str | None = None,
    reason: str | None = None,
    content: Any = None,
    envelope: TriggerEnvelope | None = None,
    slo: StepSlo | None = None,
) -> None:
    """A ``RunDispatch`` to the run's executor (the one record that carries redacted values).
    A ``start`` carries the attempt's idempotency key and, from the second dispatch on, the
    last checkpoint the run reported (so the executor can resume from it)."""
    binding = step.binding
    start = action == "start"
    dispatch = RunDispatch(
        run_id=run.run_id,
        persona=step.persona,
        lease_id=run.lease_id,
        attempt=run.attempt,
        entry_workflow=run.entry_workflow,
        envelope=envelope or run.envelope,
        deadline_ms=run.deadline_ms,
        limits=binding.run_limits,
        parent_run_id=run.parent_run_id,
        action=action,
        command_id=command_id,
        reason=reason,
        content=content,
        kind=run.kind,
        spawn_mode=run.spawn_mode,
        background=run.background,
        options=binding.executor_options if start else {},
        idempotency_key=f"{run.run_id}:{run.attempt}",
        checkpoint=run.checkpoint if start and run.dispatches > 1 else None,
        slo=slo,
        policy_scope=rules.scope(binding.policy, run),
        deadline_at_ms=run.scheduling.deadline_at_ms,
        issued_at_ms=step.now,
        trace=step.child_span(
            run.trace or step.trace_ref(),
            f"dispatch.{action}",
            (run.run_id, str(run.attempt), command_id or ""),
            {"personaflow.run_id": run.run_id, "personaflow.attempt": run.attempt},
        ),
    )
    step.send("dispatch", run.run_id, dispatch, phase=1)


def trace_from(step: Step, trace: TraceRef | None, run_id: str) -> TraceRef:
    """A new run's trace: ``trace``'s (its request's or parent's; else this transition's),
    hanging from this transition's span in it."""
    ref = trace or step.trace_ref()
    return TraceRef(
        trace_id=ref.trace_id,
        span_id=step.span_in(ref, run_id),
        tracestate=ref.tracestate,
        baggage=ref.baggage,
    )


def register(step: Step, run: RunRow) -> None:
    """A new run: known to the directory before any executor can report on it (phase 0)."""
    step.send("run_inbox", run.run_id, RunRegistered(at_ms=step.now, run_id=run.run_id, persona=step.persona), phase=0)
    runs(step).put_index(step.head.runs, run.run_id)
    step.head.runs += 1
    step.head.counters.count(run.status, +1)  # a new run starts ``ready``
    if run.run_id not in step.head.open_runs:
        step.head.open_runs.append(run.run_id)


def ready(step: Step, run: RunRow) -> None:
    """``run`` waits to be dispatched (again): a child under its parent's lease (examined
    afresh), any other run in the queue's ranking, for the persona's lease."""
    if run.kind == "child":
        if run.run_id not in step.head.ready_children:
            step.head.ready_children.append(run.run_id)
        step.head.children_blocked = None
        return
    run.queue_rank = step.queue.push_run(run.run_id, run.scheduling.slo, run.priority, run.queued_at_ms)
    run.queue_list = "r"


def close(step: Step, run: RunRow) -> None:
    """``run`` has ended: no longer open, no longer waiting."""
    if run.run_id in step.head.open_runs:
        step.head.open_runs.remove(run.run_id)
    if run.run_id in step.head.ready_children:
        step.head.ready_children.remove(run.run_id)
    if run.queue_rank is not None:
        step.queue.drop_run(run.queue_list, run.queue_rank)
        run.queue_rank = None


def transcribe(step: Step, run: RunRow, kind: TranscriptKind, actor: str, content: Any, event_id: str) -> None:
    runs(step).put_entry(
        run.run_id,
        TranscriptEntry(
            index=run.transcript, kind=kind, actor=actor, content=content, at_ms=step.now, event_id=event_id
        ),
    )
    run.transcript += 1


def refresh_timers(step: Step) -> None:
    """The ``runs`` timer: the earliest deadline among the persona's open runs (a dispatch
    that does not hold the persona's lease, a retry's backoff, a run limit's duration, a
    budget window a waiting run needs to turn)."""
    state = runs(step)
    limits = step.binding.run_limits if step.head.binding is not None else None
    due: list[int] = []
    for run_id in step.head.open_runs:
        run = state.run(run_id)
        if run is None:
            continue
        if run.status in EXECUTING:
            if not leases.holds(step, run):
                due.append(run.deadline_ms)
            if limits is not None and limits.max_duration_ms is not None:
                warn_at = run.created_at_ms + int(limits.max_duration_ms * limits.warn_ratio)
                exceed_at = run.created_at_ms + limits.max_duration_ms + 1
                due.append(exceed_at if "max_duration_ms" in run.warned else warn_at)
        elif run.status == "retry_wait" and run.not_before_ms is not None:
            due.append(run.not_before_ms)
        elif run.status == "ready" and run.not_before_ms is not None:
            due.append(run.not_before_ms)  # waiting for budget: the window it needs turns then
    step.set_timer("runs", min(due) if due else None)
