"""The run source: ``persona.run.inbox`` (keyed by run id) through the pure run transition."""

from __future__ import annotations

import msgspec
from aiokafka import ConsumerRecord

from engine.state import PartitionStore
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


def in_flight(store: PartitionStore) -> int:
    """Runs of this partition that have not ended."""
    return sum(1 for _, raw in store.items(transition.RUNS)
               if transition._RUN.decode(raw).status not in transition.TERMINAL)


def source() -> Source:
    return Source("runs", ("run_inbox",), handle)
