"""The persona transition: seed 000's persona runtime over one ordered inbox.

``apply(txn, record, position)`` is a pure function of the persona's state (read through
``txn``) and one inbox record: it leaves the new state in ``txn`` and returns the records
to publish (outbox events, receipts, run notices, dispatches, dead letters). No clock, no
randomness: time is the record's event time, ids derive from the input.

Gates for new work, in the seed's order (catalog 000.8): paused -> queued; disabled ->
dead-lettered; budget -> budget_exhausted; completed work key -> duplicate; active lease
-> lease_busy (queued, then drained when the lease frees: a deliberate change); else the
run, inline (the trigger carries its cost, or the binding says ``inline``) or dispatched
to an executor (``external``).

Decisions on the seed's quirks (catalog 000.18), each pinned by a test in
``tests/tables/test_persona_quirks.py``:

* Q000-1 ``resume`` does not lift ``disabled`` (it gets a ``rejected`` receipt); ``enable`` does.
* Q000-2 an expired lease is released with ``persona.lease.expired``, by the lease reaper's
  tick or by the next input at or after its expiry.
* Q000-3 ``draining`` queues new work (reason ``draining``); ``failed`` still accepts work.
* Q000-4 kept: the GitHub PR work key ignores ``kind``.
* Q000-5 sticky exhaustion lasts until the end of the window it happened in.
* Q000-6 queued items are typed rows; a malformed one cannot be written, so status never fails.
* Q000-7 drain order is priority, then age (not work-key order).
* Q000-8 the persona's clock never goes backwards: an input older than the last one is
  handled at the last one's time, so no spend is ever "in the future".
* Q000-9 kept: the budget gate runs before the duplicate gate.
* Q000-10 ``binding.triggers`` stays informational; schedules fire from a ticker.
* Q000-11 one agent per partition serialises every persona: no lease race, O(1) per input.
"""

from __future__ import annotations

from typing import Callable

from streams.inbox import (
    BindingChanged,
    ControlReceived,
    LeaseTick,
    PersonaInput,
    RunFinished,
    RunLeaseLost,
    RunRegistered,
    ScheduleTick,
    TriggerReceived,
    persona_of,
)
from streams.outputs import Output
from streams.records import PersonaLease, Receipt, RunCost, RunDispatch, TriggerEnvelope

from . import budget as budgets
from . import ids
from .envelope import SCHEDULE_PROVIDER, normalize_trigger_envelope, schedule_envelope, schedule_name
from .schedule import due
from .state import VALUE_RING, CompletedWork, LeaseRecord, PersonaHead, PersonaState, QueueItem
from .status import PAUSED_EVENT_POLICY
from .step import Step, receipt_output
from .store import Transaction
from .timefmt import format_ms
from .value import completion_deltas, run_value_metadata, value_event, value_receipt

LEASE_HOLDER = "persona-runtime"
NO_COST = RunCost(cost_usd=0.0, tokens=0)


def apply(txn: Transaction, record: PersonaInput, position: int | None = None) -> list[Output]:
    """Apply one inbox record; ``position`` is its inbox offset (None in pure tests)."""
    persona = persona_of(record)
    state = PersonaState(txn, persona)
    head = state.head()
    if head is not None and position is not None and position <= head.applied:
        return _replayed(state, record)
    redelivered = _redelivered(state, record)
    if redelivered is not None:
        return redelivered
    if head is None or not head.bound:
        if isinstance(record, (TriggerReceived, ControlReceived)):
            return [_unknown_persona(record)]
        if head is None and not (isinstance(record, BindingChanged) and record.binding is not None):
            return []  # a notice about a persona that never existed: nothing to change
        head = head or PersonaHead(name=persona)
    step = Step(state, head, max(head.clock_ms, record.at_ms), _cause(record, position))
    HANDLERS[type(record)](step, record)
    step.head.clock_ms = step.now
    if position is not None:
        step.head.applied = position
    state.put_head(step.head)
    return step.outputs


# ------------------------------------------------------------------ idempotency


def _request_key(record: PersonaInput) -> tuple[str, str] | None:
    if isinstance(record, TriggerReceived):
        return "trigger", record.request.request_id
    if isinstance(record, ControlReceived):
        return "control", record.command.command_id
    return None


def _redelivered(state: PersonaState, record: PersonaInput) -> list[Output] | None:
    """A request seen before gets its last receipt again (same ``receipt_id``), nothing else."""
    request = _request_key(record)
    if request is None:
        return None
    seen = state.request(*request)
    if seen is None:
        return None
    return [receipt_output(seen.last)] if seen.last is not None else []


