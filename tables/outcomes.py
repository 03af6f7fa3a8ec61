"""How runs end, and what waits after a failure: terminal states, cancellation (cascading
to children), the outcome of the work holding the lease, final receipts, retries with
backoff, and the one compensation run after a final failure.

The first terminal state of a run wins (the run machine has no way out of one); the
terminal event's id answers every later report and command about the run.
"""

from __future__ import annotations

from typing import Any, Literal

from streams.wire import PersonaLease, RunCost

from . import bom, ids, leases, money, runlog
from . import value as values
from .machines import EXECUTING, RunEvent, move_persona
from .runstate import RunRow
from .state import CompletedWork, Scheduling
from .step import Step
from .value import completion_deltas, run_value_metadata

Terminal = Literal["completed", "failed", "cancelled", "expired"]
_EVENT: dict[Terminal, RunEvent] = {
    "completed": "complete",
    "failed": "fail",
    "cancelled": "cancel",
    "expired": "expire",
}


def complete_work(step: Step, run_id: str, work_key: str, entry_workflow: str, lease: PersonaLease) -> None:
    """Work completed (inline or external): run completed, the work key done for good, lease released."""
    step.emit(
        "persona.run.completed",
        {
            "work_key": work_key,
            "run_id": run_id,
            "completed_at_ms": step.now,
            "entry_workflow": entry_workflow,
            "lease_id": lease.id,
        },
        run_id,
    )
    step.state.put_completed(work_key, CompletedWork(run_id=run_id, completed_at_ms=step.now))
    step.head.last_run_ms = step.now
    leases.released(step, lease)


def abort(step: Step, run: RunRow, error: str) -> None:
    """End ``run`` ``failed`` for good while an executor may hold it (a limit exceeded, a
    tool step the policy denied): the executor is told to cancel, the current attempt's
    spend is closed as failed, then the run finishes."""
    if run.status in EXECUTING:
        runlog.send(step, run, "cancel", reason=error)
    attempt = run.current
    if attempt is not None:
        money.close(step, run, attempt, "fail", error)
    finish(step, run, "failed", error=error)


def finish(
    step: Step,
    run: RunRow,
    status: Terminal,
    *,
    error: str | None = None,
    output: Any = None,
    reason: str | None = None,
    lease_expired: bool = False,
    event: RunEvent | None = None,
) -> str:
    """The run's first terminal state (by ``event``, default the one named like ``status``);
    returns its terminal event id."""
    runlog.move(step, run, event or _EVENT[status])
    run.error = error
    run.current_step_id = None
    run.blocked = None
    payload: dict[str, Any] = {
        "attempt": run.attempt,
        "usage_usd": run.usage_usd,
        "usage_tokens": run.usage_tokens,
        # the first dispatch, if any: the run latency metric measures from it
        "dispatched_at_ms": run.ledger[0].started_at_ms if run.ledger else None,
    }
    if error is not None:
        payload["error"] = error
    if output is not None:
        payload["output"] = output
    if reason is not None:
        payload["reason"] = reason
    run.terminal_event_id = runlog.emit(step, run, f"run.{status}", payload)
    bom.emit(step, run)  # the run's bill of materials, right after its terminal event
    runlog.close(step, run)
    cancel_children(step, run, f"parent run {run.run_id} {status}")
    if run.kind == "child":
        _tell_parent(step, run)
    if leases.holds(step, run):
        _end_held(step, run, status, error, lease_expired)
    elif run.kind == "work":
        _receipt_final(step, run, status, error)
    runlog.runs(step).put_run(run)
    runlog.refresh_timers(step)
    return run.terminal_event_id


def cancel(step: Step, run: RunRow, reason: str, actor: str, command_id: str | None = None) -> str:
    """Cancel a run that has not finished; the spend so far is recorded and settled."""
    attempt = run.current
    if run.status in EXECUTING:
        runlog.send(step, run, "cancel", command_id=command_id, reason=reason)
        if attempt is not None:
            money.close(step, run, attempt, "cancel", reason)
    return finish(step, run, "cancelled", error=f"cancelled by {actor}: {reason}", reason=reason)


def cancel_children(step: Step, parent: RunRow, reason: str) -> None:
    """Cancel the parent's children that are not finished and do not run in the background."""
    state = runlog.runs(step)
    for child_id in parent.children:
        child = state.run(child_id)
        if child is not None and not child.terminal and not child.background:
            cancel(step, child, reason, "personaflow")


