"""The persona transition: a persona's behaviour (docs/behaviour.md) over one ordered inbox.

``apply(txn, record, position)`` is a pure function of the persona's state (read through
``txn``) and one inbox record: it leaves the new state in ``txn`` and returns the records
to publish (outbox events, receipts, run notices, dispatches, dead letters). No clock, no
randomness: time is the record's event time, ids derive from the input.

Gates for new work, in this order: paused -> queued; disabled -> dead-lettered;
budget -> budget_exhausted; completed work key -> duplicate; active lease -> lease_busy
(queued, then drained when the lease frees); else the run, inline (the trigger carries
its cost, or the binding says ``inline``) or dispatched to an executor (``external``).

A trigger for a persona that has no binding waits ``hold_ms`` (carried by the record)
for one: if the binding arrives in time the trigger is handled under it, else it is
rejected. Everything with a deadline (a lease, the next cron occurrence, a held trigger)
has a row in the timer index (:mod:`tables.timers`), which the wall-clock timer reads
to tick the persona; the tick's transition decides what is due at the tick's time.

The decisions on the original runtime's quirks are in ``docs/behaviour.md``; each is pinned by a
test in ``tests/tables/test_persona_quirks.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from streams.inbox import (
    PERSONA_INPUT,
    BindingChanged,
    ControlReceived,
    HandoffSettled,
    PersonaInput,
    RunControlReceived,
    RunReportReceived,
    Tick,
    TriggerReceived,
    persona_of,
)
from streams.outputs import Output
from streams.wire import PersonaLease, Receipt, RunCost, TriggerEnvelope, encode

from . import budget as budgets
from . import execution, handoffs, ids
from .envelope import SCHEDULE_PROVIDER, normalize_trigger_envelope, schedule_envelope, schedule_name
from .schedule import due, earliest_due, next_occurrence
from .state import PERSONAS, VALUE_RING, CompletedWork, LeaseRecord, PersonaHead, PersonaState, QueueItem, RequestRecord
from .status import PAUSED_EVENT_POLICY
from .step import Step, receipt_output
from .store import Transaction
from .timefmt import format_ms
from .value import completion_deltas, run_value_metadata, value_event, value_receipt

LEASE_HOLDER = "persona-runtime"
NO_COST = RunCost(cost_usd=0.0, tokens=0)
#: Triggers one persona may have waiting for its binding; more are rejected at once.
MAX_HELD = 1000


class Held(msgspec.Struct, frozen=True):
    """A trigger waiting for its persona's binding, with its inbox offset."""

    position: int | None
    record: TriggerReceived


_HELD = msgspec.json.Decoder(Held)


def apply(txn: Transaction, record: PersonaInput, position: int | None = None) -> list[Output]:
    """Apply one inbox record; ``position`` is its inbox offset (None in pure tests)."""
    persona = persona_of(record)
    state = PersonaState(txn, persona)
    redelivered = _redelivered(state, record)
    if redelivered is not None:
        return redelivered
    head = state.head()
    if head is None or not head.bound:
        if isinstance(record, ControlReceived) or (isinstance(record, TriggerReceived) and record.hold_ms <= 0):
            rejection = _unknown_persona(record)
            if isinstance(record, TriggerReceived):
                return [receipt_output(rejection), *handoffs.rejected_unbound(record.request, rejection)]
            return [receipt_output(rejection)]
        if isinstance(record, TriggerReceived):
            return _hold(state, head or PersonaHead(name=persona), record, position)
        if head is None and not (isinstance(record, BindingChanged) and record.binding is not None):
            return []  # a notice about a persona that never existed: nothing to change
        assert head is not None or isinstance(record, BindingChanged)
        head = head or PersonaHead(name=persona)
    step = Step(state, head, max(head.clock_ms, record.at_ms), _cause(record, position))
    HANDLERS[type(record)](step, record)
    _finish(step)
    return step.outputs


