"""A run's bill of materials (``run.bom``): what ran it, with which models and tools, at
what cost, from which checkpoints, under which policy decisions, with which children.

Written once, right after the run's terminal event, from the run row's ledger and the
run stream's kept events. Every list holds at most :data:`LIST_CAP` entries (the first
ones); ``truncated`` names each list that was cut and how long it was. The worker signs
the event after the transition (the signature is no part of the transition's output).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from streams import canonical

from . import runlog
from .runstate import RUN_EVENTS_KEPT, RunRow, RunState
from .step import Step

#: The longest any list of a BOM gets (attempts, executors, models, tools, checkpoints,
#: policy decisions, children): a run's BOM stays a small record however long it ran.
LIST_CAP = 32


class _Event(msgspec.Struct):
    """What a BOM reads of a run-stream event (decoding skips the rest)."""

    seq: int
    kind: str
    payload: dict[str, Any] = {}


_EVENT = msgspec.json.Decoder(_Event)


def digest(value: Any) -> str:
    """sha256 (hex) of ``value``'s canonical JSON (sorted keys, compact)."""
    return hashlib.sha256(canonical.encode(value)).hexdigest()


def _events(state: RunState, run: RunRow) -> list[_Event]:
    found = []
    for seq in range(max(1, run.seq - RUN_EVENTS_KEPT + 1), run.seq + 1):
        raw = state.event(run, seq)
        if raw is not None:
            try:
                found.append(_EVENT.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
    return found


class _Lists:
    """Capped lists, with the full length of each one that was cut."""

    def __init__(self) -> None:
        self.lists: dict[str, list[Any]] = {}
        self.totals: dict[str, int] = {}

    def add(self, name: str, item: Any, *, unique: bool = False) -> None:
        items = self.lists.setdefault(name, [])
        if unique and item in items:
            return
        self.totals[name] = self.totals.get(name, 0) + 1
        if len(items) < LIST_CAP:
            items.append(item)

    def truncated(self) -> dict[str, int]:
        return {name: total for name, total in sorted(self.totals.items()) if total > LIST_CAP}


def build(state: RunState, run: RunRow) -> dict[str, Any]:
    """The BOM of a run that has just ended."""
    lists = _Lists()
    executors: dict[str, Any] = {}  # by lease id, from the executors' ``started`` reports
    for event in _events(state, run):
        payload = event.payload
        if event.kind == "run.started" and "executor" in payload:
            executors[str(payload.get("lease_id"))] = payload["executor"]
            lists.add("executors", payload["executor"], unique=True)
        model, tool = payload.get("model"), payload.get("tool")
        if isinstance(model, str):
            lists.add("models", model, unique=True)
        if isinstance(tool, str):
            lists.add("tools", tool, unique=True)
        if event.kind == "run.checkpoint":
            lists.add("checkpoints", {"seq": event.seq, "sha256": digest(payload.get("payload"))})
        elif event.kind == "run.policy_decision":
            lists.add("policy_decisions", {"seq": event.seq, **payload})
    for attempt in run.ledger:
        lists.add(
            "attempts",
            {
                "dispatch": attempt.dispatch,
                "attempt": attempt.attempt,
                "lease_id": attempt.lease_id,
                "status": attempt.status,
                "started_at_ms": attempt.started_at_ms,
                "ended_at_ms": attempt.ended_at_ms,
                "tokens": attempt.actual_tokens,
                "cost_usd": attempt.actual_usd,
                "executor": executors.get(attempt.lease_id),
            },
        )
    for child in run.children:
        lists.add("children", child)
    bom: dict[str, Any] = {
        "run_id": run.run_id,
        "persona": run.persona,
        "kind": run.kind,
        "workflow": run.entry_workflow,
        "status": run.status,
        "parent_run_id": run.parent_run_id,
        "tokens": run.usage_tokens,
        "cost_usd": run.usage_usd,
    }
    for name in ("attempts", "executors", "models", "tools", "checkpoints", "policy_decisions", "children"):
        bom[name] = lists.lists.get(name, [])
    bom["truncated"] = lists.truncated()
    return bom


def emit(step: Step, run: RunRow) -> str:
    """Append the run's ``run.bom`` event; return its id."""
    return runlog.emit(step, run, "run.bom", build(runlog.runs(step), run))
