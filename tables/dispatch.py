"""Sending runs to executors: a new lease, a reservation through the budget gate, a ledger
row, a ``RunDispatch`` — and the runs that wait to be dispatched again.

Every dispatch (a trigger's first, a retry, a re-dispatch after an expiry, a compensation,
a child and its retries) goes through :func:`dispatch`, and so through the gate
(:func:`tables.money.refusal`): a dispatch the budget cannot take does not happen. A run
waiting to be dispatched again that the gate refuses keeps waiting (its request is told
once, ``budget_exhausted``); it is examined again when budget frees up or the hour turns.

A dispatch the budget lets through is then decided by the binding's policy
(:mod:`tables.policy`, one ``run.policy_decision`` per dispatch): ``deny`` ends the run
``failed`` with ``policy_denied`` and nothing is dispatched (:data:`POLICY_DENIED` is
returned); ``redact`` masks the metadata keys in the run's envelope before the dispatch.
"""

from __future__ import annotations

import msgspec

from streams.wire import RunCost, StepSlo, TriggerEnvelope

from . import ids, leases, money, outcomes, policy, rules, runlog
from . import value as values
from .machines import EXECUTING
from .queue import DEFAULT_TARGET_MS, Entry, Queue, slack_ms
from .rules import POLICY_DENIED
from .runstate import Attempt, RunRow
from .state import Scheduling, TraceRef
from .step import Step
from .timefmt import hour_start
from .value import run_value_metadata

#: The error of work whose deadline passed before it was dispatched.
DEADLINE_EXCEEDED = "deadline_exceeded"


def start_work_run(
    step: Step,
    request_id: str,
    envelope: TriggerEnvelope,
    decision: int,
    plan: Scheduling,
    priority: int,
    queued_at_ms: int,
    preempts: bool = False,
    trace: TraceRef | None = None,
) -> RunRow:
    """A trigger's external run, first dispatch (its request passed the gates); it takes
    over its request's trace."""
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
        scheduling=plan,
        priority=priority,
        queued_at_ms=queued_at_ms,
        trace=runlog.trace_from(step, trace, run_id),
    )
    runlog.register(step, run)
    refused = dispatch(step, run, takes_lease=True, preempts=preempts)
    assert refused in (None, POLICY_DENIED), f"the trigger's gate passed, the dispatch's refused: {refused}"
    return run


def step_slo(run: RunRow, now_ms: int) -> StepSlo | None:
    """The run's SLO as it stands now (seed ``build_step_slo``): only with an SLO."""
    slo = run.scheduling.slo
    if slo is None:
        return None
    waited = max(now_ms - run.queued_at_ms, 0)
    return StepSlo(
        tier=slo.tier,
        queue_target_ms=DEFAULT_TARGET_MS if slo.queue_target_ms is None else slo.queue_target_ms,
        observed_queue_ms=waited,
        slack_ms=slack_ms(slo, run.queued_at_ms, now_ms),
        priority_boost=slo.priority_boost,
        error_budget_ratio=slo.error_budget_ratio,
    )


def dispatch(step: Step, run: RunRow, *, takes_lease: bool, preempts: bool = False) -> str | None:
    """Send a ready ``run`` to executors if the gate lets its reservation through; return
    the budget window that refused it (nothing is written then), :data:`POLICY_DENIED`
    (the run failed), or None. ``preempts``: taking it up jumps over work queued before it
    (counted if its SLO is breached)."""
    usd, tokens = money.reservation(step.binding)
    refused = money.refusal(step, usd, tokens)
    if refused is not None:
        return refused
    # After the budget: a run the budget makes wait is decided once, when it goes.
    decision = policy.judge(step, rules.of_run(run, usd), run)
    if decision is not None and decision.effect == "deny":
        run.queue_rank = None  # a queued run's entry is its caller's to drop (it knows the list)
        outcomes.finish(step, run, "failed", error=POLICY_DENIED, event="refuse")
        return POLICY_DENIED
    if decision is not None and decision.redact_keys:
        run.envelope = rules.masked(run.envelope, decision.redact_keys)
    runlog.move(step, run, "dispatch")
    step.head.counters.dispatched(step.now)
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
    slo = step_slo(run, step.now)
    preempted = preempts and slo is not None and slo.slack_ms < 0
    if preempted:
        step.head.preemptions += 1
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
            "deadline_at_ms": run.scheduling.deadline_at_ms,
            "queued_at_ms": run.queued_at_ms,  # when its work was queued: the queue lag metric
            "slo": None if slo is None else {**msgspec.structs.asdict(slo), "preempted": preempted},
        },
    )
    run.queue_rank = None
    runlog.runs(step).put_run(run)
    runlog.send(step, run, "start", slo=slo)
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


