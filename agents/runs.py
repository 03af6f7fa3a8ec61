"""The run source: ``persona.run.inbox`` (keyed by run id) through the pure run transition."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from engine.task import Source, TaskBatch
from streams.admission import RawRecord, dead_letter
from streams.codec import DecodeError, decode_union
from streams.inbox import RUN_INPUT
from streams.outputs import Output
from tables import runs as transition


def handle(batch: TaskBatch, record: ConsumerRecord) -> None:
    try:
        decoded = decode_union(RUN_INPUT, "run inbox record", record.value or b"")
    except DecodeError as exc:
        raw = RawRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)
        batch.emit(Output("dlq", record.key, dead_letter(raw, str(exc)), (("reason", "invalid_inbox_record"),)))
        return
    batch.outputs.extend(transition.apply(batch.txn, decoded, record.offset))


def source() -> Source:
    return Source("runs", ("run_inbox",), handle)