def _replayed(state: PersonaState, record: PersonaInput) -> list[Output]:
    """An inbox record at or below the applied offset: its effects are already stored."""
    return _redelivered(state, record) or []


def _unknown_persona(record: TriggerReceived | ControlReceived) -> Output:
    persona = persona_of(record)
    kind, request_id = _request_key(record)  # type: ignore[misc]
    return receipt_output(Receipt(
        status="rejected", persona=persona, request_id=request_id,
        receipt_id=ids.receipt_id(persona, f"{kind}:{request_id}", 0), at_ms=record.at_ms,
        error=f"unknown persona {persona!r}: it has no binding on persona.bindings",
    ))


def _cause(record: PersonaInput, position: int | None) -> dict[str, object]:
    if isinstance(record, TriggerReceived):
        return record.cause(position, request_id=record.request.request_id)
    if isinstance(record, ControlReceived):
        return record.cause(position, command_id=record.command.command_id)
    if isinstance(record, RunFinished):
        return record.cause(position, run_id=record.run_id, event_id=record.event_id)
    return record.cause(position)


# --------------------------------------------------------------------- handlers


def _on_binding(step: Step, record: BindingChanged) -> None:
    if record.binding is None:
        if step.head.bound:
            step.head.bound = False
            step.emit("persona.binding.removed", {"persona": step.persona, "removed_at_ms": step.now})
        return
    step.head.binding = record.binding
    step.head.bound = True
    if step.head.schedule_cursor_ms is None:
        step.head.schedule_cursor_ms = step.now
    step.emit("persona.binding.updated", {"binding": record.binding.model_dump(mode="json"), "updated_at_ms": step.now})
    _settle(step)


def _on_trigger(step: Step, record: TriggerReceived) -> None:
    request = record.request
    _settle(step)
    if request.provider.lower() == SCHEDULE_PROVIDER:
        schedule = schedule_name(step.binding, request.metadata.get("schedule"))
        envelope = schedule_envelope(step.binding, schedule, step.now)
        step.emit("persona.schedule.fired", {"persona": step.persona, "envelope": envelope.model_dump(mode="json")})
    else:
        envelope = normalize_trigger_envelope(request.provider, request.kind, request.metadata, step.now,
                                              request.request_id, request.raw)
        step.emit("persona.trigger.received", {"persona": step.persona, "envelope": envelope.model_dump(mode="json")})
    _gate_new(step, _item(step, request.request_id, envelope, request.cost, request.priority))


def _on_schedule_tick(step: Step, record: ScheduleTick) -> None:
    _settle(step)
    cursor = step.head.schedule_cursor_ms if step.head.schedule_cursor_ms is not None else step.now
    for schedule, at_ms in due(step.binding, cursor, step.now):
        request_id = f"schedule:{schedule}@{format_ms(at_ms)}"
        if step.state.request("trigger", request_id) is not None:
            continue
        envelope = schedule_envelope(step.binding, schedule, at_ms)
        step.emit("persona.schedule.fired", {"persona": step.persona, "envelope": envelope.model_dump(mode="json")})
        _gate_new(step, _item(step, request_id, envelope, None, 0))
    step.head.schedule_cursor_ms = max(cursor, step.now)


def _on_control(step: Step, record: ControlReceived) -> None:
    command = record.command
    CONTROL[command.action](step, record)


def _on_run_finished(step: Step, record: RunFinished) -> None:
    lease = step.state.lease()
    if lease is None or lease.lease.id != record.lease_id or lease.run_id != record.run_id:
        step.dead_letter(record, record.run_id,
                         f"run {record.run_id} finished ({record.outcome}) but persona {step.persona!r} no longer"
                         f" holds its lease {record.lease_id}: the report is ignored")
        return
    step.state.put_lease(None)
    if record.outcome == "completed":
        budget_receipt = _complete_run(step, lease, record.cost or NO_COST)
        step.receipt("trigger", lease.request_id, "completed", work_key=lease.lease.work_key, run_id=lease.run_id,
                     lease=lease.lease, budget_receipt_id=budget_receipt)
    else:
        error = record.error or f"run {record.outcome}"
        budget_receipt = _record_spend(step, record.cost, lease.lease.id) if record.cost else None
        _release(step, lease.lease)
        step.emit("persona.run.failed", {"work_key": lease.lease.work_key, "run_id": lease.run_id, "error": error,
                                         "failed_at_ms": step.now, "lease_id": lease.lease.id}, lease.run_id)
        if step.head.mode in ("idle", "failed"):
            step.head.mode = "failed"
        step.head.last_error = error
        step.receipt("trigger", lease.request_id, "failed", work_key=lease.lease.work_key, run_id=lease.run_id,
                     lease=lease.lease, error=error, budget_receipt_id=budget_receipt)
    _settle(step)


