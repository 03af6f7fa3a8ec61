"""What falls due by time: expired leases, paused runs kept alive, retries whose backoff is
over, run durations. Decided at the step's time, which is a tick's or the persona's own
input's (never a report's: reports come through other partitions and may be ahead of the
lease holder's renewal still on its way — decision 14).
"""

from __future__ import annotations

from . import leases, limits, money, outcomes, runlog
from .machines import EXECUTING
from .runstate import RunRow
from .state import LeaseRecord
from .step import Step


def settle(step: Step) -> None:
    """At the step's time: expired leases, paused runs kept alive, retries due, durations.

    O(1) unless a timer of the persona is due: run rows are read only then."""
    timers = step.head.timers
    lease_due, runs_due = timers.get("lease"), timers.get("runs")
    state = runlog.runs(step)
    if lease_due is not None and lease_due <= step.now:
        record = leases.current(step)
        if record is not None and record.external and record.lease.expires_at_ms <= step.now:
            holder = state.run(record.run_id)
            if holder is not None and holder.status == "paused":
                leases.renew(step, holder)  # a paused run keeps its lease
                state.put_run(holder)
            else:
                _expire_lease(step, record, holder)
        leases.rearm(step)
        runlog.refresh_timers(step)
        runs_due = timers.get("runs")
    if runs_due is None or runs_due > step.now:
        return
    for run_id in list(step.head.open_runs):
        run = state.run(run_id)
        if run is None:
            continue
        if run.status in EXECUTING and not leases.holds(step, run) and run.deadline_ms <= step.now:
            if run.status == "paused":
                run.deadline_ms = step.now + step.binding.lease_ttl_ms
            else:
                _expire_dispatch(step, run)
        if run.status == "retry_wait" and run.not_before_ms is not None and run.not_before_ms <= step.now:
            runlog.move(step, run, "due")
            run.not_before_ms = None
            runlog.ready(step, run)
        if run.status in EXECUTING:
            limits.check(step, run)
        state.put_run(run)
    runlog.refresh_timers(step)


def _expire_lease(step: Step, record: LeaseRecord, holder: RunRow | None) -> None:
    leases.expired(step, record)
    if holder is None or holder.terminal:
        leases.drop(step)
        return
    _expire_dispatch(step, holder)


def _expire_dispatch(step: Step, run: RunRow) -> None:
    """The current dispatch's lease ran out: stop it, and re-queue the run after the retry
    backoff without spending an attempt (or end it ``expired``: if the binding says so, or
    at the ``retry.max_attempts``-th expiry of the run)."""
    attempt = run.current
    error = f"lease {run.lease_id} expired (no report for {step.binding.lease_ttl_ms} ms)"
    runlog.send(step, run, "cancel", reason="lease expired")
    if attempt is not None:
        money.close(step, run, attempt, "expire", error)
    run.expiries += 1
    step.head.counters.lease_expiries += 1
    requeue = step.binding.on_lease_expiry == "requeue" and run.expiries < step.binding.retry.max_attempts
    runlog.emit(
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
        outcomes.finish(step, run, "expired", error=error, lease_expired=True)
        return
    outcomes.wait_to_retry(step, run, error, delay_index=run.expiries - 1, expired=True)
    runlog.runs(step).put_run(run)
