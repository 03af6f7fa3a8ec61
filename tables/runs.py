"""The run transition: one executing run's lifecycle, fenced by its lease.

Runs are dispatched by the persona transition (``RunRegistered`` arrives in the run
inbox before the executor sees the dispatch). Executors report ``RunEvent``s; a report
whose ``lease_id`` is not the run's lease, about an unknown run, or after the run ended,
is dead-lettered with the reason. ``completed``/``failed``/``cancel`` end the run and
notify the persona (``RunFinished``), which releases the lease and records the spend.
A ``handoff`` report becomes a trigger for the target persona.

State: one row per run in ``runs``, written once per transition (atomic by itself).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from streams.inbox import (
    RunCommanded,
    RunFinished,
    RunInput,
    RunLeaseLost,
    RunRegistered,
    RunReported,
    TriggerReceived,
    run_of,
)
from streams.outputs import Output
from streams.wire import RunCost, RunDispatch, TriggerRequest, encode

from . import ids
from .state import Row
from .step import dead_letter_output, outbox_output
from .store import Transaction

RUNS = "runs"
TERMINAL = ("completed", "failed", "cancelled", "expired")
#: Report/command ids remembered per run to drop redeliveries.
RECENT_IDS = 64

RunStatus = Literal["dispatched", "running", "paused", "completed", "failed", "cancelled", "expired"]


class RunRecord(Row, kw_only=True):
    """A run: what the persona agent registered, and what happened to it since."""

    registration: RunRegistered
    status: RunStatus = "dispatched"
    seq: int = 0
    clock_ms: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    recent: list[str] = msgspec.field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.registration.run_id

    @property
    def persona(self) -> str:
        return self.registration.persona

    @property
    def lease_id(self) -> str:
        return self.registration.lease_id


_RUN = msgspec.json.Decoder(RunRecord)


class RunStep:
    def __init__(self, run: RunRecord, now: int, cause: dict[str, Any]) -> None:
        self.run = run
        self.now = now
        self.cause = cause
        self.outputs: list[Output] = []

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        run = self.run
        run.seq += 1
        self.outputs.append(outbox_output(f"run:{run.run_id}", run.seq, kind, run.persona, run.run_id, self.now,
                                          payload, self.cause))

    def send(self, role: str, key: str, value: Any) -> None:
        self.outputs.append(Output(role, key, encode(value), (("run_id", self.run.run_id),)))

    def dispatch(self, action: str, command_id: str | None = None, reason: str | None = None, content: Any = None) -> None:
        run = self.run.registration
        self.send("dispatch", run.run_id, RunDispatch(
            run_id=run.run_id, persona=run.persona, lease_id=run.lease_id, attempt=run.attempt,
            entry_workflow=run.entry_workflow, envelope=run.envelope, deadline_ms=run.deadline_ms,
            limits=run.limits, action=action, command_id=command_id, reason=reason, content=content))

    def finish(self, outcome: Literal["completed", "failed", "cancelled"], cost: RunCost | None,
               error: str | None, event_id: str) -> None:
        run = self.run
        self.send("persona_inbox", run.persona, RunFinished(
            at_ms=self.now, persona=run.persona, run_id=run.run_id, lease_id=run.lease_id,
            outcome=outcome, cost=cost, error=error, event_id=event_id))

    def remember(self, identifier: str) -> None:
        self.run.recent = (self.run.recent + [identifier])[-RECENT_IDS:]


def _rejection(record: RunInput, key: str, error: str, reason: str) -> Output:
    return dead_letter_output(record, key, error, record.at_ms, "persona.run.inbox", reason)


def _cause(record: RunInput, position: int | None) -> dict[str, Any]:
    if isinstance(record, RunReported):
        return record.cause(position, event_id=record.event.event_id)
    if isinstance(record, RunCommanded):
        return record.cause(position, command_id=record.command.command_id)
    return record.cause(position)


def apply(txn: Transaction, record: RunInput, position: int | None = None) -> list[Output]:
    run_id = run_of(record)
    run = txn.load(RUNS, run_id, _RUN)
    if isinstance(record, RunRegistered):
        if run is not None:
            return []  # registered before (a replayed dispatch)
        run = RunRecord(registration=record, clock_ms=record.at_ms)
        step = RunStep(run, record.at_ms, _cause(record, position))
        step.emit("run.dispatched", {"lease_id": record.lease_id, "attempt": record.attempt,
                                     "work_key": record.envelope.subject_key, "entry_workflow": record.entry_workflow,
                                     "deadline_ms": record.deadline_ms})
    elif run is None:
        return [_rejection(record, run_id, f"unknown run {run_id!r}: no run with this id was dispatched", "unknown_run")]
    else:
        identifier = _identifier(record)
        if identifier is not None and identifier in run.recent:
            return []  # a redelivered report or command
        problem = _fenced(run, record)
        if problem is not None:
            return [_rejection(record, run_id, problem, "stale_report")]
        step = RunStep(run, max(run.clock_ms, record.at_ms), _cause(record, position))
        if isinstance(record, RunReported):
            _on_report(step, record)
        elif isinstance(record, RunCommanded):
            _on_command(step, record)
        elif isinstance(record, RunLeaseLost):
            _on_lease_lost(step, record)
        if identifier is not None:
            step.remember(identifier)
        run.clock_ms = step.now
    txn.put(RUNS, run_id, run)
    return step.outputs


def _identifier(record: RunInput) -> str | None:
    if isinstance(record, RunReported):
        return "event:" + record.event.event_id
    if isinstance(record, RunCommanded):
        return "command:" + record.command.command_id
    return None


def _fenced(run: RunRecord, record: RunInput) -> str | None:
    if isinstance(record, RunLeaseLost):
        return None if record.lease_id == run.lease_id else f"lease {record.lease_id} is not run {run.run_id}'s lease"
    if isinstance(record, RunReported) and record.event.lease_id != run.lease_id:
        return (f"stale lease: run {run.run_id} holds lease {run.lease_id}, the report carries"
                f" {record.event.lease_id}; fenced reports are ignored")
    if run.status in TERMINAL:
        what = f"report {record.event.kind!r}" if isinstance(record, RunReported) else f"command {record.command.action!r}"  # type: ignore[union-attr]
        return f"run {run.run_id} already {run.status}; {what} ignored"
    return None


def _on_report(step: RunStep, record: RunReported) -> None:
    event = record.event
    run = step.run
    kind = event.kind
    if kind == "started":
        run.status = "running"
        step.emit("run.started", {"lease_id": run.lease_id, "attempt": run.registration.attempt,
                                  "started_at_ms": step.now})
    elif kind == "heartbeat":
        step.emit("run.heartbeat", {"at_ms": step.now})
    elif kind in ("step_started", "step_completed", "step_failed"):
        step.emit(f"run.{kind}", _present(event, "step_id", "name", "output", "error", "retryable", "tokens", "cost_usd"))
    elif kind == "usage":
        run.tokens += event.tokens or 0
        run.cost_usd += event.cost_usd or 0.0
        step.emit("run.usage", {"tokens": event.tokens or 0, "cost_usd": event.cost_usd or 0.0,
                                "total_tokens": run.tokens, "total_cost_usd": run.cost_usd})
    elif kind in ("checkpoint", "artifact"):
        step.emit(f"run.{kind}", _present(event, "name", "payload", "output"))
    elif kind == "handoff":
        assert event.target_persona is not None and event.task is not None
        step.emit("run.handoff", {"target_persona": event.target_persona, "task": event.task,
                                  "handoff_id": event.event_id, "handoff_kind": event.name})
        request = TriggerRequest(
            request_id=ids.bounded(f"handoff:{run.run_id}:{event.event_id}"), persona=event.target_persona, provider="handoff",
            kind=event.name or "handoff",
            metadata={"handoff_id": event.event_id, "handoff_kind": event.name or "handoff", "source_persona": run.persona,
                      "task": event.task[:4096], "parent_run_id": run.run_id, "dedupe_key": event.event_id},
            raw=event.payload)
        step.send("persona_inbox", event.target_persona, TriggerReceived(at_ms=step.now, source=record.source, request=request))
    else:  # completed / failed
        cost = event.cost or (RunCost(cost_usd=run.cost_usd, tokens=run.tokens) if run.tokens or run.cost_usd else None)
        run.status = "completed" if kind == "completed" else "failed"
        step.emit(f"run.{kind}", {"cost": cost, **_present(event, "output", "error", "retryable")})
        step.finish("completed" if kind == "completed" else "failed", cost, event.error, event.event_id)


def _on_command(step: RunStep, record: RunCommanded) -> None:
    command = record.command
    run = step.run
    step.emit(f"run.control.{command.action}", {"actor": command.actor, "reason": command.reason,
                                                "command_id": command.command_id})
    step.dispatch(command.action, command.command_id, command.reason, command.content)
    if command.action == "pause":
        run.status = "paused"
    elif command.action == "resume":
        run.status = "running"
    elif command.action == "cancel":
        run.status = "cancelled"
        error = f"cancelled by {command.actor}" + (f": {command.reason}" if command.reason else "")
        step.finish("cancelled", None, error, "command:" + command.command_id)


def _on_lease_lost(step: RunStep, record: RunLeaseLost) -> None:
    step.run.status = "expired"
    step.emit("run.lease_lost", {"lease_id": record.lease_id, "reason": record.reason})
    step.dispatch("cancel", reason=f"lease {record.reason}")


def _present(event: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(event, name) for name in names if getattr(event, name) is not None}