def _finish(step: Step) -> None:
    """Store the head, or drop it when nothing of the persona is left (a persona that was
    never bound and whose held triggers were all rejected)."""
    head = step.head
    head.clock_ms = step.now
    _refresh_next_run(head, step.now)
    if head.binding is None and not head.bound and head.held.count == 0 and head.seq == 0:
        step.state.txn.delete(PERSONAS, head.name)
    else:
        step.state.put_head(head)


# ------------------------------------------------------------------ idempotency


def _request_key(record: PersonaInput) -> tuple[str, str] | None:
    if isinstance(record, TriggerReceived):
        return "trigger", record.request.request_id
    if isinstance(record, ControlReceived):
        return "control", record.command.command_id
    if isinstance(record, RunControlReceived):
        return "run_control", record.command.command_id
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


def _rejection(persona: str, kind: str, request_id: str, at_ms: int, error: str) -> Receipt:
    return Receipt(
        status="rejected",
        persona=persona,
        request_id=request_id,
        receipt_id=ids.receipt_id(persona, f"{kind}:{request_id}", 0),
        at_ms=at_ms,
        error=error,
    )


def _unknown_persona(record: TriggerReceived | ControlReceived) -> Receipt:
    persona = persona_of(record)
    kind, request_id = _request_key(record)  # type: ignore[misc]
    return _rejection(
        persona, kind, request_id, record.at_ms, f"unknown persona {persona!r}: it has no binding on persona.bindings"
    )


def _cause(record: PersonaInput, position: int | None) -> dict[str, object]:
    if isinstance(record, TriggerReceived):
        return record.cause(position, request_id=record.request.request_id)
    if isinstance(record, ControlReceived):
        return record.cause(position, command_id=record.command.command_id)
    if isinstance(record, RunReportReceived):
        return record.cause(position, run_id=record.event.run_id, event_id=record.event.event_id)
    if isinstance(record, RunControlReceived):
        return record.cause(position, run_id=record.command.run_id, command_id=record.command.command_id)
    if isinstance(record, HandoffSettled):
        return record.cause(position, handoff_id=record.handoff_id, request_id=record.request_id)
    return record.cause(position)


# ------------------------------------------------------ triggers awaiting a binding


def _hold(state: PersonaState, head: PersonaHead, record: TriggerReceived, position: int | None) -> list[Output]:
    """Keep a trigger for a persona without a binding until one arrives (or it expires)."""
    request_id = record.request.request_id
    if head.held.count >= MAX_HELD:
        return [
            receipt_output(
                _rejection(
                    head.name,
                    "trigger",
                    request_id,
                    record.at_ms,
                    f"unknown persona {head.name!r}: {MAX_HELD} triggers already wait for"
                    " its binding on persona.bindings",
                )
            )
        ]
    step = Step(state, head, max(head.clock_ms, record.at_ms), _cause(record, position))
    state.put_held(head.held.next, encode(Held(position, record)))
    head.held.next += 1
    step.remember("trigger", request_id)
    if head.held.count == 1:
        step.set_timer("hold", record.at_ms + record.hold_ms)
    _finish(step)
    return step.outputs


def _held_front(step: Step) -> Held | None:
    raw = step.state.held(step.head.held.first)
    return None if raw is None else _HELD.decode(raw)


def _pop_held(step: Step) -> None:
    step.state.put_held(step.head.held.first, None)
    step.head.held.first += 1


def _reject_expired_holds(step: Step) -> None:
    while step.head.held.count:
        held = _held_front(step)
        assert held is not None, "held trigger row is missing"
        record = held.record
        if record.at_ms + record.hold_ms > step.now:
            step.set_timer("hold", record.at_ms + record.hold_ms)
            return
        _pop_held(step)
        receipt = _rejection(
            step.persona,
            "trigger",
            record.request.request_id,
            step.now,
            f"unknown persona {step.persona!r}: no binding arrived on persona.bindings within"
            f" {record.hold_ms} ms of the trigger",
        )
        step.state.put_request("trigger", record.request.request_id, RequestRecord(decisions=1, last=receipt))
        step.outputs.append(receipt_output(receipt))
    step.set_timer("hold", None)


