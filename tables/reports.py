"""Executors' reports about runs: fencing, then one handler per report kind.

* A report about a run the persona does not know is dead-lettered (``unknown_run``); one
  seen before (same ``event_id``) is dropped, forever.
* A report ingress refused (its time too far ahead), one that does not carry the current
  dispatch's lease, one about a run that is not executing or has ended, and one the run
  machine does not allow in the run's state, are **rejected**: ``run.report_rejected`` on
  the run stream, and nothing else changes — not the persona's clock, not the lease —
  except that the usage or final cost a fenced report carries is recorded on its own
  dispatch's ledger row (spend is never lost, decision 16).
* An accepted report moves the persona's clock to its time, renews the lease, and is handled.
"""

from __future__ import annotations

from collections.abc import Callable

from streams import capability
from streams.inbox import RunReportReceived, TriggerReceived
from streams.records import RunEventKind
from streams.wire import RunEvent, TriggerRequest

from . import children, handoffs, leases, limits, money, outcomes, policy, rules, runlog
from .machines import EXECUTING, run_refusal
from .machines import RunEvent as Move
from .runstate import STEP_OUTPUTS_KEPT, Attempt, RunRow
from .state import HandoffOut
from .step import Step

Handler = Callable[[Step, RunRow, Attempt, RunEvent], None]

#: The run-machine event each report kind is (``completed``/``failed`` end the run).
MOVES: dict[RunEventKind, Move] = {
    "started": "started",
    "heartbeat": "report",
    "step_started": "report",
    "step_completed": "report",
    "step_failed": "report",
    "usage": "report",
    "checkpoint": "report",
    "artifact": "report",
    "handoff": "report",
    "spawn": "report",
    "message": "report",
    "waiting": "wait",
    "input_received": "input",
    "completed": "complete",
    "failed": "fail",
}


def on_report(step: Step, record: RunReportReceived) -> None:
    event = record.event
    state = runlog.runs(step)
    run = state.run(event.run_id)
    if run is None:
        step.dead_letter(
            record,
            event.run_id,
            f"unknown run {event.run_id!r}: persona {step.persona!r} has no such run; the report is ignored",
            "unknown_run",
        )
        return
    if state.seen_report(run, event.event_id, record.at_ms):
        return  # redelivered: dropped silently
    if record.refused is not None:  # not applied: the executor may send it again with its clock fixed
        state.remember_report(run, event.event_id, refused_at_ms=record.at_ms)
        _reject(step, run, event, record.refused)
        state.put_run(run)
        return
    state.remember_report(run, event.event_id)
    attempt = run.attempt_of(event.lease_id)
    problem = _fenced(run, event.lease_id) or _presented(run, event) or run_refusal(run, MOVES[event.kind])
    if problem is not None:
        if attempt is not None:  # spend is never lost
            _spend(step, run, attempt, event)
        _reject(step, run, event, problem, run.terminal_event_id)
        state.put_run(run)
        return
    assert attempt is not None
    step.advance(record.at_ms)
    step.head.counters.reported(step.now)
    _spend(step, run, attempt, event)
    leases.renew(step, run)
    if event.kind == "failed":
        limits.check(step, run)  # a failure whose cost broke a run limit is not retried
    elif event.kind != "completed":
        runlog.move(step, run, MOVES[event.kind])
    if run.status in EXECUTING:
        HANDLERS[event.kind](step, run, attempt, event)
    if run.status in EXECUTING:
        limits.check(step, run)
    state.put_run(run)
    runlog.refresh_timers(step)


