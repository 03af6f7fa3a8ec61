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
}


def apply(step: Step, record: ControlReceived) -> bool:
    """Apply one command; True when the queue may drain now."""
    return COMMANDS[record.command.action](step, record)