def _end_held(step: Step, run: RunRow, status: Terminal, error: str | None, lease_expired: bool) -> None:
    """The run holding the persona's lease ended: outcome events, lease released, receipt."""
    record = leases.current(step)
    assert record is not None
    lease = record.lease
    leases.drop(step)
    if run.kind == "compensation":
        _end_compensation(step, run, status, error, lease, lease_expired)
    elif status == "completed":
        current = run.current
        cost = (
            RunCost(cost_usd=run.usage_usd, tokens=run.usage_tokens)
            if current is None
            else RunCost(cost_usd=current.actual_usd, tokens=current.actual_tokens)
        )
        metadata = run_value_metadata(run.envelope, lease, cost)
        for delta in completion_deltas(cost):
            values.emit(step, run.run_id, delta, metadata)
        complete_work(step, run.run_id, run.work_key, run.entry_workflow, lease)
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
            leases.released(step, lease)
        if status in ("failed", "expired"):
            move_persona(step.head, "run_failed")
            step.head.last_error = error
    if run.kind == "work":
        _receipt_final(step, run, status, error)
    if status in ("failed", "expired") and run.kind == "work":
        _compensate(step, run)


def _end_compensation(
    step: Step, run: RunRow, status: Terminal, error: str | None, lease: PersonaLease, lease_expired: bool
) -> None:
    """A compensation run ended: ``persona.compensation.{completed,failed,cancelled}``. It
    undoes failed work, so it never marks the work key done (the work may be tried again)."""
    outcome = "failed" if status == "expired" else status
    payload: dict[str, Any] = {
        "work_key": run.work_key,
        "run_id": run.run_id,
        "compensated_run_id": run.parent_run_id,
        "entry_workflow": run.entry_workflow,
        f"{outcome}_at_ms": step.now,
        "lease_id": lease.id,
    }
    if error is not None:
        payload["error"] = error
    step.emit(f"persona.compensation.{outcome}", payload, run.run_id, run.trace)
    if not lease_expired:
        leases.released(step, lease)
    if outcome == "failed":
        move_persona(step.head, "run_failed")
        step.head.last_error = error


def _receipt_final(step: Step, run: RunRow, status: Terminal, error: str | None) -> None:
    lease = PersonaLease(
        id=run.lease_id,
        holder=leases.LEASE_HOLDER,
        work_key=run.work_key,
        acquired_at_ms=run.current.started_at_ms if run.current else run.created_at_ms,
        expires_at_ms=run.deadline_ms,
    )
    final: Literal["completed", "cancelled", "failed"] = (
        "completed" if status == "completed" else "cancelled" if status == "cancelled" else "failed"
    )
    step.receipt(
        "trigger",
        run.request_id,
        final,
        work_key=run.work_key,
        run_id=run.run_id,
        lease=lease,
        error=error,
        budget_receipt_id=run.budget_receipt_id,
        attempt=run.attempt,
        event_id=run.terminal_event_id,
    )


def _tell_parent(step: Step, child: RunRow) -> None:
    parent = runlog.runs(step).run(child.parent_run_id or "")
    if parent is None or parent.terminal:
        return
    runlog.send(
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


# ---------------------------------------------------------------------- waiting


def wait_to_retry(step: Step, run: RunRow, error: str, *, delay_index: int, expired: bool = False) -> None:
    """The run waits ``backoff_ms * factor^delay_index`` (capped) without the persona's
    lease, then is dispatched again (a child at once, others when the lease is free)."""
    retry = step.binding.retry
    delay = min(int(retry.backoff_ms * retry.factor**delay_index), retry.max_backoff_ms)
    runlog.move(step, run, "requeue" if expired else "retry")
    run.not_before_ms = step.now + delay
    run.current_step_id = None
    runlog.emit(
        step,
        run,
        "run.retry_scheduled",
        {
            "attempt": run.attempt,
            "not_before_ms": run.not_before_ms,
            "delay_ms": delay,
            "error": error,
            "lease_expired": expired,  # a re-queue after an expiry, not a retry of a failed attempt
        },
    )
    cancel_children(step, run, f"parent run {run.run_id} stopped: {error}")
    if leases.holds(step, run):
        record = leases.current(step)
        assert record is not None
        leases.drop(step)
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
            leases.released(step, record.lease)
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


def schedule_retry(step: Step, run: RunRow, error: str) -> None:
    """A failed attempt that may be retried: the next attempt after the backoff."""
    run.attempt += 1
    step.head.counters.retries += 1
    wait_to_retry(step, run, error, delay_index=run.attempt - 2)


def _compensate(step: Step, failed: RunRow) -> None:
    """One compensation run after a work run failed for good, if the binding names one. It
    waits for the lease like a retry and reserves like any dispatch (through the gate)."""
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
        scheduling=Scheduling(slo=failed.scheduling.slo),
        priority=failed.priority,
        queued_at_ms=step.now,
        trace=runlog.trace_from(step, failed.trace, run_id),
    )
    runlog.register(step, compensation)
    runlog.ready(step, compensation)
    runlog.emit(step, failed, "run.compensation_scheduled", {"compensation_run_id": run_id, "entry_workflow": workflow})
    runlog.runs(step).put_run(compensation)
