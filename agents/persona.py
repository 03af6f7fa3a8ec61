"""The persona source: ``persona.inbox`` (keyed by persona) through the pure persona
transition. Each record: decode, apply, keep the outputs; once per pass, the new status
of every persona that changed (a tombstone once unbound)."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from engine.task import Source, TaskBatch
from streams.admission import RawRecord, dead_letter
from streams.codec import DecodeError, decode_union
from streams.inbox import PERSONA_INPUT, persona_of
from streams.outputs import Output
from tables import persona as transition
from tables.state import PersonaState
from tables.status import project

CHANGED = "personas_changed"


def status_output(batch: TaskBatch, persona: str) -> Output | None:
    """The persona's status after this pass (a tombstone once unbound)."""
    state = PersonaState(batch.txn, persona)
    head = state.head()
    if head is None:
        return None
    if not head.bound:
        return Output("status", persona, None, (("persona", persona),))
    return Output("status", persona, project(state, head), (("persona", persona),))


def handle(batch: TaskBatch, record: ConsumerRecord) -> None:
    try:
        decoded = decode_union(PERSONA_INPUT, "persona inbox record", record.value or b"")
    except DecodeError as exc:
        raw = RawRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)
        batch.emit(Output("dlq", record.key, dead_letter(raw, str(exc)), (("reason", "invalid_inbox_record"),)))
        return
    batch.outputs.extend(transition.apply(batch.txn, decoded, record.offset))
    batch.scratch.setdefault(CHANGED, set()).add(persona_of(decoded))


def finish(batch: TaskBatch) -> None:
    for persona in sorted(batch.scratch.get(CHANGED, ())):
        output = status_output(batch, persona)
        if output is not None:
            batch.emit(output)


def source() -> Source:
    return Source("persona", ("persona_inbox",), handle, finish=finish)
