"""The run directory source: ``persona.run.inbox`` (keyed by run id) through the pure
directory transition, which routes reports and run control to the run's persona."""

from __future__ import annotations

import msgspec
from aiokafka import ConsumerRecord

from engine.state import PartitionStore
from engine.task import Source, TaskBatch
from streams.inbox import RUN_INPUT
from tables import runs as transition
from tables.state import PERSONAS, decode_head

from .persona import undecodable


def handle(batch: TaskBatch, record: ConsumerRecord) -> None:
    try:
        decoded = RUN_INPUT.decode(record.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        batch.emit(undecodable(record, exc))
        return
    batch.outputs.extend(transition.apply(batch.txn, decoded, record.offset))


def in_flight(store: PartitionStore) -> int:
    """External runs of this partition's personas that have not ended."""
    return sum(len(decode_head(raw).open_runs) for _, raw in store.items(PERSONAS))


def source() -> Source:
    return Source("runs", ("run_inbox",), handle)
