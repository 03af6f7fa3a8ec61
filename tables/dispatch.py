"""Sending runs to executors: a new lease, a reservation through the budget gate, a ledger
row, a ``RunDispatch`` — and the runs that wait to be dispatched again.

Every dispatch (a trigger's first, a retry, a re-dispatch after an expiry, a compensation,
a child and its retries) goes through :func:`dispatch`, and so through the gate
(:func:`tables.money.refusal`): a dispatch the budget cannot take does not happen. A run
waiting to be dispatched again that the gate refuses keeps waiting (its request is told
once, ``budget_exhausted``); it is examined again when budget frees up or the hour turns.
"""

from __future__ import annotations

from streams.wire import RunCost, TriggerEnvelope

from . import ids, leases, money, outcomes, runlog
from . import value as values
from .machines import EXECUTING
from .runstate import Attempt, RunRow
from .step import Step
from .timefmt import hour_start
from .value import run_value_metadata


def start_work_run(step: Step, request_id: str, envelope: TriggerEnvelope, decision: int) -> RunRow:
    """A trigger's external run, first dispatch (its request passed the budget gate)."""
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
    runlog.register(step, run)
    refused = dispatch(step, run, takes_lease=True)
    assert refused is None, f"the trigger's gate passed, the dispatch's refused: {refused}"
    return run


def dispatch(step: Step, run: RunRow, *, takes_lease: bool) -> str | None:
    """Send a ready ``run`` to executors if the gate lets its reservation through; return
    the budget window that refused it (nothing is written then), or None."""
    usd, tokens = money.reservation(step.binding)
    refused = money.refusal(step, usd, tokens)
    if refused is not None:
        return refused
    runlog.move(run, "dispatch")
    run.dispatches += 1
    run.lease_id = ids.attempt_lease_id(run.run_id, run.dispatches)
    run.deadline_ms = step.now + step.binding.lease_ttl_ms
    run.not_before_ms = None
    run.blocked = None
    attempt = Attempt(
        dispatch=run.dispatches,
        attempt=run.attempt,
        lease_id=run.lease_id,
        started_at_ms=step.now,
        reserved_usd=usd,
        reserved_tokens=tokens,
    )
    run.ledger.append(attempt)
    if takes_lease:
        lease = leases.grant(step, run.lease_id, run.work_key)
        leases.hold(step, lease, run)
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
            metadata = run_value_metadata(run.envelope, lease, RunCost(cost_usd=0.0, tokens=0))
            values.emit(step, run.run_id, {"kind": "run_started"}, metadata)
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
    money.reserve(step, run, attempt)
    runlog.emit(
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
    runlog.runs(step).put_run(run)
    runlog.send(step, run, "start")
    if run.kind == "work":
        record = leases.current(step)
        step.receipt(
            "trigger",
            run.request_id,
            "dispatched",
            work_key=run.work_key,
            run_id=run.run_id,
            lease=record.lease if record else None,
            attempt=run.attempt,
        )
    runlog.refresh_timers(step)
    return None


# ------------------------------------------------------------------ waiting runs


def take_ready(step: Step, lease_free: bool) -> bool:
    """Dispatch what waits to be dispatched again: children (under their parent's lease)
    whenever their parent runs, and, when ``lease_free``, the oldest other run (it takes
    the persona's lease). Returns whether a run took the lease.

    All of them reserve the same amount (the binding's), so once the gate refuses one the
    others wait too; the budget's version and the hour are remembered then, and nothing is
    examined again until one of them changes (O(1) per input meanwhile)."""
    head = step.head
    if not head.ready_runs:
        return False
    mark = [head.budget.version, hour_start(step.now)]
    if head.ready_blocked == mark:
        return False
    state = runlog.runs(step)
    for run_id in list(head.ready_runs):
        run = state.run(run_id)
        if run is None or run.status != "ready":
            head.ready_runs.remove(run_id)
            continue
        if run.kind == "child":
            parent = state.run(run.parent_run_id or "")
            if parent is None or parent.status not in EXECUTING:
                outcomes.finish(
                    step, run, "cancelled", error=f"parent run {run.parent_run_id} is not running", reason="parent"
                )
                continue
            takes_lease = False
        elif not lease_free:
            continue  # waits for the lease, not for budget
        else:
            takes_lease = True
        refused = dispatch(step, run, takes_lease=takes_lease)
        if refused is None:
            head.ready_runs.remove(run_id)
            if takes_lease:
                return True
            continue
        if _refused(step, run, refused):
            continue  # it ended: the others may still wait
        head.ready_blocked = mark
        return False
    return False


def _refused(step: Step, run: RunRow, reason: str) -> bool:
    """The gate refused ``run``'s dispatch. If the reservation alone breaks the window, the
    run fails (True); else it waits for budget, and its request hears it once."""
    usd, tokens = money.reservation(step.binding)
    if money.permanent(step, reason, usd, tokens):
        error = money.exhausted(step, usd, tokens, reason)
        outcomes.finish(step, run, "failed", error=error, event="refuse")
        return True
    run.not_before_ms = money.window_end(reason, step.now)
    if run.blocked != reason:
        run.blocked = reason
        error = money.exhausted(step, usd, tokens, reason)
        runlog.emit(
            step,
            run,
            "run.budget_exhausted",
            {"attempt": run.attempt, "reason": reason, "error": error, "not_before_ms": run.not_before_ms},
        )
        if run.kind == "work":
            step.receipt(
                "trigger",
                run.request_id,
                "budget_exhausted",
                work_key=run.work_key,
                run_id=run.run_id,
                queued=True,
                error=error,
                attempt=run.attempt,
                not_before_ms=run.not_before_ms,
            )
    runlog.runs(step).put_run(run)
    runlog.refresh_timers(step)
    return False