def take_run(step: Step, queue: Queue, entry: Entry, preempts: bool) -> bool:
    """The queue's first ready entry is a run waiting for the lease (free now): past its
    deadline it fails; over the in-flight limit it is deferred; refused by the budget it
    waits (or fails, if it can never pass); else it is dispatched and takes the lease.
    Returns whether it took the lease."""
    state = runlog.runs(step)
    run = state.run(entry.run_id or "")
    if run is None or run.status != "ready" or run.queue_rank != entry.rank:
        queue.drop_run("r", entry.rank)  # a stale entry: the run ended or moved on
        return False
    deadline = run.scheduling.deadline_at_ms
    if deadline is not None and step.now > deadline:
        queue.drop_run("r", entry.rank)
        run.queue_rank = None
        outcomes.finish(step, run, "failed", error=DEADLINE_EXCEEDED, event="refuse")
        return False
    usd, tokens = money.reservation(step.binding)
    if money.backpressure(step, usd, tokens):
        _wait(step, queue, run, "backpressure", step.now + step.binding.backpressure_ms)
        return False
    refused = dispatch(step, run, takes_lease=True, preempts=preempts)
    if refused is None:
        queue.drop_run("r", entry.rank)
        return True
    if _refused(step, run, refused):
        queue.drop_run("r", entry.rank)
        return False
    _wait(step, queue, run, refused, None)
    return False


def _wait(step: Step, queue: Queue, run: RunRow, reason: str, due_ms: int | None) -> None:
    """``run`` waits for the budget (``reason`` a window) or for in-flight spend to fall
    (``backpressure``, at most until ``due_ms``), keeping its place in the ranking."""
    assert run.queue_rank is not None
    queue.park_run(run.run_id, run.queue_rank, "w")
    run.queue_list = "w"
    queue.waiting_until(due_ms, step.head.budget.version, step.now)
    if reason == "backpressure" and run.blocked != "backpressure":
        run.blocked = "backpressure"
        run.not_before_ms = due_ms
        runlog.emit(step, run, "run.deferred", {"attempt": run.attempt, "reason": reason, "not_before_ms": due_ms})
        if run.kind == "work":
            step.receipt(
                "trigger",
                run.request_id,
                "queued",
                work_key=run.work_key,
                run_id=run.run_id,
                queued=True,
                error="backpressure",
                attempt=run.attempt,
                not_before_ms=due_ms,
            )
    runlog.runs(step).put_run(run)
    runlog.refresh_timers(step)


def take_children(step: Step) -> None:
    """Children whose retry fell due are dispatched again under their parent's lease,
    whenever their parent runs. All reserve the same amount (the binding's), so once the
    gate refuses one the others wait too; the budget's version and the hour are remembered
    then, and nothing is examined again until one of them changes (O(1) per input)."""
    head = step.head
    if not head.ready_children:
        return
    blocked = head.children_blocked
    mark = [head.budget.version, hour_start(step.now)]
    if blocked is not None and blocked[:2] == mark and (blocked[2] < 0 or blocked[2] > step.now):
        return
    head.children_blocked = None
    state = runlog.runs(step)
    for run_id in list(head.ready_children):
        run = state.run(run_id)
        if run is None or run.status != "ready":
            head.ready_children.remove(run_id)
            continue
        parent = state.run(run.parent_run_id or "")
        if parent is None or parent.status not in EXECUTING:
            head.ready_children.remove(run_id)
            outcomes.finish(
                step, run, "cancelled", error=f"parent run {run.parent_run_id} is not running", reason="parent"
            )
            continue
        usd, tokens = money.reservation(step.binding)
        if money.backpressure(step, usd, tokens):
            defer_child(step, run)
            head.children_blocked = [*mark, run.not_before_ms or -1]
            return
        refused = dispatch(step, run, takes_lease=False)
        if refused is None:
            head.ready_children.remove(run_id)
            continue
        if _refused(step, run, refused):
            continue  # the child failed: ``runlog.close`` took it off the list
        head.children_blocked = [*mark, -1]
        return


def defer_child(step: Step, run: RunRow) -> None:
    """A child's dispatch waits for in-flight spend to fall (at most ``backpressure_ms``)."""
    if run.blocked == "backpressure":
        return
    run.blocked = "backpressure"
    run.not_before_ms = step.now + step.binding.backpressure_ms
    runlog.emit(step, run, "run.deferred", {"attempt": run.attempt, "reason": "backpressure",
                                            "not_before_ms": run.not_before_ms})  # fmt: skip
    runlog.runs(step).put_run(run)
    runlog.refresh_timers(step)


def _refused(step: Step, run: RunRow, reason: str) -> bool:
    """The gate or the policy refused ``run``'s dispatch. A denial has failed the run
    already, and so does a reservation that alone breaks the window (True); else the run
    waits for budget, and its request hears it once."""
    if reason == POLICY_DENIED:
        return True  # :func:`dispatch` ended it
    usd, tokens = money.reservation(step.binding)
    if money.permanent(step, reason, usd, tokens):
        error = money.exhausted(step, usd, tokens, reason)
        run.queue_rank = None
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
