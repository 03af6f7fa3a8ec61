"""External runs: the control plane of work that executors do (docs/behaviour.md, section 5).

Pure functions over a persona's :class:`~tables.step.Step`; the persona transition calls
them. A run is dispatched (its ``RunDispatch`` goes to executors), reports on it come back
through the run directory, and everything that follows is decided here:

* **fencing**: a report must carry the run's current lease; others (an older lease, a
  finished run) change nothing but the spend they report, and the run stream records
  ``run.report_rejected``. A report seen before (same ``event_id``) is dropped, forever;
* **leases** live as long as the work: every report of the current dispatch renews the
  run's lease, and the persona's lease when the run belongs to the work holding it; a
  paused run's lease is renewed by the pipeline; an expired dispatch is re-queued without
  spending an attempt (or the run ends ``expired`` if the binding says so);
* **budgets**: a dispatch reserves ``estimated_run_usd`` (and ``run_limits.max_tokens``),
  which the gates count like spend; usage is recorded as reported; the outcome's cost
  settles it; spend reported late, or on an old lease, is recorded all the same;
* **limits**: a warning once per limit at ``warn_ratio``, then cancel and ``failed`` with
  ``limit_exceeded:<limit>``; duration is checked on ticks;
* **retries** with exponential backoff, then one **compensation** run after the final
  failure; **children** spawned by a run, under its lease and budget; **run control**
  (pause, resume, cancel, checkpoint, compact, guidance, evidence, a2a) reaching the
  descendants whose chain inherits the inbox; a bounded **transcript**.

The first terminal state of a run wins: later terminal reports and commands change
nothing and are answered with the first terminal event's id.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streams.inbox import RunControlReceived, RunRegistered, RunReportReceived, TriggerReceived
from streams.wire import PersonaLease, RunCost, RunDispatch, TriggerEnvelope, TriggerRequest

from . import budget as budgets
from . import handoffs, ids
from .runstate import (
    EXECUTING,
    STEP_OUTPUTS_KEPT,
    Attempt,
    RunRow,
    RunState,
    TranscriptEntry,
)
from .state import HandoffOut, LeaseRecord
from .step import Step, outbox_output
from .value import completion_deltas, run_value_metadata

LEASE_HOLDER = "persona-runtime"


# ------------------------------------------------------------------ inbox rules


def inbox_execution_ids(own: str, spawn_mode: str | None, inherit_inbox: bool, parent: str | None) -> list[str]:
    """Whose inboxes a run reads: its own, and its parent's when it is a child spawned to
    inherit the inbox (and has a parent)."""
    if spawn_mode == "child" and inherit_inbox and parent is not None:
        return [own, parent]
    return [own]


# --------------------------------------------------------------------- helpers


def runs(step: Step) -> RunState:
    return RunState(step.state)


def run_emit(step: Step, run: RunRow, kind: str, payload: dict[str, Any]) -> str:
    """Append an event to the run's stream (``run:<run_id>``); return its id."""
    run.seq += 1
    output = outbox_output(
        f"run:{run.run_id}", run.seq, kind, step.persona, run.run_id, step.now, step.redacted(payload), step.cause
    )
    step.outputs.append(output)
    runs(step).put_event(run.run_id, run.seq, output.value)
    return ids.event_id(f"run:{run.run_id}", run.seq)


def _send_dispatch(
    step: Step,
    run: RunRow,
    action: str,
    *,
    command_id: str | None = None,
    reason: str | None = None,
    content: Any = None,
    envelope: TriggerEnvelope | None = None,
) -> None:
    binding = step.binding
    step.send(
        "dispatch",
        run.run_id,
        RunDispatch(
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
            options=binding.executor_options if action == "start" else {},
        ),
        phase=1,
    )


def _lease(step: Step) -> LeaseRecord | None:
    return step.state.lease()


def holds_lease(step: Step, run: RunRow) -> bool:
    """Whether ``run`` is the one holding the persona's lease."""
    record = _lease(step)
    return record is not None and record.run_id == run.run_id


def _renews_lease(step: Step, run: RunRow) -> bool:
    """Reports of the lease holder and of its non-background descendants keep the lease."""
    record = _lease(step)
    return record is not None and record.run_id == run.root_run_id and not run.background


def _open(step: Step, run: RunRow) -> None:
    if run.run_id not in step.head.open_runs:
        step.head.open_runs.append(run.run_id)


def _close(step: Step, run: RunRow) -> None:
    if run.run_id in step.head.open_runs:
        step.head.open_runs.remove(run.run_id)
    if run.run_id in step.head.ready_runs:
        step.head.ready_runs.remove(run.run_id)


# -------------------------------------------------------------------- starting