def _spend(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    if event.kind == "usage" and (event.tokens or event.cost_usd):
        money.take_spend(step, run, attempt, usage=(event.cost_usd or 0.0, event.tokens or 0))
    elif event.kind in ("completed", "failed") and event.cost is not None:
        money.take_spend(step, run, attempt, final=event.cost)


def _fenced(run: RunRow, lease_id: str) -> str | None:
    if run.terminal:
        return f"run {run.run_id} already {run.status}"
    if run.status not in EXECUTING:
        return f"run {run.run_id} is {run.status.replace('_', ' ')}: no executor holds it (lease {lease_id})"
    if lease_id != run.lease_id:
        return (
            f"stale lease: run {run.run_id} holds lease {run.lease_id} (attempt {run.attempt}), the report"
            f" carries {lease_id}"
        )
    return None


def _presented(run: RunRow, event: RunEvent) -> str | None:
    """A report presenting a capability token must present its own run's and attempt's.
    Only the claims are compared (the signature is the tool adapters' to check): a token
    copied from another run, or kept from an earlier attempt, is fenced like a stale lease."""
    token = event.capability
    if token is None:
        return None
    try:
        claims = capability.claims(token)
    except capability.TokenFormatError as exc:
        return f"unreadable capability token: {exc}"
    if claims.sub != run.run_id or claims.attempt != run.attempt:
        return (
            f"capability token for run {claims.sub} attempt {claims.attempt}: the report is about run"
            f" {run.run_id} attempt {run.attempt}"
        )
    return None


def _reject(step: Step, run: RunRow, event: RunEvent, reason: str, terminal_event_id: str | None = None) -> None:
    runlog.emit(
        step,
        run,
        "run.report_rejected",
        {
            "event_id": event.event_id,
            "kind": event.kind,
            "reason": reason,
            "lease_id": event.lease_id,
            "terminal_event_id": terminal_event_id,
        },
    )


def _present(event: RunEvent, *names: str) -> dict[str, object]:
    return {name: getattr(event, name) for name in names if getattr(event, name) is not None}


# -------------------------------------------------------------------- handlers


def _on_started(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    payload = {"lease_id": run.lease_id, "attempt": run.attempt, "started_at_ms": step.now}
    if event.executor is not None:  # who runs the attempt: the run's BOM lists it
        payload["executor"] = _executor(event)
    if event.model is not None:
        payload["model"] = event.model
    runlog.emit(step, run, "run.started", payload)


def _executor(event: RunEvent) -> dict[str, str]:
    identity = event.executor
    assert identity is not None
    return {"id": identity.id} if identity.version is None else {"id": identity.id, "version": identity.version}


def _on_heartbeat(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    runlog.emit(step, run, "run.heartbeat", {"at_ms": step.now, "deadline_ms": run.deadline_ms})


def _on_step(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    step_id = event.step_id or ""
    if event.kind == "step_started":
        run.steps += 1
        run.current_step_id = step_id
    else:
        if run.current_step_id == step_id:
            run.current_step_id = None
        if event.kind == "step_completed" and event.output is not None:
            run.step_outputs.pop(step_id, None)
            run.step_outputs[step_id] = event.output
            while len(run.step_outputs) > STEP_OUTPUTS_KEPT:
                run.step_outputs.pop(next(iter(run.step_outputs)))
    runlog.emit(
        step,
        run,
        f"run.{event.kind}",
        {**_present(event, "step_id", "name", "output", "error", "retryable", "model", "tool"), "steps": run.steps},
    )
    if event.kind == "step_started":
        if event.tool is not None and not _tool_allowed(step, run, attempt, event.tool, event.step_id):
            return
        _breakpoint(step, run, event)


def _tool_allowed(step: Step, run: RunRow, attempt: Attempt, tool: str, step_id: str | None) -> bool:
    """The policy decides a step that names a tool. A denial ends the run ``failed`` with
    ``policy_denied`` (a terminal failure: no retry; work that held the lease is
    compensated, part of it ran) and tells the executor to cancel it; a redaction masks
    the keys in the run's envelope from now on."""
    decision = policy.judge(step, rules.of_tool(run, attempt.reserved_usd, tool, step_id), run)
    if decision is None:
        return True
    if decision.effect == "deny":
        outcomes.abort(step, run, rules.POLICY_DENIED)  # the report passed the fence: its attempt is the current
        return False
    if decision.redact_keys:
        run.envelope = rules.masked(run.envelope, decision.redact_keys)
    return True


def _breakpoint(step: Step, run: RunRow, event: RunEvent) -> None:
    """A step armed as a breakpoint (by its name or id) started: the run pauses there, once
    (the breakpoint is used up), and its executor is told to pause; ``resume`` continues."""
    armed = run.scheduling.breakpoints
    hit = next((name for name in (event.step_id, event.name) if name is not None and name in armed), None)
    if hit is None or run_refusal(run, "pause") is not None:
        return
    armed.remove(hit)
    runlog.move(step, run, "pause")
    run.active_pause = {"step": hit, "step_id": event.step_id, "reason": "breakpoint", "since_ms": step.now}
    step.head.counters.at_breakpoint += 1
    runlog.emit(step, run, "run.paused", {"reason": "breakpoint", "step": hit, "step_id": event.step_id})
    runlog.send(step, run, "pause", reason=f"breakpoint at step {hit}")


def _on_usage(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    runlog.emit(
        step,
        run,
        "run.usage",
        {
            "tokens": event.tokens or 0,
            "cost_usd": event.cost_usd or 0.0,
            "total_tokens": run.usage_tokens,
            "total_cost_usd": run.usage_usd,
            **_present(event, "model"),
        },
    )


def _on_record(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    if event.kind == "checkpoint":
        run.checkpoint = event.payload
    runlog.emit(step, run, f"run.{event.kind}", _present(event, "step_id", "name", "payload", "output"))


def _on_handoff(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    target, task = event.target_persona or "", (event.task or "")[:4096]
    runlog.emit(
        step,
        run,
        "run.handoff",
        {"target_persona": target, "task": event.task, "handoff_id": event.event_id, "handoff_kind": event.name},
    )
    request = TriggerRequest(
        request_id=handoffs.request_id(run.run_id, event.event_id),
        persona=target,
        provider=handoffs.HANDOFF_PROVIDER,
        kind=event.name or "handoff",
        metadata={
            "handoff_id": event.event_id,
            "handoff_kind": event.name or "handoff",
            "source_persona": step.persona,
            "task": task,
            "parent_run_id": run.run_id,
            "dedupe_key": event.event_id,
        },
        raw=event.payload,
        trace=step.trace(run.trace, run.run_id),  # the target's work continues the run's trace
    )
    step.send("persona_inbox", target, TriggerReceived(at_ms=step.now, source=None, request=request, hold_ms=0))
    handoffs.sent(
        step,
        HandoffOut(
            handoff_id=event.event_id,
            target_persona=target,
            source_run_id=run.run_id,
            request_id=request.request_id,
            task=task,
            sent_at_ms=step.now,
        ),
    )


def _on_waiting(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    runlog.emit(step, run, "run.waiting", _present(event, "name", "payload"))


def _on_input_received(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    runlog.emit(step, run, "run.input_received", _present(event, "name", "payload"))


def _on_message(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    event_id = runlog.emit(step, run, "run.message", {"index": run.transcript, **_present(event, "name", "payload")})
    runlog.transcribe(step, run, "message", event.name or "executor", event.payload, event_id)


def _on_spawn(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    children.spawn(step, run, event)


def _on_completed(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    money.close(step, run, attempt, "complete")
    outcomes.finish(step, run, "completed", output=event.output)


def _on_failed(step: Step, run: RunRow, attempt: Attempt, event: RunEvent) -> None:
    error = event.error or "run failed"
    if event.retryable is not False and run.attempt < step.binding.retry.max_attempts:
        money.close(step, run, attempt, "retry", error)
        outcomes.schedule_retry(step, run, error)
    else:
        money.close(step, run, attempt, "fail", error)
        outcomes.finish(step, run, "failed", error=error)


HANDLERS: dict[RunEventKind, Handler] = {
    "started": _on_started,
    "heartbeat": _on_heartbeat,
    "step_started": _on_step,
    "step_completed": _on_step,
    "step_failed": _on_step,
    "usage": _on_usage,
    "checkpoint": _on_record,
    "artifact": _on_record,
    "handoff": _on_handoff,
    "spawn": _on_spawn,
    "waiting": _on_waiting,
    "input_received": _on_input_received,
    "message": _on_message,
    "completed": _on_completed,
    "failed": _on_failed,
}
