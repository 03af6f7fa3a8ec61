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
from .status import PAUSED_EVENT_POLICY
from .step import Step

#: A command's effect; True when queued work may be taken up now (the queue drains).
Command = Callable[[Step, ControlReceived], bool]


def _allowed(step: Step, record: ControlReceived, event: PersonaEvent) -> bool:
    """Whether the persona machine takes ``event`` now; if not, the command is rejected."""
    if PERSONAS.target(step.head.mode, event) is not None:
        return True
    step.receipt("control", record.command.command_id, "rejected", error=PERSONAS.reason(step.head.mode, event))
    return False


def _pause(step: Step, record: ControlReceived) -> bool:
    if not _allowed(step, record, "pause"):
        return False
    step.emit("persona.control.paused", {"paused_at_ms": step.now, "policy": PAUSED_EVENT_POLICY})
    move_persona(step.head, "pause")
    step.remember("control", record.command.command_id)
    return False


def _resume(step: Step, record: ControlReceived) -> bool:
    if not _allowed(step, record, "resume"):
        return False
    step.emit("persona.control.resumed", {"resumed_at_ms": step.now, "drain": True})
    move_persona(step.head, "resume")
    step.queue.release_held()
    step.remember("control", record.command.command_id)
    return True


def _disable(step: Step, record: ControlReceived) -> bool:
    step.emit("persona.control.disabled", {"disabled_at_ms": step.now})
    move_persona(step.head, "disable")
    step.remember("control", record.command.command_id)
    return False


def _enable(step: Step, record: ControlReceived) -> bool:
    if not _allowed(step, record, "enable"):
        return False
    step.emit("persona.control.enabled", {"enabled_at_ms": step.now})
    move_persona(step.head, "enable")
    step.queue.release_held()
    step.remember("control", record.command.command_id)
    return True


def _drain(step: Step, record: ControlReceived) -> bool:
    if not _allowed(step, record, "drain"):
        return False
    step.emit("persona.control.draining", {"draining_at_ms": step.now, "queued": step.head.queue.count})
    move_persona(step.head, "drain")
    step.queue.release_held()
    step.remember("control", record.command.command_id)
    return True


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


COMMANDS: dict[str, Command] = {
    "pause": _pause,
    "resume": _resume,
    "disable": _disable,
    "enable": _enable,
    "drain": _drain,
    "record_spend": _record_spend,
}


def apply(step: Step, record: ControlReceived) -> bool:
    """Apply one command; True when the queue may drain now."""
    return COMMANDS[record.command.action](step, record)