def _release_holds(step: Step) -> None:
    """The persona is bound: handle its held triggers, oldest first, under the binding."""
    cause = step.cause
    while step.head.held.count:
        held = _held_front(step)
        assert held is not None, "held trigger row is missing"
        _pop_held(step)
        step.cause = _cause(held.record, held.position)
        _on_trigger(step, held.record)
    step.cause = cause
    step.set_timer("hold", None)


# --------------------------------------------------------------------- handlers


def _on_binding(step: Step, record: BindingChanged) -> None:
    source = record.source
    if source is not None:
        if source.offset <= step.head.binding_offset:
            return  # forwarded twice (ingress re-read it after a crash): applied already
        step.head.binding_offset = source.offset
    if record.binding is None:
        if step.head.bound:
            step.head.bound = False
            step.emit("persona.binding.removed", {"persona": step.persona, "removed_at_ms": step.now})
            step.set_timer("schedule", None)
        return
    step.head.binding = record.binding
    step.head.bound = True
    step.head.next_run_base_ms = None  # recompute: the schedules may have changed
    if step.head.schedule_cursor_ms is None:
        step.head.schedule_cursor_ms = step.now
    step.emit("persona.binding.updated", {"binding": record.binding, "updated_at_ms": step.now})
    _schedule_timer(step)
    _release_holds(step)
    _settle(step)


def _on_trigger(step: Step, record: TriggerReceived) -> None:
    request = record.request
    handoffs.received(step, request)
    _settle(step)
    if request.provider.lower() == SCHEDULE_PROVIDER:
        schedule = schedule_name(step.binding, request.metadata.get("schedule"))
        envelope = schedule_envelope(step.binding, schedule, step.now)
        step.emit("persona.schedule.fired", {"persona": step.persona, "envelope": envelope})
    else:
        envelope = normalize_trigger_envelope(
            request.provider, request.kind, request.metadata, step.now, request.request_id, request.raw
        )
        step.emit("persona.trigger.received", {"persona": step.persona, "envelope": envelope})
    _gate_new(step, _item(step, request.request_id, envelope, request.cost, request.priority))


def _on_tick(step: Step, record: Tick) -> None:
    """Whatever fell due by the tick's time: a held trigger's grace, a lease, cron."""
    if not step.head.bound:
        _reject_expired_holds(step)
        return
    _settle(step)
    _fire_schedules(step)


def _fire_schedules(step: Step) -> None:
    binding = step.binding
    if not binding.schedules:
        return
    cursor = step.head.schedule_cursor_ms if step.head.schedule_cursor_ms is not None else step.now
    for schedule, at_ms in due(binding, cursor, step.now):
        request_id = f"schedule:{schedule}@{format_ms(at_ms)}"
        if step.state.request("trigger", request_id) is not None:
            continue
        envelope = schedule_envelope(binding, schedule, at_ms)
        step.emit("persona.schedule.fired", {"persona": step.persona, "envelope": envelope})
        _gate_new(step, _item(step, request_id, envelope, None, 0))
    step.head.schedule_cursor_ms = max(cursor, step.now)
    _schedule_timer(step)


def _schedule_timer(step: Step) -> None:
    binding = step.head.binding
    cursor = step.head.schedule_cursor_ms
    due_at = None
    if step.head.bound and binding is not None and binding.schedules and cursor is not None:
        due_at = earliest_due(binding.schedules, cursor)
    step.set_timer("schedule", due_at)


def _on_control(step: Step, record: ControlReceived) -> None:
    CONTROL[record.command.action](step, record)


def _on_run_report(step: Step, record: RunReportReceived) -> None:
    execution.on_report(step, record)
    _settle(step, by_time=False)


def _on_run_control(step: Step, record: RunControlReceived) -> None:
    execution.on_control(step, record)
    _settle(step, by_time=False)


def _on_handoff_settled(step: Step, record: HandoffSettled) -> None:
    handoffs.on_settled(step, record)