def start_work_run(step: Step, request_id: str, envelope: TriggerEnvelope, decision: int) -> RunRow:
    """A trigger's external run, first dispatch: lease, run started, value, dispatch."""
    run_id = ids.run_id(step.persona, request_id, decision)
    run = RunRow(
        run_id=run_id,
        persona=step.persona,
        kind="work",
        request_id=request_id,
        work_key=envelope.subject_key,
        envelope=envelope,
        entry_workflow=step.binding.entry_workflow,
        root_run_id=run_id,
        created_at_ms=step.now,
    )
    _register(step, run)
    dispatch(step, run, takes_lease=True)
    return run


def _register(step: Step, run: RunRow) -> None:
    """A new run: known to the directory before any executor can report on it (phase 0)."""
    step.send("run_inbox", run.run_id, RunRegistered(at_ms=step.now, run_id=run.run_id, persona=step.persona), phase=0)
    state = runs(step)
    state.put_index(step.head.runs, run.run_id)
    step.head.runs += 1
    _open(step, run)


def dispatch(step: Step, run: RunRow, *, takes_lease: bool) -> None:
    """Send ``run`` to executors: a new lease, a reservation, a ledger row, a dispatch."""
    binding = step.binding
    run.dispatches += 1
    run.lease_id = ids.attempt_lease_id(run.run_id, run.dispatches)
    run.status = "dispatched"
    run.deadline_ms = step.now + binding.lease_ttl_ms
    run.not_before_ms = None
    usd, tokens = binding.estimated_run_usd or 0.0, binding.run_limits.max_tokens or 0
    run.ledger.append(
        Attempt(
            dispatch=run.dispatches,
            attempt=run.attempt,
            lease_id=run.lease_id,
            started_at_ms=step.now,
            reserved_usd=usd,
            reserved_tokens=tokens,
        )
    )
    budgets.reserve(step.head.budget, usd, tokens)
    if takes_lease:
        lease = PersonaLease(
            id=run.lease_id,
            holder=LEASE_HOLDER,
            work_key=run.work_key,
            acquired_at_ms=step.now,
            expires_at_ms=run.deadline_ms,
        )
        step.state.put_lease(
            LeaseRecord(
                lease=lease,
                run_id=run.run_id,
                request_id=run.request_id,
                envelope=run.envelope,
                external=True,
                attempt=run.attempt,
            )
        )
        step.set_timer("lease", lease.expires_at_ms)
        step.emit("persona.lease.acquired", lease)
        if step.head.mode == "failed":
            step.head.mode = "idle"
        if run.dispatches == 1 and run.kind == "work":
            step.emit(
                "persona.run.started",
                {
                    "work_key": run.work_key,
                    "run_id": run.run_id,
                    "started_at_ms": step.now,
                    "entry_workflow": run.entry_workflow,
                    "lease_id": lease.id,
                },
                run.run_id,
            )
            _value_started(step, run, lease)
        else:
            step.emit(
                "persona.run.dispatched",
                {
                    "work_key": run.work_key,
                    "run_id": run.run_id,
                    "kind": run.kind,
                    "attempt": run.attempt,
                    "dispatch": run.dispatches,
                    "lease_id": lease.id,
                },
                run.run_id,
            )
    if usd or tokens:
        step.emit(
            "persona.budget.reserved",
            {
                "run_id": run.run_id,
                "attempt": run.attempt,
                "lease_id": run.lease_id,
                "reserved_usd": usd,
                "reserved_tokens": tokens,
            },
            run.run_id,
        )
    run_emit(
        step,
        run,
        "run.dispatched",
        {
            "kind": run.kind,
            "attempt": run.attempt,
            "dispatch": run.dispatches,
            "lease_id": run.lease_id,
            "work_key": run.work_key,
            "entry_workflow": run.entry_workflow,
            "deadline_ms": run.deadline_ms,
            "parent_run_id": run.parent_run_id,
            "reserved_usd": usd,
            "reserved_tokens": tokens,
        },
    )
    runs(step).put_run(run)
    _send_dispatch(step, run, "start")
    if run.kind == "work":
        lease_record = _lease(step)
        step.receipt(
            "trigger",
            run.request_id,
            "dispatched",
            work_key=run.work_key,
            run_id=run.run_id,
            lease=lease_record.lease if lease_record else None,
            attempt=run.attempt,
        )
    refresh_timers(step)


def _value_started(step: Step, run: RunRow, lease: PersonaLease) -> None:
    from .persona import value  # one value-event writer for inline and external runs

    value(
        step,
        run.run_id,
        {"kind": "run_started"},
        run_value_metadata(run.envelope, lease, RunCost(cost_usd=0.0, tokens=0)),
    )


# ------------------------------------------------------------------- spending


def _record_spend(step: Step, run: RunRow, attempt: Attempt, usd: float, tokens: int) -> None:
    """Record spend of ``attempt`` in the persona's budget (negative: a settlement below usage)."""
    if not usd and not tokens:
        return
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit(
        "persona.budget.recorded",
        {
            "receipt_id": receipt_id,
            "persona": step.persona,
            "cost_usd": usd,
            "tokens": tokens,
            "lease_id": attempt.lease_id,
        },
        run.run_id,
    )
    budgets.record(step.head.budget, usd, tokens, receipt_id, step.now, last_run=False)
    attempt.recorded_usd += usd
    attempt.recorded_tokens += tokens


