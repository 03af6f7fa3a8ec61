"""Triggers waiting for their persona's binding (a stream-table join's grace, KIP-923).

A trigger for a persona without a binding is kept (rows ``held[persona, n]``) for
``hold_ms``, which travels in its inbox record so that a replay waits the same. If the
binding arrives in time, the persona transition handles the held triggers, oldest first,
under it; if not, a tick rejects each. At most :data:`MAX_HELD` wait per persona.
"""

from __future__ import annotations

import msgspec

from streams.inbox import TriggerReceived
from streams.wire import Receipt, Trace

from . import ids
from .state import PersonaState, RequestRecord
from .step import Step, receipt_output, request_trace

#: Triggers one persona may have waiting for its binding; more are rejected at once.
MAX_HELD = 1000


class Held(msgspec.Struct, frozen=True):
    """A trigger waiting for its persona's binding, with its inbox offset."""

    position: int | None
    record: TriggerReceived


_HELD = msgspec.json.Decoder(Held)


def rejection(persona: str, kind: str, request_id: str, at_ms: int, error: str, given: Trace | None) -> Receipt:
    """The ``rejected`` receipt of a request no binding could take (its first decision), in
    the request's trace (``given``: its producer's context, if any)."""
    ref = request_trace(request_id, given)
    return Receipt(
        status="rejected",
        persona=persona,
        request_id=request_id,
        receipt_id=ids.receipt_id(persona, f"{kind}:{request_id}", 0),
        at_ms=at_ms,
        error=error,
        trace=Trace(traceparent=f"00-{ref.trace_id}-{ref.span_id}-01"),
    )


def deadline(record: TriggerReceived) -> int:
    """When a held trigger's grace ends: ``hold_ms`` after its event time, or after it was
    admitted if that was earlier (a producer's clock ahead cannot stretch the grace)."""
    start = record.at_ms if record.admitted_at_ms is None else min(record.at_ms, record.admitted_at_ms)
    return start + record.hold_ms


def full(step: Step) -> bool:
    return step.head.held.count >= MAX_HELD


def hold(step: Step, record: TriggerReceived, position: int | None) -> None:
    """Keep a trigger until the persona's binding arrives (or its grace ends)."""
    head = step.head
    step.state.put_held(head.held.next, msgspec.json.encode(Held(position, record)))
    head.held.next += 1
    step.remember("trigger", record.request.request_id)
    if head.held.count == 1:
        step.set_timer("hold", deadline(record))


def _front(state: PersonaState, first: int) -> Held:
    raw = state.held(first)
    assert raw is not None, "held trigger row is missing"
    return _HELD.decode(raw)


def _pop(step: Step) -> Held:
    held = _front(step.state, step.head.held.first)
    step.state.put_held(step.head.held.first, None)
    step.head.held.first += 1
    return held


def reject_expired(step: Step) -> None:
    """A tick: every held trigger whose grace is over gets its ``rejected`` receipt."""
    while step.head.held.count:
        record = _front(step.state, step.head.held.first).record
        if deadline(record) > step.now:
            step.set_timer("hold", deadline(record))
            return
        _pop(step)
        receipt = rejection(
            step.persona,
            "trigger",
            record.request.request_id,
            step.now,
            f"unknown persona {step.persona!r}: no binding arrived on persona.bindings within"
            f" {record.hold_ms} ms of the trigger",
            record.request.trace,
        )
        step.state.put_request("trigger", record.request.request_id, RequestRecord(decisions=1, last=receipt))
        step.outputs.append(receipt_output(receipt))
    step.set_timer("hold", None)


def release(step: Step) -> list[Held]:
    """The persona is bound: its held triggers, oldest first, to be handled under the binding."""
    released = [_pop(step) for _ in range(step.head.held.count)]
    step.set_timer("hold", None)
    return released