HANDLERS: dict[type, Callable[[Step, PersonaInput], None]] = {
    BindingChanged: _on_binding,  # type: ignore[dict-item]
    TriggerReceived: _on_trigger,  # type: ignore[dict-item]
    ControlReceived: _on_control,  # type: ignore[dict-item]
    RunReportReceived: _on_run_report,  # type: ignore[dict-item]
    RunControlReceived: _on_run_control,  # type: ignore[dict-item]
    Tick: _on_tick,  # type: ignore[dict-item]
    HandoffSettled: _on_handoff_settled,  # type: ignore[dict-item]
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
    assert command.cost is not None, "record_spend without a cost passed validation"
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
    return QueueItem(
        work_key=envelope.subject_key,
        request_id=request_id,
        envelope=envelope,
        cost=cost,
        priority=priority,
        seq=0,
        reason="queued",
        queued_at_ms=step.now,
    )


def _gate_new(step: Step, item: QueueItem) -> None:
    """Paused (and draining) -> queued; disabled -> dead-lettered; else the other gates."""
    mode = step.head.mode
    if mode == "paused":
        _enqueue(step, item, "paused")
        step.receipt("trigger", item.request_id, "queued", work_key=item.work_key, queued=True)
    elif mode == "draining":
        _enqueue(step, item, "draining", held=True)
        step.receipt("trigger", item.request_id, "queued", work_key=item.work_key, queued=True)
    elif mode == "disabled":
        step.emit(
            "persona.trigger.dead_lettered",
            {"work_key": item.work_key, "envelope": item.envelope, "reason": "disabled"},
        )
        step.head.disabled_events += 1
        step.receipt("trigger", item.request_id, "dead_lettered", work_key=item.work_key, error="persona is disabled")
    else:
        _attempt(step, item, queued=None)


def _enqueue(step: Step, item: QueueItem, reason: str, held: bool = False) -> None:
    item.reason = reason
    replaced = step.queue.push(item, "held" if held else "ready")
    step.emit(
        "persona.trigger.queued",
        {"work_key": item.work_key, "envelope": item.envelope, "cost": item.cost or NO_COST, "reason": reason},
    )
    if replaced is not None and replaced.request_id != item.request_id:
        step.receipt(
            "trigger",
            replaced.request_id,
            "duplicate",
            work_key=replaced.work_key,
            error=f"superseded by request {item.request_id!r} for the same work key",
        )


def _is_external(step: Step, item: QueueItem) -> bool:
    return item.cost is None and step.binding.execution == "external"


def _enforce(step: Step, cost: RunCost) -> str | None:
    """The budget gate: on failure write ``persona.budget.exhausted``, return the receipt error."""
    reason = budgets.enforce(step.binding.budget, step.head.budget, cost.cost_usd, cost.tokens, step.now)
    if reason is None:
        return None
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit(
        "persona.budget.exhausted",
        {
            "receipt_id": receipt_id,
            "reason": reason,
            "attempted_cost_usd": cost.cost_usd,
            "attempted_tokens": cost.tokens,
            "persona": step.persona,
        },
    )
    budgets.mark_exhausted(step.head.budget, reason, receipt_id, step.now)
    error = f"persona budget exhausted: {reason}"
    step.head.last_error = error
    return error


def _attempt(step: Step, item: QueueItem, queued: QueueItem | None) -> None:
    """Budget, duplicate, lease, then the run. ``queued`` is the stored item when draining."""
    external = _is_external(step, item)
    gate_cost = (
        RunCost(cost_usd=step.binding.estimated_run_usd or 0.0, tokens=0) if external else (item.cost or NO_COST)
    )
    error = _enforce(step, gate_cost)
    if error is not None:
        if queued is not None:
            step.queue.hold(queued)
        step.receipt(
            "trigger",
            item.request_id,
            "budget_exhausted",
            work_key=item.work_key,
            queued=queued is not None,
            error=error,
        )
        return
    if step.state.completed(item.work_key) is not None:
        step.emit(
            "persona.trigger.duplicate",
            {"work_key": item.work_key, "envelope": item.envelope, "reason": "already_completed"},
        )
        if queued is not None:
            step.queue.remove(queued)
        step.receipt("trigger", item.request_id, "duplicate", work_key=item.work_key)
        return
    running = _run_of_work(step, item.work_key)
    if running is not None:
        step.emit(
            "persona.trigger.duplicate",
            {"work_key": item.work_key, "envelope": item.envelope, "reason": "in_progress", "run_id": running},
        )
        if queued is not None:
            step.queue.remove(queued)
        step.receipt(
            "trigger",
            item.request_id,
            "duplicate",
            work_key=item.work_key,
            run_id=running,
            error=f"work key {item.work_key!r} is in progress (run {running})",
        )
        return
    active = step.active_lease()
    if active is not None:
        assert queued is None, "queued work is only taken up while the lease is free"
        step.emit(
            "persona.lease.conflict",
            {"active_lease": active.lease, "requested_work_key": item.work_key, "at_ms": step.now},
        )
        _enqueue(step, item, "lease_busy")
        step.receipt(
            "trigger",
            item.request_id,
            "lease_busy",
            work_key=item.work_key,
            lease=active.lease,
            queued=True,
            error="active lease already owns persona work",
        )
        return
    if queued is not None:
        step.queue.remove(queued)
    if external:
        execution.start_work_run(step, item.request_id, item.envelope, step.decisions("trigger", item.request_id))
    else:
        _run_inline(step, item, item.cost or NO_COST)


# ------------------------------------------------------------------------- runs


def _start_run(step: Step, item: QueueItem) -> tuple[str, PersonaLease]:
    """Lease acquired, run started, value run_started."""
    decision = step.decisions("trigger", item.request_id)
    run_id = ids.run_id(step.persona, item.request_id, decision)
    lease = PersonaLease(
        id=ids.lease_id(step.persona, item.request_id, decision),
        holder=LEASE_HOLDER,
        work_key=item.work_key,
        acquired_at_ms=step.now,
        expires_at_ms=step.now + step.binding.lease_ttl_ms,
    )
    step.emit("persona.lease.acquired", lease)
    if step.head.mode == "failed":
        step.head.mode = "idle"
    step.emit(
        "persona.run.started",
        {
            "work_key": item.work_key,
            "run_id": run_id,
            "started_at_ms": step.now,
            "entry_workflow": step.binding.entry_workflow,
            "lease_id": lease.id,
        },
        run_id,
    )
    metadata = run_value_metadata(item.envelope, lease, item.cost or NO_COST)
    value(step, run_id, {"kind": "run_started"}, metadata)
    return run_id, lease


def _run_inline(step: Step, item: QueueItem, cost: RunCost) -> None:
    run_id, lease = _start_run(step, item)
    record = LeaseRecord(lease=lease, run_id=run_id, request_id=item.request_id, envelope=item.envelope, external=False)
    budget_receipt = _complete_run(step, record, cost)
    step.receipt(
        "trigger",
        item.request_id,
        "completed",
        work_key=item.work_key,
        run_id=run_id,
        lease=lease,
        budget_receipt_id=budget_receipt,
    )


def _run_of_work(step: Step, work_key: str) -> str | None:
    """The unfinished external run of this work key, if any (a retry may be waiting)."""
    state = execution.runs(step)
    for run_id in step.head.open_runs:
        run = state.run(run_id)
        if run is not None and run.kind != "child" and run.work_key == work_key:
            return run_id
    return None


def _record_spend(step: Step, cost: RunCost, lease_id: str | None) -> str:
    """``persona.budget.recorded``; returns its receipt id."""
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit(
        "persona.budget.recorded",
        {
            "receipt_id": receipt_id,
            "persona": step.persona,
            "cost_usd": cost.cost_usd,
            "tokens": cost.tokens,
            "lease_id": lease_id,
        },
    )
    budgets.record(step.head.budget, cost.cost_usd, cost.tokens, receipt_id, step.now)
    return receipt_id


def _complete_run(step: Step, record: LeaseRecord, cost: RunCost) -> str:
    """Budget recorded, value events, run completed, lease released (in this order)."""
    lease = record.lease
    budget_receipt = _record_spend(step, cost, lease.id)
    metadata = run_value_metadata(record.envelope, lease, cost)
    for delta in completion_deltas(cost):
        value(step, record.run_id, delta, metadata)
    complete_work(step, record.run_id, lease.work_key, lease)
    return budget_receipt


def complete_work(step: Step, run_id: str, work_key: str, lease: PersonaLease) -> None:
    """A run completed its work: run completed, the work key done for good, lease released."""
    step.emit(
        "persona.run.completed",
        {
            "work_key": work_key,
            "run_id": run_id,
            "completed_at_ms": step.now,
            "entry_workflow": step.binding.entry_workflow,
            "lease_id": lease.id,
        },
        run_id,
    )
    step.state.put_completed(work_key, CompletedWork(run_id=run_id, completed_at_ms=step.now))
    step.head.last_run_ms = step.now
    _release(step, lease)


def _release(step: Step, lease: PersonaLease) -> None:
    step.emit("persona.lease.released", {"id": lease.id, "work_key": lease.work_key, "released_at_ms": step.now})


def value(step: Step, run_id: str, delta: dict, metadata: dict) -> None:
    event = step.redacted(
        value_event(step.persona, step.binding.template_ref, run_id, delta, metadata, format_ms(step.now))
    )
    step.emit(f"persona.value.{event['kind']}", event, run_id)
    step.state.put_value(step.head.values % VALUE_RING, value_receipt(event))
    step.head.values += 1


# -------------------------------------------------------------- housekeeping


def _settle(step: Step, by_time: bool = True) -> None:
    """At the step's time: leases and runs that fell due, then take up waiting work (runs
    waiting for the lease first, then the queue), then finish a drain.

    ``by_time=False`` (inputs about runs: reports and run control) leaves out what falls
    due by time: those inputs come through the run topics' partitions, not the persona's,
    so one may carry a later time than a report still on its way about the run that holds
    the lease; a lease expires on a tick or on the persona's own inputs instead."""
    if step.head.binding is not None and by_time:
        execution.settle(step)
    if not step.head.bound:
        return
    queue = step.queue

    def lease_free() -> bool:
        return (step.active_lease() if by_time else step.state.lease()) is None

    while step.head.mode in ("idle", "failed", "draining") and lease_free():
        if execution.take_ready(step):
            continue
        item = queue.next_eligible()
        if item is None:
            break
        _attempt(step, item, queued=item)
    if step.head.mode == "draining" and lease_free() and queue.next_eligible() is None and not step.head.ready_runs:
        step.emit("persona.control.paused", {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY})
        step.head.mode = "paused"


def _refresh_next_run(head: PersonaHead, now_ms: int) -> None:
    """``next_scheduled_run`` (the earliest occurrence after the last run, or
    after now before the first run), recomputed only when what it depends on moved."""
    binding = head.binding
    if binding is None or not binding.schedules:
        head.next_run_ms = head.next_run_base_ms = None
        return
    base = now_ms if head.last_run_ms is None else head.last_run_ms
    fresh = head.next_run_base_ms is not None and (
        head.next_run_base_ms == base
        or (
            head.last_run_ms is None
            and head.next_run_ms is not None
            and head.next_run_base_ms <= base < head.next_run_ms
        )
    )
    if fresh:
        return
    found = [t for t in (next_occurrence(e, base) for e in binding.schedules) if t is not None]
    head.next_run_ms = min(found) if found else None
    head.next_run_base_ms = base


def decode(value: bytes) -> PersonaInput:
    """An inbox record from its bytes (raises ``msgspec.DecodeError``/``ValidationError``)."""
    return PERSONA_INPUT.decode(value)
