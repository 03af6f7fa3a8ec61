"""What runs next: after anything that may free the lease or the budget, the persona takes
up waiting work — runs waiting to be dispatched again first (retries, re-queued work,
compensations; children whenever their parent runs), then the queue, highest priority
first, then oldest — and a drain that has nothing left to run ends in ``paused``.
"""

from __future__ import annotations

from . import deadlines, dispatch, gates
from .machines import move_persona
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

    def lease_free() -> bool:
        return (step.active_lease() if by_time else step.state.lease()) is None

    while True:
        free = head.mode in WORKING and lease_free()
        if dispatch.take_ready(step, free):
            continue
        if not (free and head.bound):
            break
        work = queue.next_eligible()
        if work is None:
            break
        gates.attempt(step, work, queued=work)
    if (
        head.bound
        and head.mode == "draining"
        and lease_free()
        and queue.next_eligible() is None
        and not head.ready_runs
    ):
        step.emit("persona.control.paused", {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY})
        move_persona(head, "drained")