def _take_spend(
    step: Step, run: RunRow, attempt: Attempt, *, usage: tuple[float, int] | None = None, final: RunCost | None = None
) -> None:
    """Usage reported for an attempt, or its final cost: bring the recorded spend up to it."""
    if usage is not None:
        attempt.usage_usd += usage[0]
        attempt.usage_tokens += usage[1]
    if final is not None:
        attempt.final_usd, attempt.final_tokens = final.cost_usd, final.tokens
    _record_spend(
        step, run, attempt, attempt.actual_usd - attempt.recorded_usd, attempt.actual_tokens - attempt.recorded_tokens
    )


def _close_attempt(step: Step, run: RunRow, attempt: Attempt, status: str, error: str | None = None) -> None:
    """End a dispatch: release its reservation and reconcile what it cost."""
    if not attempt.open:
        return
    attempt.status = status  # type: ignore[assignment]
    attempt.ended_at_ms = step.now
    attempt.error = error
    budgets.release(step.head.budget, attempt.reserved_usd, attempt.reserved_tokens)
    step.emit(
        "persona.budget.reconciled",
        {
            "run_id": run.run_id,
            "attempt": attempt.attempt,
            "dispatch": attempt.dispatch,
            "lease_id": attempt.lease_id,
            "status": status,
            "reserved_usd": attempt.reserved_usd,
            "reserved_tokens": attempt.reserved_tokens,
            "actual_usd": attempt.actual_usd,
            "actual_tokens": attempt.actual_tokens,
        },
        run.run_id,
    )


# --------------------------------------------------------------------- reports


def on_report(step: Step, record: RunReportReceived) -> None:
    event = record.event
    state = runs(step)
    run = state.run(event.run_id)
    if run is None:
        step.dead_letter(
            record,
            event.run_id,
            f"unknown run {event.run_id!r}: persona {step.persona!r} has no such run; the report is ignored",
            "unknown_run",
        )
        return
    if state.seen_report(run.run_id, event.event_id):
        return  # redelivered: dropped silently
    state.remember_report(run.run_id, event.event_id)
    attempt = run.attempt_of(event.lease_id)
    if attempt is not None:  # whatever else happens, spend is never lost
        if event.kind == "usage" and (event.tokens or event.cost_usd):
            _take_spend(step, run, attempt, usage=(event.cost_usd or 0.0, event.tokens or 0))
        elif event.kind in ("completed", "failed") and event.cost is not None:
            _take_spend(step, run, attempt, final=event.cost)
    problem = _fenced(run, event.lease_id)
    if problem is not None:
        run_emit(
            step,
            run,
            "run.report_rejected",
            {
                "event_id": event.event_id,
                "kind": event.kind,
                "reason": problem,
                "lease_id": event.lease_id,
                "terminal_event_id": run.terminal_event_id,
            },
        )
        state.put_run(run)
        return
    assert attempt is not None
    _renew(step, run)
    REPORTS[event.kind](step, run, attempt, event)
    if not run.terminal:
        check_limits(step, run)
    state.put_run(run)
    refresh_timers(step)


def _fenced(run: RunRow, lease_id: str) -> str | None:
    if run.terminal:
        return f"run {run.run_id} already {run.status}"
    if run.status not in EXECUTING:
        return f"run {run.run_id} is {run.status.replace('_', ' ')}: no executor holds it (lease {lease_id})"
    if lease_id != run.lease_id:
        return (
            f"stale lease: run {run.run_id} holds lease {run.lease_id} (attempt {run.attempt}), the report"
            f" carries {lease_id}"
        )
    return None


def _renew(step: Step, run: RunRow) -> None:
    run.deadline_ms = max(run.deadline_ms, step.now + step.binding.lease_ttl_ms)
    if _renews_lease(step, run):
        record = _lease(step)
        assert record is not None
        expires = max(record.lease.expires_at_ms, step.now + step.binding.lease_ttl_ms)
        if expires != record.lease.expires_at_ms:
            lease = msgspec.structs.replace(record.lease, expires_at_ms=expires)
            step.state.put_lease(msgspec.structs.replace(record, lease=lease))
            step.set_timer("lease", expires)


def _reject_report(step: Step, run: RunRow, event: Any, reason: str) -> None:
    run_emit(
        step,
        run,
        "run.report_rejected",
        {
            "event_id": event.event_id,
            "kind": event.kind,
            "reason": reason,
            "lease_id": event.lease_id,
            "terminal_event_id": None,
        },
    )


def _present(event: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(event, name) for name in names if getattr(event, name) is not None}


