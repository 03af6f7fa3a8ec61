"""The gates new work passes, in this order (the first that applies decides):

1. paused → queued; draining → queued (held until the drain is over);
2. disabled → dead-lettered;
3. past its deadline → ``failed`` with ``deadline_exceeded``, never dispatched;
4. budget (the trigger's cost; for external work the dispatch's reservation) → ``budget_exhausted``;
5. the work key was completed before → ``duplicate``; a work run of the key is unfinished → ``duplicate``;
6. another run holds the lease → ``lease_busy`` (queued, taken up when the lease frees);
7. external work whose reservation would take what runs in flight have reserved past the
   binding's ``max_inflight_*`` → queued with reason ``backpressure`` (deferred, re-examined
   when in-flight spend falls or after ``backpressure_ms``), nothing reserved;
8. the binding's policy (:mod:`tables.policy`), about the run that would start: ``deny`` →
   ``failed`` with ``policy_denied``, never run or dispatched; ``redact`` → the run carries
   the work's metadata with the rules' keys masked. It comes last, when the work goes, so
   that work waiting for the lease or the budget is decided once, not on every look;
   external runs are decided in :func:`tables.dispatch.dispatch`, like every later
   dispatch of theirs (retries, children, compensations);
9. otherwise the run: inline (the trigger carries its cost, or the binding says ``inline``)
   within this transition, or dispatched to an executor (``external``).

Queued work passes gates 3 to 9 again when it is taken up (in the queue's ranking).
"""

from __future__ import annotations

from streams.wire import PersonaBinding, RunCost, TriggerEnvelope, TriggerRequest

from . import ids, leases, money, outcomes, policy, rules, runlog
from . import value as values
from .dispatch import DEADLINE_EXCEEDED, start_work_run
from .queue import ListName
from .state import QueueItem, Scheduling, TraceRef
from .step import Step
from .value import completion_deltas, run_value_metadata

NO_COST = RunCost(cost_usd=0.0, tokens=0)


def scheduling(binding: PersonaBinding, request: TriggerRequest | None, at_ms: int) -> Scheduling:
    """The work's SLO, deadline and breakpoints: the trigger's, else the binding's."""
    slo = request.slo if request is not None and request.slo is not None else binding.slo
    deadline: int | None = None
    if request is not None and request.deadline_at_ms is not None:
        deadline = request.deadline_at_ms
    elif binding.deadline_ms is not None:
        deadline = at_ms + binding.deadline_ms
    debug = request.debug if request is not None and request.debug is not None else binding.debug
    return Scheduling(slo=slo, deadline_at_ms=deadline, breakpoints=list(debug.breakpoints) if debug else [])


def item(
    step: Step,
    request_id: str,
    envelope: TriggerEnvelope,
    cost: RunCost | None,
    priority: int,
    plan: Scheduling,
    trace: TraceRef | None = None,
) -> QueueItem:
    return QueueItem(
        work_key=envelope.subject_key,
        request_id=request_id,
        envelope=envelope,
        cost=cost,
        priority=priority,
        seq=0,
        reason="queued",
        queued_at_ms=step.now,
        scheduling=plan,
        trace=trace,
    )


def gate_new(step: Step, work: QueueItem) -> None:
    """Paused (and draining) -> queued; disabled -> dead-lettered; else the other gates."""
    with step.working(work.request_id, work.trace):
        _gate_new(step, work)


def _gate_new(step: Step, work: QueueItem) -> None:
    mode = step.head.mode
    if mode == "paused":
        enqueue(step, work, "paused")
        step.receipt("trigger", work.request_id, "queued", work_key=work.work_key, queued=True)
    elif mode == "draining":
        enqueue(step, work, "draining", "h")
        step.receipt("trigger", work.request_id, "queued", work_key=work.work_key, queued=True)
    elif mode == "disabled":
        step.emit(
            "persona.trigger.dead_lettered",
            {"work_key": work.work_key, "envelope": work.envelope, "reason": "disabled"},
        )
        step.head.disabled_events += 1
        step.receipt("trigger", work.request_id, "dead_lettered", work_key=work.work_key, error="persona is disabled")
    else:
        attempt(step, work, queued=None)


