"""What runs next: after anything that may free the lease or the budget, the persona takes
up waiting work — runs waiting to be dispatched again first (retries, re-queued work,
compensations; children whenever their parent runs), then the queue, highest priority
first, then oldest — and a drain that has nothing left to run ends in ``paused``.
"""

from __future__ import annotations

from . import deadlines, dispatch, gates
from .machines import move_persona
from .queue import Entry
from .status import PAUSED_EVENT_POLICY
from .step import Step

#: Modes in which the persona takes up work.
WORKING = ("idle", "failed", "draining")


def settle(step: Step, by_time: bool = True) -> None:
    """At the step's time: what fell due (leases, retries, durations), then waiting work.

    ``by_time=False`` (inputs about runs: reports and run control) leaves out what falls
    due by time: those inputs come through the run topics' partitions, not the persona's,
    so one may carry a later time than a report still on its way about the run that holds
    the lease; a lease expires on a tick or on the persona's own inputs instead.

    An unbound persona's runs in flight finish under its last binding (their leases
    expire, their retries and compensations are dispatched); its queued triggers wait
    for a rebind."""
    head = step.head
    if head.binding is None:
        return
    if by_time:
        deadlines.settle(step)
    queue = step.queue
    queue.wake(head.budget.version, step.now)
    dispatch.take_children(step)

    def lease_free() -> bool:
        return (step.active_lease() if by_time else step.state.lease()) is None

    while head.mode in WORKING and lease_free():
        entry = _next(step)
        if entry is None:
            break
        preempts = queue.preempts(entry)
        if entry.run_id is not None:
            dispatch.take_run(step, queue, entry, preempts)
        else:
            work = queue.get(entry.work_key or "")
            assert work is not None, f"queued item {entry.work_key!r} is missing"
            gates.attempt(step, work, queued=work, preempts=preempts)
    queue.schedule_wake(step)
    if head.bound and head.mode == "draining" and lease_free() and queue.next_ready() is None:
        step.emit("persona.control.paused", {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY})
        move_persona(head, "drained")


def _next(step: Step) -> Entry | None:
    """The first ready entry; while the persona is unbound, the first ready run (its queued
    triggers wait for a rebind)."""
    if step.head.bound:
        return step.queue.next_ready()
    return next((entry for entry in step.queue.ready_entries() if entry.run_id is not None), None)