def _on_started(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    if run.status != "dispatched":
        _reject_report(step, run, event, f"a {run.status} run cannot start again")
        return
    run.status = "running"
    run_emit(step, run, "run.started", {"lease_id": run.lease_id, "attempt": run.attempt, "started_at_ms": step.now})


def _on_heartbeat(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    if run.status == "dispatched":
        run.status = "running"
    run_emit(step, run, "run.heartbeat", {"at_ms": step.now, "deadline_ms": run.deadline_ms})


def _on_step(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    if run.status == "dispatched":
        run.status = "running"
    if event.kind == "step_started":
        run.steps += 1
        run.current_step_id = event.step_id
    else:
        if run.current_step_id == event.step_id:
            run.current_step_id = None
        if event.kind == "step_completed" and event.output is not None:
            run.step_outputs.pop(event.step_id, None)
            run.step_outputs[event.step_id] = event.output
            while len(run.step_outputs) > STEP_OUTPUTS_KEPT:
                run.step_outputs.pop(next(iter(run.step_outputs)))
    run_emit(
        step,
        run,
        f"run.{event.kind}",
        {**_present(event, "step_id", "name", "output", "error", "retryable"), "steps": run.steps},
    )


def _on_usage(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    run_emit(
        step,
        run,
        "run.usage",
        {
            "tokens": event.tokens or 0,
            "cost_usd": event.cost_usd or 0.0,
            "total_tokens": run.usage_tokens,
            "total_cost_usd": run.usage_usd,
        },
    )


def _on_record(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    if event.kind == "checkpoint":
        run.checkpoint = event.payload
    run_emit(step, run, f"run.{event.kind}", _present(event, "step_id", "name", "payload", "output"))


def _on_handoff(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    run_emit(
        step,
        run,
        "run.handoff",
        {
            "target_persona": event.target_persona,
            "task": event.task,
            "handoff_id": event.event_id,
            "handoff_kind": event.name,
        },
    )
    request = TriggerRequest(
        request_id=handoffs.request_id(run.run_id, event.event_id),
        persona=event.target_persona,
        provider="handoff",
        kind=event.name or "handoff",
        metadata={
            "handoff_id": event.event_id,
            "handoff_kind": event.name or "handoff",
            "source_persona": step.persona,
            "task": event.task[:4096],
            "parent_run_id": run.run_id,
            "dedupe_key": event.event_id,
        },
        raw=event.payload,
    )
    step.send(
        "persona_inbox", event.target_persona, TriggerReceived(at_ms=step.now, source=None, request=request, hold_ms=0)
    )
    handoffs.sent(
        step,
        HandoffOut(
            handoff_id=event.event_id,
            target_persona=event.target_persona,
            source_run_id=run.run_id,
            request_id=request.request_id,
            task=event.task[:4096],
            sent_at_ms=step.now,
        ),
    )


def _on_waiting(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    if run.status not in ("running", "dispatched"):
        _reject_report(step, run, event, f"a {run.status} run cannot wait")
        return
    run.status = "waiting"
    run_emit(step, run, "run.waiting", _present(event, "name", "payload"))


def _on_input_received(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    if run.status != "waiting":
        _reject_report(step, run, event, f"input received by a {run.status} run (only a waiting one takes input)")
        return
    run.status = "running"
    run_emit(step, run, "run.input_received", _present(event, "name", "payload"))


def _on_message(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    event_id = run_emit(step, run, "run.message", {"index": run.transcript, **_present(event, "name", "payload")})
    transcribe(step, run, "message", event.name or "executor", event.payload, event_id)


def _on_spawn(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    spawn(step, run, event)


def _on_completed(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    _close_attempt(step, run, attempt, "completed")
    finish(step, run, "completed", output=event.output)


def _on_failed(step: Step, run: RunRow, attempt: Attempt, event: Any) -> None:
    error = event.error or "run failed"
    retry = step.binding.retry
    if event.retryable is not False and run.attempt < retry.max_attempts:
        _close_attempt(step, run, attempt, "retry_scheduled", error)
        schedule_retry(step, run, error)
    else:
        _close_attempt(step, run, attempt, "failed", error)
        finish(step, run, "failed", error=error)


REPORTS = {
    "started": _on_started,
    "heartbeat": _on_heartbeat,
    "step_started": _on_step,
    "step_completed": _on_step,
    "step_failed": _on_step,
    "usage": _on_usage,
    "checkpoint": _on_record,
    "artifact": _on_record,
    "handoff": _on_handoff,
    "spawn": _on_spawn,
    "waiting": _on_waiting,
    "input_received": _on_input_received,
    "message": _on_message,
    "completed": _on_completed,
    "failed": _on_failed,
}


# ---------------------------------------------------------------------- ending


def finish(
    step: Step,
    run: RunRow,
    status: str,
    *,
    error: str | None = None,
    output: Any = None,
    reason: str | None = None,
    lease_expired: bool = False,
) -> str:
    """The run's first terminal state; returns its terminal event id."""
    run.status = status  # type: ignore[assignment]
    run.error = error
    run.current_step_id = None
    payload: dict[str, Any] = {"attempt": run.attempt, "usage_usd": run.usage_usd, "usage_tokens": run.usage_tokens}
    if error is not None:
        payload["error"] = error
    if output is not None:
        payload["output"] = output
    if reason is not None:
        payload["reason"] = reason
    run.terminal_event_id = run_emit(step, run, f"run.{status}", payload)
    _close(step, run)
    cancel_children(step, run, f"parent run {run.run_id} {status}")
    if run.kind == "child":
        _tell_parent(step, run)
    if holds_lease(step, run):
        _end_work(step, run, status, error, lease_expired)
    elif run.kind == "work":
        _receipt_final(step, run, status, error)
    runs(step).put_run(run)
    refresh_timers(step)
    return run.terminal_event_id


def _end_work(step: Step, run: RunRow, status: str, error: str | None, lease_expired: bool) -> None:
    """The run holding the persona's lease ended: outcome events, lease released, receipt."""
    record = _lease(step)
    assert record is not None
    lease = record.lease
    _drop_lease(step)
    if status == "completed":
        current = run.current
        cost = (
            RunCost(cost_usd=run.usage_usd, tokens=run.usage_tokens)
            if current is None
            else RunCost(cost_usd=current.actual_usd, tokens=current.actual_tokens)
        )
        metadata = run_value_metadata(run.envelope, lease, cost)
        from .persona import complete_work, value

        for delta in completion_deltas(cost):
            value(step, run.run_id, delta, metadata)
        complete_work(step, run.run_id, run.work_key, lease)
        step.head.budget.last_run_usd = run.usage_usd
    else:
        kind = "persona.run.failed" if status in ("failed", "expired") else "persona.run.cancelled"
        step.emit(
            kind,
            {
                "work_key": run.work_key,
                "run_id": run.run_id,
                "error": error or status,
                f"{status}_at_ms": step.now,
                "lease_id": lease.id,
            },
            run.run_id,
        )
        if not lease_expired:
            step.emit(
                "persona.lease.released", {"id": lease.id, "work_key": lease.work_key, "released_at_ms": step.now}
            )
        if status in ("failed", "expired"):
            if step.head.mode in ("idle", "failed"):
                step.head.mode = "failed"
            step.head.last_error = error
    if run.kind == "work":
        _receipt_final(step, run, status, error)
    if status in ("failed", "expired") and run.kind == "work":
        _compensate(step, run)


def _receipt_final(step: Step, run: RunRow, status: str, error: str | None) -> None:
    lease = PersonaLease(
        id=run.lease_id,
        holder=LEASE_HOLDER,
        work_key=run.work_key,
        acquired_at_ms=run.current.started_at_ms if run.current else run.created_at_ms,
        expires_at_ms=run.deadline_ms,
    )
    final = {"completed": "completed", "cancelled": "cancelled"}.get(status, "failed")
    step.receipt(
        "trigger",
        run.request_id,
        final,
        work_key=run.work_key,
        run_id=run.run_id,
        lease=lease,
        error=error,
        budget_receipt_id=step.head.budget.last_receipt_id,
        attempt=run.attempt,
        event_id=run.terminal_event_id,
    )


def _tell_parent(step: Step, child: RunRow) -> None:
    parent = runs(step).run(child.parent_run_id or "")
    if parent is None or parent.terminal:
        return
    _send_dispatch(
        step,
        parent,
        f"child_{child.status}",
        content={
            "child_run_id": child.run_id,
            "child_key": child.child_key,
            "status": child.status,
            "error": child.error,
        },
    )


def schedule_retry(step: Step, run: RunRow, error: str) -> None:
    """A failed attempt that may be retried: the next attempt after the backoff."""
    run.attempt += 1
    wait_to_retry(step, run, error, delay_index=run.attempt - 2)


def _compensate(step: Step, failed: RunRow) -> None:
    """One compensation run after a work run failed for good, if the binding names one."""
    workflow = step.binding.compensation_workflow
    if workflow is None or failed.compensation_run_id is not None:
        return
    run_id = ids.compensation_run_id(failed.run_id)
    failed.compensation_run_id = run_id
    compensation = RunRow(
        run_id=run_id,
        persona=step.persona,
        kind="compensation",
        request_id=f"compensation:{failed.run_id}",
        work_key=failed.work_key,
        envelope=failed.envelope,
        entry_workflow=workflow,
        root_run_id=run_id,
        parent_run_id=failed.run_id,
        created_at_ms=step.now,
        status="ready",
    )
    _register(step, compensation)
    step.head.ready_runs.append(run_id)
    run_emit(step, failed, "run.compensation_scheduled", {"compensation_run_id": run_id, "entry_workflow": workflow})
    runs(step).put_run(compensation)


# ------------------------------------------------------------------- children


def spawn(step: Step, parent: RunRow, event: Any) -> None:
    state = runs(step)
    child_id = ids.child_run_id(parent.run_id, parent.dispatches, event.child_key)
    if state.run(child_id) is not None:
        return
    binding = step.binding
    usd, tokens = binding.estimated_run_usd or 0.0, binding.run_limits.max_tokens or 0
    reason = budgets.enforce(binding.budget, step.head.budget, usd, tokens, step.now)
    if reason is not None:
        run_emit(step, parent, "run.spawn_rejected", {"child_key": event.child_key, "reason": f"budget:{reason}"})
        _send_dispatch(
            step,
            parent,
            "spawn_rejected",
            content={"child_key": event.child_key, "reason": f"persona budget exhausted: {reason}"},
        )
        return
    metadata = {"parent_run_id": parent.run_id, "child_key": event.child_key}
    if event.task:
        metadata["task"] = event.task
    envelope = TriggerEnvelope(
        provider="spawn",
        kind=event.child_key,
        subject_key=f"{parent.work_key}/{event.child_key}",
        source_event_id=event.event_id,
        received_at_ms=step.now,
        metadata=metadata,
        raw=event.payload,
    )
    child = RunRow(
        run_id=child_id,
        persona=step.persona,
        kind="child",
        request_id=f"spawn:{parent.run_id}",
        work_key=envelope.subject_key,
        envelope=envelope,
        entry_workflow=event.entry_workflow,
        root_run_id=parent.root_run_id,
        parent_run_id=parent.run_id,
        spawn_mode=event.spawn_mode,
        background=event.background,
        inherit_inbox=event.inherit_inbox,
        child_key=event.child_key,
        created_at_ms=step.now,
    )
    parent.children.append(child_id)
    run_emit(
        step,
        parent,
        "run.spawned",
        {
            "child_run_id": child_id,
            "child_key": event.child_key,
            "entry_workflow": event.entry_workflow,
            "spawn_mode": event.spawn_mode,
            "background": event.background,
            "inherit_inbox": event.inherit_inbox,
        },
    )
    _register(step, child)
    dispatch(step, child, takes_lease=False)


def cancel_children(step: Step, parent: RunRow, reason: str) -> None:
    """Cancel the parent's children that are not finished and do not run in the background."""
    state = runs(step)
    for child_id in parent.children:
        child = state.run(child_id)
        if child is not None and not child.terminal and not child.background:
            cancel(step, child, reason, "personaflow")


def descendants_reached(step: Step, run: RunRow) -> list[RunRow]:
    """Unfinished descendants that read ``run``'s inbox through a chain of inheriting links."""
    state = runs(step)
    found: list[RunRow] = []
    for child_id in run.children:
        child = state.run(child_id)
        if child is None or child.terminal:
            continue
        if (
            run.run_id
            in inbox_execution_ids(child.run_id, child.spawn_mode, child.inherit_inbox, child.parent_run_id)[1:]
        ):
            found.append(child)
            found.extend(descendants_reached(step, child))
    return found


# --------------------------------------------------------------------- control


def cancel(step: Step, run: RunRow, reason: str, actor: str, command_id: str | None = None) -> str:
    """Cancel a run that has not finished; the spend so far is recorded and settled."""
    attempt = run.current
    if run.status in EXECUTING:
        _send_dispatch(step, run, "cancel", command_id=command_id, reason=reason)
        if attempt is not None:
            _close_attempt(step, run, attempt, "cancelled", reason)
    return finish(step, run, "cancelled", error=f"cancelled by {actor}: {reason}", reason=reason)


def on_control(step: Step, record: RunControlReceived) -> None:
    command = record.command
    state = runs(step)
    run = state.run(command.run_id)
    if run is None:
        step.receipt(
            "run_control",
            command.command_id,
            "rejected",
            run_id=command.run_id,
            error=f"unknown run {command.run_id!r} of persona {step.persona!r}",
        )
        return
    if run.terminal:
        step.receipt(
            "run_control",
            command.command_id,
            "rejected",
            run_id=run.run_id,
            event_id=run.terminal_event_id,
            error=f"run {run.run_id} already {run.status} (event {run.terminal_event_id});"
            f" {command.action!r} changes nothing",
        )
        return
    problem = _control_problem(run, command.action)
    if problem is not None:
        event_id = run_emit(
            step,
            run,
            "run.control_rejected",
            {"command_id": command.command_id, "action": command.action, "reason": problem},
        )
        step.receipt("run_control", command.command_id, "rejected", run_id=run.run_id, error=problem, event_id=event_id)
        state.put_run(run)
        return
    reason = command.reason or command.action
    if command.action == "cancel":
        event_id = cancel(step, run, reason, command.actor, command.command_id)
    else:
        event_id = _apply_control(step, run, command)
        for descendant in descendants_reached(step, run):
            if _control_problem(descendant, command.action) is None:
                _apply_control(step, descendant, command)
                state.put_run(descendant)
    state.put_run(run)
    step.receipt("run_control", command.command_id, "completed", run_id=run.run_id, event_id=event_id)
    refresh_timers(step)


def _control_problem(run: RunRow, action: str) -> str | None:
    if action == "pause" and run.status not in ("dispatched", "running", "waiting"):
        return f"a {run.status.replace('_', ' ')} run cannot be paused"
    if action == "resume" and run.status != "paused":
        return f"a {run.status.replace('_', ' ')} run cannot be resumed (only a paused one)"
    if action in ("checkpoint", "compact") and run.status not in EXECUTING:
        return f"a {run.status.replace('_', ' ')} run has no executor to {action}"
    return None


def _apply_control(step: Step, run: RunRow, command: Any) -> str:
    payload = {"command_id": command.command_id, "actor": command.actor, "reason": command.reason}
    if command.action == "pause":
        run.status = "paused"
        event_id = run_emit(step, run, "run.paused", payload)
    elif command.action == "resume":
        run.status = "running"
        run.deadline_ms = max(run.deadline_ms, step.now + step.binding.lease_ttl_ms)
        event_id = run_emit(step, run, "run.resumed", payload)
    else:
        event_id = run_emit(step, run, f"run.control.{command.action}", {**payload, "content": command.content})
        if command.action in ("guidance", "evidence", "a2a"):
            transcribe(step, run, command.action, command.actor, command.content, event_id)
    if run.status in EXECUTING:
        _send_dispatch(
            step, run, command.action, command_id=command.command_id, reason=command.reason, content=command.content
        )
    return event_id


def transcribe(step: Step, run: RunRow, kind: str, actor: str, content: Any, event_id: str) -> None:
    runs(step).put_entry(
        run.run_id,
        TranscriptEntry(
            index=run.transcript,
            kind=kind,
            actor=actor,  # type: ignore[arg-type]
            content=content,
            at_ms=step.now,
            event_id=event_id,
        ),
    )
    run.transcript += 1


# ---------------------------------------------------------------------- limits


def check_limits(step: Step, run: RunRow) -> None:
    """A warning once per limit at ``warn_ratio``; past a limit, cancel and fail the run."""
    limits = step.binding.run_limits
    for name, value, maximum in (
        ("max_steps", run.steps, limits.max_steps),
        ("max_tokens", run.usage_tokens, limits.max_tokens),
        ("max_cost_usd", run.usage_usd, limits.max_cost_usd),
        ("max_duration_ms", step.now - run.created_at_ms, limits.max_duration_ms),
    ):
        if maximum is None or run.terminal:
            continue
        if value > maximum:
            _limit_exceeded(step, run, name, value, maximum)
        elif value >= limits.warn_ratio * maximum and name not in run.warned:
            run.warned.append(name)
            run_emit(
                step,
                run,
                "run.limit_warning",
                {"limit": name, "value": value, "max": maximum, "warn_ratio": limits.warn_ratio},
            )


def _limit_exceeded(step: Step, run: RunRow, name: str, value: Any, maximum: Any) -> None:
    error = f"limit_exceeded:{name}"
    run_emit(step, run, "run.limit_exceeded", {"limit": name, "value": value, "max": maximum})
    if run.status in EXECUTING:
        _send_dispatch(step, run, "cancel", reason=error)
    attempt = run.current
    if attempt is not None:
        _close_attempt(step, run, attempt, "failed", error)
    finish(step, run, "failed", error=error)


# ------------------------------------------------------------------------ time


def settle(step: Step) -> None:
    """At the step's time: expired leases, paused runs kept alive, retries due, durations.

    O(1) unless a timer of the persona is due: run rows are read only then."""
    timers = step.head.timers
    lease_due, runs_due = timers.get("lease"), timers.get("runs")
    state = runs(step)
    if lease_due is not None and lease_due <= step.now:
        record = _lease(step)
        if record is not None and record.external and record.lease.expires_at_ms <= step.now:
            holder = state.run(record.run_id)
            if holder is not None and holder.status == "paused":
                _renew(step, holder)  # a paused run keeps its lease
                state.put_run(holder)
            else:
                _expire_lease(step, record, holder)
        refresh_timers(step)
        runs_due = timers.get("runs")
    if runs_due is None or runs_due > step.now:
        return
    for run_id in list(step.head.open_runs):
        run = state.run(run_id)
        if run is None:
            continue
        if run.status in EXECUTING and not holds_lease(step, run) and run.deadline_ms <= step.now:
            if run.status == "paused":
                run.deadline_ms = step.now + step.binding.lease_ttl_ms
            else:
                _expire_dispatch(step, run)
        if run.status == "retry_wait" and run.not_before_ms is not None and run.not_before_ms <= step.now:
            _due(step, run)
        if run.status in EXECUTING:
            check_limits(step, run)
        state.put_run(run)
    refresh_timers(step)


def _expire_lease(step: Step, record: LeaseRecord, holder: RunRow | None) -> None:
    lease = record.lease
    step.emit("persona.lease.expired", {"id": lease.id, "work_key": lease.work_key, "expired_at_ms": step.now})
    step.head.last_error = (
        f"lease {lease.id} expired: run {record.run_id} did not report for {step.binding.lease_ttl_ms} ms"
    )
    if holder is None or holder.terminal:
        _drop_lease(step)
        return
    _expire_dispatch(step, holder)


def _drop_lease(step: Step) -> None:
    step.state.put_lease(None)
    step.set_timer("lease", None)


def _expire_dispatch(step: Step, run: RunRow) -> None:
    """The current dispatch's lease ran out: stop it, and re-queue the run after the retry
    backoff without spending an attempt (or end it ``expired``: if the binding says so, or
    at the ``retry.max_attempts``-th expiry of the run)."""
    attempt = run.current
    error = f"lease {run.lease_id} expired (no report for {step.binding.lease_ttl_ms} ms)"
    _send_dispatch(step, run, "cancel", reason="lease expired")
    if attempt is not None:
        _close_attempt(step, run, attempt, "expired", error)
    run.expiries += 1
    requeue = step.binding.on_lease_expiry == "requeue" and run.expiries < step.binding.retry.max_attempts
    run_emit(
        step,
        run,
        "run.lease_expired",
        {
            "lease_id": run.lease_id,
            "attempt": run.attempt,
            "dispatch": run.dispatches,
            "expiries": run.expiries,
            "requeued": requeue,
        },
    )
    if not requeue:
        if step.binding.on_lease_expiry == "requeue":
            error = f"{error}; the run's lease expired {run.expiries} times"
        finish(step, run, "expired", error=error, lease_expired=True)
        return
    wait_to_retry(step, run, error, delay_index=run.expiries - 1)
    runs(step).put_run(run)


def wait_to_retry(step: Step, run: RunRow, error: str, *, delay_index: int) -> None:
    """The run waits ``backoff_ms * factor^delay_index`` (capped) without the persona's
    lease, then is dispatched again (a child at once, others when the lease is free)."""
    retry = step.binding.retry
    delay = min(int(retry.backoff_ms * retry.factor**delay_index), retry.max_backoff_ms)
    run.status = "retry_wait"
    run.not_before_ms = step.now + delay
    run.current_step_id = None
    run_emit(
        step,
        run,
        "run.retry_scheduled",
        {"attempt": run.attempt, "not_before_ms": run.not_before_ms, "delay_ms": delay, "error": error},
    )
    cancel_children(step, run, f"parent run {run.run_id} stopped: {error}")
    if holds_lease(step, run):
        record = _lease(step)
        assert record is not None
        _drop_lease(step)
        step.emit(
            "persona.run.retrying",
            {
                "work_key": run.work_key,
                "run_id": run.run_id,
                "attempt": run.attempt,
                "not_before_ms": run.not_before_ms,
                "error": error,
            },
            run.run_id,
        )
        if record.lease.expires_at_ms > step.now:
            step.emit(
                "persona.lease.released",
                {"id": record.lease.id, "work_key": record.lease.work_key, "released_at_ms": step.now},
            )
    if run.kind == "work":
        step.receipt(
            "trigger",
            run.request_id,
            "retrying",
            work_key=run.work_key,
            run_id=run.run_id,
            error=error,
            attempt=run.attempt,
            not_before_ms=run.not_before_ms,
        )


def _due(step: Step, run: RunRow) -> None:
    """A retry's backoff is over: a child is dispatched again, other runs wait for the lease."""
    run.not_before_ms = None
    if run.kind == "child":
        parent = runs(step).run(run.parent_run_id or "")
        if parent is None or parent.status not in EXECUTING:
            finish(step, run, "cancelled", error=f"parent run {run.parent_run_id} is not running", reason="parent")
            return
        dispatch(step, run, takes_lease=False)
        return
    run.status = "ready"
    step.head.ready_runs.append(run.run_id)


def take_ready(step: Step) -> bool:
    """Dispatch the oldest run waiting for the persona's lease, if any (the lease is free)."""
    state = runs(step)
    while step.head.ready_runs:
        run = state.run(step.head.ready_runs.pop(0))
        if run is None or run.status != "ready":
            continue
        dispatch(step, run, takes_lease=True)
        return True
    return False


def refresh_timers(step: Step) -> None:
    """The ``runs`` timer: the earliest deadline among the persona's open runs."""
    state = runs(step)
    limits = step.binding.run_limits if step.head.binding is not None else None
    due: list[int] = []
    for run_id in step.head.open_runs:
        run = state.run(run_id)
        if run is None:
            continue
        if run.status in EXECUTING:
            if not holds_lease(step, run):
                due.append(run.deadline_ms)
            if limits is not None and limits.max_duration_ms is not None:
                warn_at = run.created_at_ms + int(limits.max_duration_ms * limits.warn_ratio)
                exceed_at = run.created_at_ms + limits.max_duration_ms + 1
                due.append(exceed_at if "max_duration_ms" in run.warned else warn_at)
        elif run.status == "retry_wait" and run.not_before_ms is not None:
            due.append(run.not_before_ms)
    step.set_timer("runs", min(due) if due else None)
