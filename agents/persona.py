"""The persona source: ``persona.inbox`` (keyed by persona) through the pure persona
transition. Each record: decode, apply, keep the outputs; once per pass, the new status
of every persona that changed (a tombstone once unbound)."""

from __future__ import annotations

import time

import msgspec
from aiokafka import ConsumerRecord

from engine.task import Source, TaskBatch
from streams.admission import RawRecord, dead_letter
from streams.capability import Signer
from streams.inbox import PERSONA_INPUT, persona_of
from streams.outputs import Output
from streams.tracing import Span
from tables import persona as transition
from tables.state import PersonaState
from tables.status import status_json

from .capability import sign_outputs
from .tracing import SpanSink

CHANGED = "personas_changed"
SPANS = "spans"  # this pass's spans and when it started (ns), with a span sink


def status_output(state: PersonaState) -> Output | None:
    """The persona's status as its state now stands (a tombstone once unbound)."""
    head = state.head()
    if head is None:
        return None
    headers = (("persona", state.persona),)
    if not head.bound:
        return Output("status", state.persona, None, headers)
    return Output("status", state.persona, status_json(state, head), headers)


def undecodable(record: ConsumerRecord, error: Exception) -> Output:
    raw = RawRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)
    letter = dead_letter(raw, f"inbox record could not be read ({error}); it was skipped")
    return Output("dlq", record.key, letter, (("error", letter.error[:200]), ("reason", "invalid_inbox_record")))


def handle(
    batch: TaskBatch, record: ConsumerRecord, spans: list[Span] | None = None, signer: Signer | None = None
) -> None:
    try:
        decoded = PERSONA_INPUT.decode(record.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        batch.emit(undecodable(record, exc))
        return
    start = len(batch.outputs)
    batch.outputs.extend(transition.apply(batch.txn, decoded, record.offset, spans))
    if signer is not None:  # tokens on dispatches, signatures on BOMs: after the transition
        sign_outputs(batch.outputs, start, signer)
    changed = batch.scratch.get(CHANGED)
    if changed is None:
        changed = batch.scratch[CHANGED] = set()
    changed.add(persona_of(decoded))


def finish(batch: TaskBatch) -> None:
    for persona in sorted(batch.scratch.get(CHANGED, ())):
        output = status_output(PersonaState(batch.txn, persona))
        if output is not None:
            batch.emit(output)


def source(sink: SpanSink | None = None, signer: Signer | None = None) -> Source:
    """The persona source; with a ``sink``, the transitions' spans are exported each pass;
    with a ``signer``, dispatches get capability tokens and BOMs signatures."""
    if sink is None:
        if signer is None:
            return Source("persona", ("persona_inbox",), handle, finish=finish)
        return Source("persona", ("persona_inbox",), lambda b, r: handle(b, r, None, signer), finish=finish)

    def traced(batch: TaskBatch, record: ConsumerRecord) -> None:
        spans = batch.scratch.get(SPANS)
        if spans is None:
            spans = batch.scratch[SPANS] = ([], time.time_ns())
        handle(batch, record, spans[0], signer)

    def finish_traced(batch: TaskBatch) -> None:
        finish(batch)
        spans = batch.scratch.get(SPANS)
        if spans:
            sink.export(spans[0], spans[1], time.time_ns())

    return Source("persona", ("persona_inbox",), traced, finish=finish_traced)
