"""The loop every stateful agent shares: take a batch, transition, publish, then store.

Order matters for crash safety (contract section 3, guarantee 2):

1. run the pure transitions for every event of the batch against a transaction;
2. publish all their outputs and wait until the broker acknowledged each one;
3. only then write the new state, again waiting for every changelog record
   (:class:`TableWriter`); Faust commits the consumer offsets of the batch later.

A crash before 3 leaves the old state and uncommitted offsets: the batch is processed
again from the same state and re-emits the same records (same ids), which consumers
dedupe. A crash after 3 but before the offset commit replays records that the state
already records as applied; the transitions recognise them and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import AsyncIterator, Awaitable, Iterable, Iterator, Sequence

import faust
from faust.streams import _current_event  # Faust's own context variable for "the event being processed"
from faust.types import TP, EventT

from streams.app import Pipeline
from streams.outputs import Output

#: Batch size and how long to wait for a batch to fill (seconds).
BATCH_MAX = 500
BATCH_WITHIN = 0.01


@contextlib.contextmanager
def event_context(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table writes go to its partition.

    Faust picks the changelog partition (and the RocksDB column) of a table write from
    the event being processed. State is written after a whole batch was published, so
    each write is wrapped in the context of the event it belongs to.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def publish(pipeline: Pipeline, outputs: Iterable[Output]) -> int:
    """Send every output and wait for all acknowledgements, phase by phase; return the count."""
    producer = pipeline.app.producer
    by_phase: dict[int, list[Output]] = {}
    for output in outputs:
        by_phase.setdefault(output.phase, []).append(output)
    sent = 0
    for phase in sorted(by_phase):
        pending: list[Awaitable[object]] = []
        for output in by_phase[phase]:
            pending.append(
                await producer.send(
                    pipeline.names.name(output.role),
                    output.key_bytes(),
                    output.value_bytes(),
                    partition=None,
                    timestamp=None,
                    headers=output.header_list(),
                )
            )
        if pending:
            await asyncio.gather(*pending)
        sent += len(pending)
    return sent


async def batches(stream: faust.StreamT, max_: int = BATCH_MAX, within: float = BATCH_WITHIN) -> AsyncIterator[Sequence[EventT]]:
    """Events in batches; Faust acks a batch after the loop body handled it."""
    async for events in stream.take_events(max_, within=within):
        yield events


class TableWriter:
    """Writes table rows and waits until their changelog records are acknowledged.

    Faust's own ``table[key] = value`` hands the changelog record to a buffer whose
    ``flush()`` gives up after 0.1 s without progress, so it is no barrier: a commit
    step could not know that the previous step is durable. Here each row goes to the
    local store (in its event's partition) and its changelog record straight to the
    producer, and :meth:`write` returns only when the broker acknowledged every one.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def write(self, rows: Iterable[tuple[faust.Table, str, dict | bytes | None, EventT]]) -> None:
        producer = self.pipeline.app.producer
        pending: list[tuple[faust.Table, TP, Awaitable[object]]] = []
        for table, key, value, event in rows:
            with event_context(event):
                if value is None:
                    if key in table.data:
                        del table.data[key]
                else:
                    table.data[key] = value
            topic = table.changelog_topic
            tp = TP(topic.get_topic_name(), event.message.partition)
            key_bytes = topic.prepare_key(key, None)[0]
            value_bytes = None if value is None else topic.prepare_value(value, None)[0]
            future = await producer.send(tp.topic, key_bytes, value_bytes, partition=tp.partition,
                                         timestamp=None, headers=None)
            pending.append((table, tp, future))
        for table, tp, future in pending:
            metadata = await future
            # What Faust's changelog callback does: RocksDB remembers how far it is
            # durable, so recovery after a restart reads only the newer records.
            table.data.set_persisted_offset(tp, metadata.offset)  # type: ignore[attr-defined]


def state_table(pipeline: Pipeline, name: str, help: str) -> faust.Table:
    """A changelog-backed table of JSON-bytes rows keyed by strings (see tables.store)."""
    return pipeline.app.Table(
        name,
        partitions=pipeline.settings.partitions,
        key_type=str,
        value_type=bytes,  # Faust derives the recovery serializer from this: raw
        schema=faust.Schema(key_serializer="json", value_serializer="raw"),
        extra_topic_configs={"max.message.bytes": str(8 * 1024 * 1024)},
        help=help,
    )


def json_table(pipeline: Pipeline, name: str, help: str) -> faust.Table:
    """A changelog-backed table of JSON values keyed by strings, co-partitioned with the inboxes."""
    return pipeline.app.Table(
        name,
        partitions=pipeline.settings.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        extra_topic_configs={"max.message.bytes": str(8 * 1024 * 1024)},
        help=help,
    )


def message_time_ms(event: EventT) -> int:
    timestamp = event.message.timestamp
    return int(round(timestamp * 1000)) if timestamp else 0

