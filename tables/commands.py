"""Persona control commands (``persona.control``): pause, resume, disable, enable, drain,
record_spend. Modes change only through the persona machine (:mod:`tables.machines`);
a command the machine does not allow gets a ``rejected`` receipt and changes nothing.
Successful commands answer through the outbox (their events carry ``cause.command_id``);
``record_spend`` gets a receipt.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.inbox import ControlReceived

from . import money
from .machines import PERSONAS, PersonaEvent, move_persona
from .state import QueueItem
from .status import PAUSED_EVENT_POLICY
from .step import Step

#: A command's effect; True when queued work may be taken up now (the queue drains).
Command = Callable[[Step, ControlReceived], bool]


def _mode(event: PersonaEvent, kind: str, payload: Callable[[Step], dict[str, object]], *, drains: bool) -> Command:
    """A command that changes the persona's mode by ``event``: rejected if the machine does
    not allow it now; else ``kind`` is written, the mode moves, and when the command
    ``drains``, work held back until now is released and the queue may drain."""

    def command(step: Step, record: ControlReceived) -> bool:
        if PERSONAS.target(step.head.mode, event) is None:
            step.receipt("control", record.command.command_id, "rejected", error=PERSONAS.reason(step.head.mode, event))
            return False
        step.emit(kind, payload(step))
        move_persona(step.head, event)
        if drains:
            step.queue.release_held()
        step.remember("control", record.command.command_id)
        return drains

    return command


def _record_spend(step: Step, record: ControlReceived) -> bool:
    command = record.command
    assert command.cost is not None, "record_spend without a cost passed validation"
    error = money.gate(step, command.cost.cost_usd, command.cost.tokens)
    if error is not None:
        step.receipt("control", command.command_id, "budget_exhausted", error=error)
        return False
    budget_receipt = money.record_run(step, command.cost, None)
    step.receipt("control", command.command_id, "completed", budget_receipt_id=budget_receipt)
    return False


def _cancel(step: Step, record: ControlReceived) -> bool:
    """Cancel queued (or held, or deferred) work by its work key or request id: the item
    leaves the queue, its request gets a ``cancelled`` receipt, the command ``completed``;
    nothing queued under that key or request: ``rejected``."""
    command = record.command
    target = command.target
    assert target is not None, "cancel without a target passed validation"
    work = _queued(step, target.work_key, target.request_id)
    if work is None:
        what = f"work key {target.work_key!r}" if target.work_key is not None else f"request {target.request_id!r}"
        step.receipt("control", command.command_id, "rejected", error=f"nothing queued for {what}")
        return False
    step.queue.remove(work)
    reason = command.reason or "cancelled"
    step.emit(
        "persona.trigger.cancelled",
        {"work_key": work.work_key, "request_id": work.request_id, "actor": command.actor, "reason": reason},
    )
    step.receipt(
        "trigger",
        work.request_id,
        "cancelled",
        work_key=work.work_key,
        error=f"cancelled by {command.actor}: {reason}",
        trace=work.trace,
    )
    step.receipt("control", command.command_id, "completed", work_key=work.work_key)
    return False


def _queued(step: Step, work_key: str | None, request_id: str | None) -> QueueItem | None:
    """The queued item of a work key, or of a request (its last receipt names the key)."""
    if work_key is None:
        seen = step.state.request("trigger", request_id or "")
        work_key = seen.last.work_key if seen is not None and seen.last is not None else None
        if work_key is None:
            return None
    work = step.queue.get(work_key)
    if work is None or (request_id is not None and work.request_id != request_id):
        return None
    return work


COMMANDS: dict[str, Command] = {
    "pause": _mode(
        "pause",
        "persona.control.paused",
        lambda step: {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY},
        drains=False,
    ),
    "resume": _mode(
        "resume", "persona.control.resumed", lambda step: {"resumed_at_ms": step.now, "drain": True}, drains=True
    ),
    "disable": _mode("disable", "persona.control.disabled", lambda step: {"disabled_at_ms": step.now}, drains=False),
    "enable": _mode("enable", "persona.control.enabled", lambda step: {"enabled_at_ms": step.now}, drains=True),
    "drain": _mode(
        "drain",
        "persona.control.draining",
        lambda step: {"draining_at_ms": step.now, "queued": step.head.queue.count},
        drains=True,
    ),
    "record_spend": _record_spend,
    "cancel": _cancel,
}


def apply(step: Step, record: ControlReceived) -> bool:
    """Apply one command; True when the queue may drain now."""
    return COMMANDS[record.command.action](step, record)
