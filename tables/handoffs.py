"""Handoff settlement: a handoff stays unsettled until its target decides for good.

The sender keeps a :class:`~tables.state.HandoffOut` row from the ``handoff`` report on.
The target keeps a :class:`~tables.state.HandoffIn` row from the handoff trigger on, and
when it issues the request's *final* receipt — the run for it ended (``completed``,
``failed``, ``cancelled``), or the handoff was dead-lettered, rejected, superseded or
refused by the budget — it sends a ``HandoffSettled`` notice to the sender's inbox. The
sender drops its row and writes ``persona.handoff.acknowledged`` with the target's decision
and run id (and ``run.handoff_acknowledged`` on the sending run's stream).

Receipts that are not final (``queued``, ``lease_busy``, ``dispatched``, ``retrying``, and
``budget_exhausted`` of work that stays queued) leave the handoff unsettled.
"""

from __future__ import annotations

from streams.inbox import HandoffSettled
from streams.outputs import Output
from streams.wire import Receipt, TriggerRequest, encode

from . import ids, runlog
from .state import HandoffIn, HandoffOut
from .step import Step

HANDOFF_PROVIDER = "handoff"
REQUEST_PREFIX = "handoff:"
FINAL = frozenset({"completed", "failed", "cancelled", "dead_lettered", "duplicate", "rejected", "budget_exhausted"})


def request_id(run_id: str, handoff_id: str) -> str:
    """The target's request id for a handoff: within the contract's 256 characters, and
    always with the prefix that marks it."""
    raw = f"{REQUEST_PREFIX}{run_id}:{handoff_id}"
    return raw if len(raw) <= 256 else REQUEST_PREFIX + ids.bounded(raw, 0)


def is_final(receipt: Receipt) -> bool:
    return receipt.status in FINAL and not (receipt.status == "budget_exhausted" and receipt.queued)


def _origin(request: TriggerRequest) -> tuple[str, str] | None:
    """(sender persona, handoff id) of a handoff trigger, else None."""
    metadata = request.metadata
    if request.provider != HANDOFF_PROVIDER or not request.request_id.startswith(REQUEST_PREFIX):
        return None
    source, handoff_id = metadata.get("source_persona"), metadata.get("handoff_id")
    return (source, handoff_id) if source and handoff_id else None


def notice(receipt: Receipt, source_persona: str, handoff_id: str) -> Output:
    """The ``HandoffSettled`` notice for the sender's inbox."""
    record = HandoffSettled(
        at_ms=receipt.at_ms,
        persona=source_persona,
        handoff_id=handoff_id,
        target_persona=receipt.persona,
        request_id=receipt.request_id,
        decision=receipt.status,
        run_id=receipt.run_id,
        error=receipt.error,
        receipt_id=receipt.receipt_id,
    )
    return Output("persona_inbox", source_persona, encode(record), (("persona", receipt.persona.encode()),))


# ----------------------------------------------------------------- the sender


def sent(step: Step, handoff: HandoffOut) -> None:
    step.state.put_handoff_out(handoff.handoff_id, handoff)


def on_settled(step: Step, record: HandoffSettled) -> None:
    """The target's final decision arrived: acknowledged once (a repeated notice changes nothing)."""
    handoff = step.state.handoff_out(record.handoff_id)
    if handoff is None:
        return
    step.state.put_handoff_out(record.handoff_id, None)
    payload = {
        "handoff_id": record.handoff_id,
        "target_persona": record.target_persona,
        "decision": record.decision,
        "target_run_id": record.run_id,
        "error": record.error,
        "source_run_id": handoff.source_run_id,
        "receipt_id": record.receipt_id,
        "sent_at_ms": handoff.sent_at_ms,
        "settled_at_ms": step.now,
    }
    step.emit("persona.handoff.acknowledged", payload, handoff.source_run_id)
    run = runlog.runs(step).run(handoff.source_run_id)  # the sending run's stream, if it is still known
    if run is not None:
        runlog.emit(step, run, "run.handoff_acknowledged", payload)
        runlog.runs(step).put_run(run)


# ----------------------------------------------------------------- the target


def received(step: Step, request: TriggerRequest) -> None:
    """A handoff trigger reached its target: remember whom to tell about the outcome."""
    origin = _origin(request)
    if origin is not None and step.state.handoff_in(request.request_id) is None:
        step.state.put_handoff_in(request.request_id, HandoffIn(source_persona=origin[0], handoff_id=origin[1]))


def settle(step: Step) -> None:
    """The step's final decisions about handoffs it received: each tells its sender (the
    notice is an output of the transition that took the decision, written after it)."""
    for receipt in step.issued:
        if not is_final(receipt) or not receipt.request_id.startswith(REQUEST_PREFIX):
            continue
        handoff = step.state.handoff_in(receipt.request_id)
        if handoff is None:
            continue
        step.state.put_handoff_in(receipt.request_id, None)
        step.outputs.append(notice(receipt, handoff.source_persona, handoff.handoff_id))


def rejected_unbound(request: TriggerRequest, receipt: Receipt) -> list[Output]:
    """A handoff to a persona without a binding is rejected at once: settle it too."""
    origin = _origin(request)
    return [] if origin is None else [notice(receipt, *origin)]
