"""What is unsettled: work that waits, runs or is owed an answer (a pure read model).

For one partition's state: queued triggers and runs waiting for a retry or for the lease
(``queued_triggers``), paused runs (``suspended_subagents``), runs in flight
(``in_flight_llm_calls``) and handoffs sent but not settled (``partial_handoffs``), each
item with an ``id``, ``queued_at_ms`` and ``age_ms``. Workers gather their partitions'
snapshots into one (``GET /unsettled``) and sort it by ``queued_at_ms``, then ``id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import msgspec
import orjson

from .lifecycle import UnsettledSnapshot, payload_summary, trigger_spec_summary
from .queue import Queue
from .runstate import RunRow, RunState
from .state import HANDOFFS_OUT, PERSONAS, HandoffOut, PersonaHead, PersonaState, QueueItem, decode_head
from .store import Transaction

_HANDOFF = msgspec.json.Decoder(HandoffOut)


class Scannable(Protocol):
    """A partition store: rows of a table, in any order."""

    def get(self, table: str, key: str) -> bytes | None: ...

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, bytes]]: ...


def _age(now_ms: int, at_ms: int) -> int:
    return max(now_ms - at_ms, 0)


def queued_trigger(persona: str, item: QueueItem, now_ms: int) -> dict[str, Any]:
    envelope = item.envelope
    return {
        "id": f"trigger://{persona}/{item.work_key}",
        "persona": persona,
        "work_key": item.work_key,
        "request_id": item.request_id,
        "event_id": envelope.source_event_id,
        "spec_summary": trigger_spec_summary(envelope.provider, envelope.kind),
        "queued_at_ms": item.queued_at_ms,
        "age_ms": _age(now_ms, item.queued_at_ms),
        "reason": item.reason,
        "priority": item.priority,
        "held": item.list == "h",
        "waiting": item.list == "w",
        "source": "persona_queue",
    }


def _run_item(persona: str, run: RunRow, since_ms: int, now_ms: int, source: str) -> dict[str, Any]:
    envelope = run.envelope
    item = {
        "id": f"run://{persona}/{run.run_id}",
        "persona": persona,
        "run_id": run.run_id,
        "kind": run.kind,
        "work_key": run.work_key,
        "status": run.status,
        "attempt": run.attempt,
        "entry_workflow": run.entry_workflow,
        "spec_summary": trigger_spec_summary(envelope.provider, envelope.kind),
        "queued_at_ms": since_ms,
        "age_ms": _age(now_ms, since_ms),
        "source": source,
    }
    if run.parent_run_id is not None:
        item["parent_run_id"] = run.parent_run_id
    return item


def persona_unsettled(state: PersonaState, head: PersonaHead, now_ms: int, limit: int) -> UnsettledSnapshot:
    """One persona's unsettled work (at most ``limit`` queued items), without handoffs."""
    snapshot = UnsettledSnapshot()
    persona = head.name
    for item in Queue(state, head.queue).items(limit):
        snapshot.queued_triggers.append(queued_trigger(persona, item, now_ms))
    runs = RunState(state)
    for run_id in head.open_runs:
        run = runs.run(run_id)
        if run is None:
            continue
        if run.status in ("retry_wait", "ready"):
            waiting_since = (
                run.ledger[-1].ended_at_ms if run.ledger and run.ledger[-1].ended_at_ms else run.created_at_ms
            )
            source = "retry" if run.status == "retry_wait" else "budget" if run.blocked else "lease"
            waiting = _run_item(persona, run, waiting_since, now_ms, source)
            waiting["not_before_ms"] = run.not_before_ms
            if run.blocked:
                waiting["reason"] = f"budget_exhausted:{run.blocked}"
            snapshot.queued_triggers.append(waiting)
        elif run.status == "paused":
            snapshot.suspended_subagents.append(_run_item(persona, run, run.created_at_ms, now_ms, "paused_run"))
        else:
            flight = _run_item(persona, run, run.created_at_ms, now_ms, "executor")
            current = run.current
            flight.update(
                lease_id=run.lease_id,
                deadline_ms=run.deadline_ms,
                steps=run.steps,
                usage_usd=run.usage_usd,
                usage_tokens=run.usage_tokens,
                reserved_usd=current.reserved_usd if current is not None else 0.0,
                limits=msgspec.to_builtins(head.binding.run_limits) if head.binding is not None else {},
            )
            snapshot.in_flight_llm_calls.append(flight)
    return snapshot


def partial_handoff(persona: str, handoff: HandoffOut, now_ms: int) -> dict[str, Any]:
    return {
        "id": f"handoff://{persona}/{handoff.handoff_id}",
        "envelope_id": handoff.handoff_id,
        "from": persona,
        "to": handoff.target_persona,
        "payload_summary": payload_summary(handoff.task),
        "queued_at_ms": handoff.sent_at_ms,
        "age_ms": _age(now_ms, handoff.sent_at_ms),
        "target_pipeline": handoff.target_persona,
        "origin_pipeline": handoff.source_run_id,
        "payload": handoff.task,
        "request_id": handoff.request_id,
    }


def partition_unsettled(
    store: Scannable, now_ms: int, *, persona: str | None = None, limit: int = 1000
) -> UnsettledSnapshot:
    """Every persona's unsettled work in one partition store (``persona``: only that one)."""
    snapshot = UnsettledSnapshot()
    txn = Transaction(store)
    heads = (
        ([(persona, raw)] if (raw := store.get(PERSONAS, persona)) is not None else [])
        if persona is not None
        else store.items(PERSONAS)
    )
    for name, raw in heads:
        head = decode_head(raw)
        if head.queue.count or head.open_runs:
            snapshot.extend(persona_unsettled(PersonaState(txn, name), head, now_ms, limit))
    for row_key, raw in store.items(HANDOFFS_OUT):
        sender = orjson.loads(row_key)[0]  # keys are [persona, handoff_id]
        if persona is None or sender == persona:
            snapshot.partial_handoffs.append(partial_handoff(sender, _HANDOFF.decode(raw), now_ms))
    snapshot.sort()
    return snapshot