def enqueue(step: Step, work: QueueItem, reason: str, name: ListName = "r") -> None:
    work.reason = reason
    replaced = step.queue.push(work, name)
    step.emit(
        "persona.trigger.queued",
        {"work_key": work.work_key, "envelope": work.envelope, "cost": work.cost or NO_COST, "reason": reason},
    )
    if replaced is not None and replaced.request_id != work.request_id:
        step.receipt(
            "trigger",
            replaced.request_id,
            "duplicate",
            work_key=replaced.work_key,
            error=f"superseded by request {work.request_id!r} for the same work key",
            trace=replaced.trace,
        )


def is_external(step: Step, work: QueueItem) -> bool:
    return work.cost is None and step.binding.execution == "external"


def attempt(step: Step, work: QueueItem, queued: QueueItem | None, preempts: bool = False) -> None:
    """Deadline, budget, duplicate, lease, backpressure, then the run. ``queued`` is the
    stored item when queued work is taken up (``preempts``: ahead of work queued before it)."""
    with step.working(work.request_id, work.trace):
        _attempt(step, work, queued, preempts)


def _attempt(step: Step, work: QueueItem, queued: QueueItem | None, preempts: bool) -> None:
    deadline = work.scheduling.deadline_at_ms
    if deadline is not None and step.now > deadline:
        _deadline_exceeded(step, work, queued, deadline)
        return
    external = is_external(step, work)
    cost = work.cost or NO_COST
    usd, tokens = money.reservation(step.binding) if external else (cost.cost_usd, cost.tokens)
    error = money.gate(step, usd, tokens)
    if error is not None:
        if queued is not None:
            step.queue.hold(queued)
        step.receipt(
            "trigger",
            work.request_id,
            "budget_exhausted",
            work_key=work.work_key,
            queued=queued is not None,
            error=error,
        )
        return
    if step.state.completed(work.work_key) is not None:
        _duplicate(step, work, queued, None)
        return
    running = run_of_work(step, work.work_key)
    if running is not None:
        _duplicate(step, work, queued, running)
        return
    active = step.active_lease()
    if active is not None:
        assert queued is None, "queued work is only taken up while the lease is free"
        step.emit(
            "persona.lease.conflict",
            {"active_lease": active.lease, "requested_work_key": work.work_key, "at_ms": step.now},
        )
        enqueue(step, work, "lease_busy")
        step.receipt(
            "trigger",
            work.request_id,
            "lease_busy",
            work_key=work.work_key,
            lease=active.lease,
            queued=True,
            error="active lease already owns persona work",
        )
        return
    if external and money.backpressure(step, usd, tokens):
        _defer(step, work, queued)
        return
    if queued is not None:
        step.queue.remove(queued)
    if external:
        start_work_run(
            step,
            work.request_id,
            work.envelope,
            step.decisions("trigger", work.request_id),
            work.scheduling,
            work.priority,
            work.queued_at_ms,
            preempts,
            work.trace,
        )
    else:
        _run_inline(step, work, cost)


def _defer(step: Step, work: QueueItem, queued: QueueItem | None) -> None:
    """Backpressure: the work waits (queued, reason ``backpressure``) until the runs in flight
    settle or ``backpressure_ms`` passed; its request hears it once."""
    not_before = step.now + step.binding.backpressure_ms
    told = queued is not None and queued.reason == "backpressure"
    if queued is None:
        enqueue(step, work, "backpressure", "w")
        stored = work
    else:
        step.queue.move(queued, "w", "backpressure")
        stored = queued
    stored.not_before_ms = not_before
    step.state.put_item(stored)
    step.queue.waiting_until(not_before, step.head.budget.version, step.now)
    if not told:
        step.receipt(
            "trigger",
            work.request_id,
            "queued",
            work_key=work.work_key,
            queued=True,
            error="backpressure",
            not_before_ms=not_before,
        )


