"""Run control on ``persona.run.control``: pause, resume, cancel, checkpoint, compact, and the
transcript messages guidance, evidence and a2a. Each command is checked against the run
machine, recorded on the run stream, forwarded to the executor as a ``RunDispatch``, and
answered by a ``run_control`` receipt; control sent to a parent reaches every descendant
whose chain of links inherits the inbox.

A command that cannot apply (unknown run, a finished run, a state the machine does not
allow, a time too far ahead) is rejected and changes nothing, not the persona's clock.
"""

from __future__ import annotations

from streams.inbox import RunControlReceived
from streams.wire import RunControl

from . import outcomes, runlog
from .children import descendants_reached
from .machines import EXECUTING, RunEvent, run_refusal
from .runstate import RunRow
from .step import Step

#: The run-machine event of each action (None: any unfinished run takes it).
MOVES: dict[str, RunEvent | None] = {
    "pause": "pause",
    "resume": "resume",
    "cancel": "cancel",
    "checkpoint": "command",
    "compact": "command",
    "guidance": None,
    "evidence": None,
    "a2a": None,
    "break": None,
    "clear_breaks": None,
}


def problem(run: RunRow, action: str) -> str | None:
    """Why ``action`` cannot apply to ``run`` now, or None."""
    move = MOVES[action]
    return None if move is None else run_refusal(run, move)


def on_control(step: Step, record: RunControlReceived) -> None:
    command = record.command
    state = runlog.runs(step)
    run = state.run(command.run_id)
    if run is None:
        step.receipt(
            "run_control",
            command.command_id,
            "rejected",
            run_id=command.run_id,
            error=f"unknown run {command.run_id!r} of persona {step.persona!r}",
        )
        return
    if record.refused is not None:
        step.receipt("run_control", command.command_id, "rejected", run_id=run.run_id, error=record.refused)
        return
    if run.terminal:
        step.receipt(
            "run_control",
            command.command_id,
            "rejected",
            run_id=run.run_id,
            event_id=run.terminal_event_id,
            error=f"run {run.run_id} already {run.status} (event {run.terminal_event_id});"
            f" {command.action!r} changes nothing",
        )
        return
    refused = problem(run, command.action)
    if refused is not None:
        event_id = runlog.emit(
            step,
            run,
            "run.control_rejected",
            {"command_id": command.command_id, "action": command.action, "reason": refused},
        )
        step.receipt("run_control", command.command_id, "rejected", run_id=run.run_id, error=refused, event_id=event_id)
        state.put_run(run)
        return
    step.advance(record.at_ms)
    reason = command.reason or command.action
    if command.action == "cancel":
        event_id = outcomes.cancel(step, run, reason, command.actor, command.command_id)
    else:
        event_id = _apply(step, run, command)
        for descendant in descendants_reached(step, run):
            if problem(descendant, command.action) is None:
                _apply(step, descendant, command)
                state.put_run(descendant)
    state.put_run(run)
    step.receipt("run_control", command.command_id, "completed", run_id=run.run_id, event_id=event_id)
    runlog.refresh_timers(step)


def _break_step(command: RunControl) -> str:
    content = command.content
    name = content.get("step") if isinstance(content, dict) else None
    assert isinstance(name, str) and name, "break without a step name passed validation"
    return name[:256]


def _apply(step: Step, run: RunRow, command: RunControl) -> str:
    payload = {"command_id": command.command_id, "actor": command.actor, "reason": command.reason}
    action = command.action
    move = MOVES[action]
    if move is not None:
        runlog.move(step, run, move)
    if action == "pause":
        event_id = runlog.emit(step, run, "run.paused", payload)
    elif action == "resume":
        run.deadline_ms = max(run.deadline_ms, step.now + step.binding.lease_ttl_ms)
        pause, run.active_pause = run.active_pause, None
        event_id = runlog.emit(step, run, "run.resumed", {**payload, "status": run.status, "pause": pause})
    elif action in ("break", "clear_breaks"):
        armed = run.scheduling.breakpoints
        if action == "clear_breaks":
            armed.clear()
        elif (name := _break_step(command)) not in armed:
            armed.append(name)
        event_id = runlog.emit(step, run, f"run.control.{action}", {**payload, "breakpoints": list(armed)})
        return event_id  # the executor need not know: the pipeline pauses the run
    else:
        event_id = runlog.emit(step, run, f"run.control.{action}", {**payload, "content": command.content})
        if action == "guidance" or action == "evidence" or action == "a2a":
            runlog.transcribe(step, run, action, command.actor, command.content, event_id)
    if run.status in EXECUTING:
        runlog.send(step, run, action, command_id=command.command_id, reason=command.reason, content=command.content)
    return event_id