def _on_lease_tick(step: Step, record: LeaseTick) -> None:
    _settle(step)


HANDLERS: dict[type, Callable[[Step, PersonaInput], None]] = {
    BindingChanged: _on_binding,  # type: ignore[dict-item]
    TriggerReceived: _on_trigger,  # type: ignore[dict-item]
    ControlReceived: _on_control,  # type: ignore[dict-item]
    RunFinished: _on_run_finished,  # type: ignore[dict-item]
    LeaseTick: _on_lease_tick,  # type: ignore[dict-item]
    ScheduleTick: _on_schedule_tick,  # type: ignore[dict-item]
}


# ---------------------------------------------------------------------- control


def _reject_command(step: Step, record: ControlReceived, error: str) -> None:
    step.receipt("control", record.command.command_id, "rejected", error=error)


def _pause(step: Step, record: ControlReceived) -> None:
    step.emit("persona.control.paused", {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY})
    step.head.mode = "paused"
    step.remember("control", record.command.command_id)


def _resume(step: Step, record: ControlReceived) -> None:
    if step.head.mode == "disabled":
        _reject_command(step, record, "persona is disabled; send `enable` to take it back into service")
        return
    step.emit("persona.control.resumed", {"resumed_at_ms": step.now, "drain": True})
    step.head.mode = "idle"
    step.queue.release_held()
    step.remember("control", record.command.command_id)
    _settle(step)


def _disable(step: Step, record: ControlReceived) -> None:
    step.emit("persona.control.disabled", {"disabled_at_ms": step.now})
    step.head.mode = "disabled"
    step.remember("control", record.command.command_id)


def _enable(step: Step, record: ControlReceived) -> None:
    if step.head.mode != "disabled":
        _reject_command(step, record, f"persona is not disabled (it is {step.head.mode}); nothing to enable")
        return
    step.emit("persona.control.enabled", {"enabled_at_ms": step.now})
    step.head.mode = "idle"
    step.queue.release_held()
    step.remember("control", record.command.command_id)
    _settle(step)


def _drain(step: Step, record: ControlReceived) -> None:
    if step.head.mode == "disabled":
        _reject_command(step, record, "persona is disabled; send `enable` before draining it")
        return
    step.emit("persona.control.draining", {"draining_at_ms": step.now, "queued": step.head.queue.count})
    step.head.mode = "draining"
    step.queue.release_held()
    step.remember("control", record.command.command_id)
    _settle(step)


def _record_spend_command(step: Step, record: ControlReceived) -> None:
    command = record.command
    assert command.cost is not None  # the record validator requires it
    exhausted = _enforce(step, command.cost)
    if exhausted is not None:
        step.receipt("control", command.command_id, "budget_exhausted", error=exhausted)
        return
    budget_receipt = _record_spend(step, command.cost, None)
    step.receipt("control", command.command_id, "completed", budget_receipt_id=budget_receipt)


CONTROL: dict[str, Callable[[Step, ControlReceived], None]] = {
    "pause": _pause,
    "resume": _resume,
    "disable": _disable,
    "enable": _enable,
    "drain": _drain,
    "record_spend": _record_spend_command,
}


# ------------------------------------------------------------------------ gates


def _item(step: Step, request_id: str, envelope: TriggerEnvelope, cost: RunCost | None, priority: int) -> QueueItem:
    return QueueItem(work_key=envelope.subject_key, request_id=request_id, envelope=envelope, cost=cost,
                     priority=priority, seq=0, reason="queued", queued_at_ms=step.now)


def _gate_new(step: Step, item: QueueItem) -> None:
    """G1 paused (and draining) -> queued; G2 disabled -> dead-lettered; else G3..G6."""
    mode = step.head.mode
    if mode == "paused":
        _enqueue(step, item, "paused")
        step.receipt("trigger", item.request_id, "queued", work_key=item.work_key, queued=True)
    elif mode == "draining":
        _enqueue(step, item, "draining", held=True)
        step.receipt("trigger", item.request_id, "queued", work_key=item.work_key, queued=True)
    elif mode == "disabled":
        step.emit("persona.trigger.dead_lettered", {"work_key": item.work_key, "envelope": item.envelope.model_dump(mode="json"),
                                                    "reason": "disabled"})
        step.head.disabled_events += 1
        step.receipt("trigger", item.request_id, "dead_lettered", work_key=item.work_key, error="persona is disabled")
    else:
        _attempt(step, item, queued=None)


