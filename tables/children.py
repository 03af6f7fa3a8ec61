"""Children: runs a run spawns under its lease and budget (seed 001 spawn modes), and the
inbox rules that decide which descendants hear the run control sent to a parent."""

from __future__ import annotations

from streams.wire import RunEvent, TriggerEnvelope

from . import ids, money, runlog
from .dispatch import defer_child, dispatch
from .rules import POLICY_DENIED
from .runstate import RunRow
from .state import Scheduling
from .step import Step


def inbox_execution_ids(own: str, spawn_mode: str | None, inherit_inbox: bool, parent: str | None) -> list[str]:
    """Whose inboxes a run reads: its own, and its parent's when it is a child spawned to
    inherit the inbox (and has a parent)."""
    if spawn_mode == "child" and inherit_inbox and parent is not None:
        return [own, parent]
    return [own]


def spawn(step: Step, parent: RunRow, event: RunEvent) -> None:
    """A ``spawn`` report: a child run (one per key within the parent's dispatch), if the
    budget gate lets its reservation through; else the spawn is refused and the parent told."""
    state = runlog.runs(step)
    child_key = event.child_key or ""
    child_id = ids.child_run_id(parent.run_id, parent.dispatches, child_key)
    if state.run(child_id) is not None:
        return
    usd, tokens = money.reservation(step.binding)
    reason = money.refusal(step, usd, tokens)
    if reason is not None:
        runlog.emit(step, parent, "run.spawn_rejected", {"child_key": child_key, "reason": f"budget:{reason}"})
        runlog.send(
            step,
            parent,
            "spawn_rejected",
            content={"child_key": child_key, "reason": f"persona budget exhausted: {reason}"},
        )
        return
    metadata = {"parent_run_id": parent.run_id, "child_key": child_key}
    if event.task:
        metadata["task"] = event.task
    envelope = TriggerEnvelope(
        provider="spawn",
        kind=child_key,
        subject_key=f"{parent.work_key}/{child_key}",
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
        entry_workflow=event.entry_workflow or parent.entry_workflow,
        root_run_id=parent.root_run_id,
        parent_run_id=parent.run_id,
        spawn_mode=event.spawn_mode,
        background=event.background,
        inherit_inbox=event.inherit_inbox,
        child_key=child_key,
        created_at_ms=step.now,
        scheduling=Scheduling(slo=parent.scheduling.slo, deadline_at_ms=parent.scheduling.deadline_at_ms),
        priority=parent.priority,
        queued_at_ms=step.now,
        trace=runlog.trace_from(step, parent.trace, child_id),
    )
    parent.children.append(child_id)
    runlog.emit(
        step,
        parent,
        "run.spawned",
        {
            "child_run_id": child_id,
            "child_key": child_key,
            "entry_workflow": child.entry_workflow,
            "spawn_mode": event.spawn_mode,
            "background": event.background,
            "inherit_inbox": event.inherit_inbox,
        },
    )
    runlog.register(step, child)
    if money.backpressure(step, usd, tokens):  # deferred, never refused: it waits to be dispatched
        runlog.ready(step, child)
        defer_child(step, child)
        return
    refused = dispatch(step, child, takes_lease=False)
    assert refused in (None, POLICY_DENIED), f"the spawn's gate passed, the dispatch's refused: {refused}"


def descendants_reached(step: Step, run: RunRow) -> list[RunRow]:
    """Unfinished descendants that read ``run``'s inbox through a chain of inheriting links."""
    state = runlog.runs(step)
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