def _deadline_exceeded(step: Step, work: QueueItem, queued: QueueItem | None, deadline: int) -> None:
    """Past its deadline: the work is not dispatched; it fails (no attempt is spent: none ran)."""
    step.emit(
        "persona.trigger.deadline_exceeded",
        {"work_key": work.work_key, "envelope": work.envelope, "deadline_at_ms": deadline, "at_ms": step.now},
    )
    if queued is not None:
        step.queue.remove(queued)
    step.receipt("trigger", work.request_id, "failed", work_key=work.work_key, error=DEADLINE_EXCEEDED)


def _duplicate(step: Step, work: QueueItem, queued: QueueItem | None, running: str | None) -> None:
    """The work key was completed before (``running`` None), or its run is unfinished."""
    payload: dict[str, object] = {"work_key": work.work_key, "envelope": work.envelope}
    payload["reason"] = "already_completed" if running is None else "in_progress"
    if running is not None:
        payload["run_id"] = running
    step.emit("persona.trigger.duplicate", payload)
    if queued is not None:
        step.queue.remove(queued)
    error = None if running is None else f"work key {work.work_key!r} is in progress (run {running})"
    step.receipt("trigger", work.request_id, "duplicate", work_key=work.work_key, run_id=running, error=error)


def run_of_work(step: Step, work_key: str) -> str | None:
    """The unfinished work run of this work key, if any (a retry may be waiting). A
    compensation of the key does not count: new work for the key queues behind it."""
    state = runlog.runs(step)
    for run_id in step.head.open_runs:
        run = state.run(run_id)
        if run is not None and run.kind == "work" and run.work_key == work_key:
            return run_id
    return None


def _run_inline(step: Step, work: QueueItem, cost: RunCost) -> None:
    """Lease acquired, run started, value, budget recorded, value, run completed, lease
    released (in this order), and the ``completed`` receipt."""
    decision = step.decisions("trigger", work.request_id)
    run_id = ids.run_id(step.persona, work.request_id, decision)
    slo = work.scheduling.slo
    tier = slo.tier if slo is not None else None
    subject = rules.of_work(work.envelope, step.binding.entry_workflow, cost.cost_usd, tier)
    step.inline_run = run_id  # no run row to look a trace up in: the work's is the run's
    try:
        _execute_inline(step, work, cost, subject, run_id, decision)
    finally:
        step.inline_run = None


def _execute_inline(
    step: Step, work: QueueItem, cost: RunCost, subject: rules.Subject, run_id: str, decision: int
) -> None:
    envelope = work.envelope
    verdict = policy.judge(step, subject, run_id=run_id, work_key=work.work_key)
    if verdict is not None and verdict.effect == "deny":
        step.receipt("trigger", work.request_id, "failed", work_key=work.work_key, error=rules.POLICY_DENIED)
        return
    if verdict is not None and verdict.redact_keys:
        envelope = rules.masked(envelope, verdict.redact_keys)
    lease = leases.grant(step, ids.lease_id(step.persona, work.request_id, decision), work.work_key)
    step.emit(
        "persona.run.started",
        {
            "work_key": work.work_key,
            "run_id": run_id,
            "started_at_ms": step.now,
            "entry_workflow": step.binding.entry_workflow,
            "lease_id": lease.id,
        },
        run_id,
    )
    metadata = run_value_metadata(envelope, lease, cost)
    values.emit(step, run_id, {"kind": "run_started"}, metadata)
    budget_receipt = money.record_run(step, cost, lease.id)
    for delta in completion_deltas(cost):
        values.emit(step, run_id, delta, metadata)
    outcomes.complete_work(step, run_id, work.work_key, step.binding.entry_workflow, lease)
    step.receipt(
        "trigger",
        work.request_id,
        "completed",
        work_key=work.work_key,
        run_id=run_id,
        lease=lease,
        budget_receipt_id=budget_receipt,
    )