def _enqueue(step: Step, item: QueueItem, reason: str, held: bool = False) -> None:
    item.reason = reason
    replaced = step.queue.push(item, "held" if held else "ready")
    step.emit("persona.trigger.queued", {"work_key": item.work_key, "envelope": item.envelope.model_dump(mode="json"),
                                         "cost": (item.cost or NO_COST).model_dump(mode="json"), "reason": reason})
    if replaced is not None and replaced.request_id != item.request_id:
        step.receipt("trigger", replaced.request_id, "duplicate", work_key=replaced.work_key,
                     error=f"superseded by request {item.request_id!r} for the same work key")


def _is_external(step: Step, item: QueueItem) -> bool:
    return item.cost is None and step.binding.execution == "external"


def _enforce(step: Step, cost: RunCost) -> str | None:
    """G3: on failure write ``persona.budget.exhausted`` and return the receipt error."""
    record = step.state.budget()
    reason = budgets.enforce(step.binding.budget, record, cost.cost_usd, cost.tokens, step.now)
    if reason is None:
        return None
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit("persona.budget.exhausted", {"receipt_id": receipt_id, "reason": reason, "attempted_cost_usd": cost.cost_usd,
                                           "attempted_tokens": cost.tokens, "persona": step.persona})
    step.state.put_budget(budgets.exhausted(record, reason, receipt_id, step.now))
    error = f"persona budget exhausted: {reason}"
    step.head.last_error = error
    return error


def _attempt(step: Step, item: QueueItem, queued: QueueItem | None) -> None:
    """G3 budget, G4 duplicate, G5 lease, G6 run. ``queued`` is the stored item when draining."""
    external = _is_external(step, item)
    gate_cost = RunCost(cost_usd=step.binding.estimated_run_usd or 0.0, tokens=0) if external else (item.cost or NO_COST)
    error = _enforce(step, gate_cost)
    if error is not None:
        if queued is not None:
            step.queue.hold(queued)
        step.receipt("trigger", item.request_id, "budget_exhausted", work_key=item.work_key,
                     queued=queued is not None, error=error)
        return
    if step.state.completed(item.work_key) is not None:
        step.emit("persona.trigger.duplicate", {"work_key": item.work_key, "envelope": item.envelope.model_dump(mode="json"),
                                                "reason": "already_completed"})
        if queued is not None:
            step.queue.remove(queued)
        step.receipt("trigger", item.request_id, "duplicate", work_key=item.work_key)
        return
    active = step.active_lease()
    if active is not None:
        assert queued is None, "queued work is only taken up while the lease is free"
        step.emit("persona.lease.conflict", {"active_lease": active.lease.model_dump(mode="json"),
                                             "requested_work_key": item.work_key, "at_ms": step.now})
        _enqueue(step, item, "lease_busy")
        step.receipt("trigger", item.request_id, "lease_busy", work_key=item.work_key, lease=active.lease,
                     queued=True, error="active lease already owns persona work")
        return
    if queued is not None:
        step.queue.remove(queued)
    if external:
        _dispatch(step, item)
    else:
        _run_inline(step, item, item.cost or NO_COST)


# ------------------------------------------------------------------------- runs


def _start_run(step: Step, item: QueueItem) -> tuple[str, PersonaLease]:
    """E14 lease acquired, E15 run started, value run_started."""
    decision = step.decisions("trigger", item.request_id)
    run_id = ids.run_id(step.persona, item.request_id, decision)
    lease = PersonaLease(id=ids.lease_id(step.persona, item.request_id, decision), holder=LEASE_HOLDER,
                         work_key=item.work_key, acquired_at_ms=step.now,
                         expires_at_ms=step.now + step.binding.lease_ttl_ms)
    step.emit("persona.lease.acquired", lease.model_dump(mode="json"))
    if step.head.mode == "failed":
        step.head.mode = "idle"
    step.emit("persona.run.started", {"work_key": item.work_key, "run_id": run_id, "started_at_ms": step.now,
                                      "entry_workflow": step.binding.entry_workflow, "lease_id": lease.id}, run_id)
    metadata = run_value_metadata(item.envelope, lease, item.cost or NO_COST)
    _value(step, run_id, {"kind": "run_started"}, metadata)
    return run_id, lease


def _run_inline(step: Step, item: QueueItem, cost: RunCost) -> None:
    run_id, lease = _start_run(step, item)
    record = LeaseRecord(lease=lease, run_id=run_id, request_id=item.request_id, envelope=item.envelope, external=False)
    budget_receipt = _complete_run(step, record, cost)
    step.receipt("trigger", item.request_id, "completed", work_key=item.work_key, run_id=run_id, lease=lease,
                 budget_receipt_id=budget_receipt)


