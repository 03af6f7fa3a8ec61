"""The run source: ``persona.run.inbox`` (keyed by run id) through the pure run transition."""

from __future__ import annotations

import msgspec
from aiokafka import ConsumerRecord

from engine.task import Source, TaskBatch
from streams.inbox import RUN_INPUT
from tables import runs as transition

from .persona import undecodable


def handle(batch: TaskBatch, record: ConsumerRecord) -> None:
    try:
        decoded = RUN_INPUT.decode(record.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        batch.emit(undecodable(record, exc))
        return
    batch.outputs.extend(transition.apply(batch.txn, decoded, record.offset))


def source() -> Source:
    return Source("runs", ("run_inbox",), handle)
