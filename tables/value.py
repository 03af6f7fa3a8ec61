"""Value events: what a run cost, saved and escalated (docs/behaviour.md, section 12)."""

from __future__ import annotations

from typing import Any

from streams.wire import PersonaLease, PersonaValueReceipt, RunCost, TriggerEnvelope, encode

from .state import VALUE_RING
from .step import Step
from .timefmt import format_ms


def run_value_metadata(envelope: TriggerEnvelope, lease: PersonaLease, cost: RunCost) -> dict[str, Any]:
    """Run facts, with the cost's own metadata merged in last."""
    metadata: dict[str, Any] = {
        "work_key": envelope.subject_key,
        "trigger_provider": envelope.provider,
        "trigger_kind": envelope.kind,
        "lease_id": lease.id,
        "tokens": cost.tokens,
    }
    if cost.frontier_escalations > 0:
        metadata["frontier_escalations"] = cost.frontier_escalations
    if isinstance(cost.metadata, dict):
        metadata.update(cost.metadata)
    elif cost.metadata is not None:
        metadata["run_cost_metadata"] = cost.metadata
    return metadata


def completion_deltas(cost: RunCost) -> list[dict[str, Any]]:
    """The value events after ``run_started`` for a completed run, in order."""
    deltas: list[dict[str, Any]] = []
    if cost.avoided_cost_usd > 0 or cost.deterministic_steps > 0:
        deltas.append(
            {
                "kind": "deterministic_execution",
                "avoided_cost_usd": cost.avoided_cost_usd,
                "deterministic_steps": max(cost.deterministic_steps, 1),
            }
        )
    escalated = cost.frontier_escalations > 0
    if escalated:
        deltas.append(
            {
                "kind": "frontier_escalation",
                "paid_cost_usd": cost.cost_usd,
                "llm_steps": max(cost.llm_steps, cost.frontier_escalations),
            }
        )
    deltas.append(
        {
            "kind": "run_completed",
            "paid_cost_usd": 0.0 if escalated else cost.cost_usd,
            "llm_steps": 0 if escalated else cost.llm_steps,
        }
    )
    return deltas


def value_event(
    persona: str,
    template_ref: str | None,
    run_id: str,
    delta: dict[str, Any],
    metadata: dict[str, Any],
    occurred_at: str,
) -> dict[str, Any]:
    """A value event (costs and steps clamped to >= 0)."""
    return {
        "persona_id": persona,
        "template_ref": template_ref,
        "run_id": run_id,
        "kind": delta["kind"],
        "paid_cost_usd": max(float(delta.get("paid_cost_usd", 0.0)), 0.0),
        "avoided_cost_usd": max(float(delta.get("avoided_cost_usd", 0.0)), 0.0),
        "deterministic_steps": max(int(delta.get("deterministic_steps", 0)), 0),
        "llm_steps": max(int(delta.get("llm_steps", 0)), 0),
        "metadata": metadata,
        "occurred_at": occurred_at,
    }


def value_receipt(event: dict[str, Any]) -> bytes:
    """The value receipt of a value event, as JSON (status splices it in)."""
    return encode(
        PersonaValueReceipt(
            kind=event["kind"],
            run_id=event["run_id"],
            occurred_at=event["occurred_at"],
            paid_cost_usd=event["paid_cost_usd"],
            avoided_cost_usd=event["avoided_cost_usd"],
            deterministic_steps=event["deterministic_steps"],
            llm_steps=event["llm_steps"],
            metadata=event["metadata"],
        )
    )


def emit(step: Step, run_id: str, delta: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Write one value event (the one writer for inline and external runs) and keep its
    receipt in the persona's ring of the last :data:`~tables.state.VALUE_RING`."""
    event = step.redacted(
        value_event(step.persona, step.binding.template_ref, run_id, delta, metadata, format_ms(step.now))
    )
    step.emit(f"persona.value.{event['kind']}", event, run_id)
    step.state.put_value(step.head.values % VALUE_RING, value_receipt(event))
    step.head.values += 1