def _dispatch(step: Step, item: QueueItem) -> None:
    run_id, lease = _start_run(step, item)
    record = LeaseRecord(lease=lease, run_id=run_id, request_id=item.request_id, envelope=item.envelope, external=True)
    step.state.put_lease(record)
    binding = step.binding
    # The run agent must know the run before an executor can report on it: phase 0 vs 1.
    step.send("run_inbox", run_id, RunRegistered(
        at_ms=step.now, run_id=run_id, persona=step.persona, lease_id=lease.id, request_id=item.request_id,
        attempt=1, entry_workflow=binding.entry_workflow, envelope=item.envelope,
        deadline_ms=lease.expires_at_ms, limits=binding.run_limits), phase=0)
    step.send("dispatch", run_id, RunDispatch(
        run_id=run_id, persona=step.persona, lease_id=lease.id, attempt=1, entry_workflow=binding.entry_workflow,
        envelope=item.envelope, deadline_ms=lease.expires_at_ms, limits=binding.run_limits,
        parent_run_id=item.envelope.metadata.get("parent_run_id"), action="start"), phase=1)
    step.receipt("trigger", item.request_id, "dispatched", work_key=item.work_key, run_id=run_id, lease=lease)


def _record_spend(step: Step, cost: RunCost, lease_id: str | None) -> str:
    """E11 ``persona.budget.recorded``; returns its receipt id."""
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit("persona.budget.recorded", {"receipt_id": receipt_id, "persona": step.persona, "cost_usd": cost.cost_usd,
                                          "tokens": cost.tokens, "lease_id": lease_id})
    step.state.put_budget(budgets.recorded(step.state.budget(), cost.cost_usd, cost.tokens, receipt_id, step.now))
    return receipt_id


def _complete_run(step: Step, record: LeaseRecord, cost: RunCost) -> str:
    """E11, value events, E17 run completed, E18 lease released (seed order)."""
    lease = record.lease
    budget_receipt = _record_spend(step, cost, lease.id)
    metadata = run_value_metadata(record.envelope, lease, cost)
    for delta in completion_deltas(cost):
        _value(step, record.run_id, delta, metadata)
    step.emit("persona.run.completed", {"work_key": lease.work_key, "run_id": record.run_id, "completed_at_ms": step.now,
                                        "entry_workflow": step.binding.entry_workflow, "lease_id": lease.id}, record.run_id)
    step.state.put_completed(lease.work_key, CompletedWork(run_id=record.run_id, completed_at_ms=step.now))
    step.head.last_run_ms = step.now
    _release(step, lease)
    return budget_receipt


def _release(step: Step, lease: PersonaLease) -> None:
    step.emit("persona.lease.released", {"id": lease.id, "work_key": lease.work_key, "released_at_ms": step.now})


def _value(step: Step, run_id: str, delta: dict, metadata: dict) -> None:
    event = value_event(step.persona, step.binding.template_ref, run_id, delta, metadata, format_ms(step.now))
    step.emit(f"persona.value.{event['kind']}", event, run_id)
    step.state.put_value(step.head.values % VALUE_RING, value_receipt(event))
    step.head.values += 1


# -------------------------------------------------------------- housekeeping


def _settle(step: Step) -> None:
    """At the step's time: release an expired lease, take up queued work, finish a drain."""
    _expire_lease(step)
    if not step.head.bound:
        return
    queue = step.queue
    while step.head.mode in ("idle", "failed", "draining") and step.active_lease() is None:
        item = queue.next_eligible()
        if item is None:
            break
        _attempt(step, item, queued=item)
    if step.head.mode == "draining" and step.active_lease() is None and queue.next_eligible() is None:
        step.emit("persona.control.paused", {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY})
        step.head.mode = "paused"


def _expire_lease(step: Step) -> None:
    record = step.state.lease()
    if record is None or record.lease.expires_at_ms > step.now:
        return
    lease = record.lease
    step.state.put_lease(None)
    step.emit("persona.lease.expired", {"id": lease.id, "work_key": lease.work_key, "expired_at_ms": step.now})
    error = f"lease {lease.id} expired before run {record.run_id} reported its outcome"
    step.head.last_error = error
    step.receipt("trigger", record.request_id, "failed", work_key=lease.work_key, run_id=record.run_id,
                 lease=lease, error=error)
    if record.external:
        step.send("run_inbox", record.run_id, RunLeaseLost(at_ms=step.now, run_id=record.run_id, lease_id=lease.id,
                                                           reason="expired"))
