"""Every input offset, in order: gaps in what Faust delivers are filled from the topic.

Observed with faust-streaming 0.15.3 when a worker restarts (crash test, about one run
in five): while recovery resumes the streams, Faust's consumer drops a record before
the agent sees it, treats the hole as an acknowledged gap and commits past it, so the
record is never processed. aiokafka's fetch responses were contiguous; the loss is
inside Faust's flow control.

So each stateful agent records, per input partition, the last offset whose effects are
durable (after its state). When a batch delivers an offset beyond the next expected
one, the missing records are read straight from the topic and handed to the agent
first, in offset order. Offsets at or below the recorded one (Faust re-delivering
after a seek) pass through; the transitions recognise them as already applied.

A partition with no recorded position has never had a record applied (a position is
written after every batch), so its next expected offset is the start of the log.

A skipped record is noticed when a later one arrives. If it was the last one, nothing
arrives: the stall check (``agents.timers``, :func:`stall`) sees the stored position
stay behind the partition's end while the worker is idle, and seeks the consumer
back, so Faust delivers the records again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, NamedTuple, Sequence

import faust
from aiokafka import TopicPartition
from faust.types import EventT
from pydantic import TypeAdapter

from streams.admission import RawRecord, dead_letter
from streams.app import Pipeline
from streams.codec import DecodeError, decode_union
from engine.kafka import new_consumer, read_until
from streams.outputs import Output

from .runtime import batches, json_table, message_time_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One input record. ``event`` is the Faust event whose partition context its state
    writes use: the record's own event, or (for a filled gap) the event that revealed it."""

    raw: RawRecord
    event: EventT

    @property
    def partition(self) -> int:
        return self.raw.partition

    @property
    def offset(self) -> int:
        return self.raw.offset


def decoded(items: Sequence[Item], adapter: TypeAdapter[Any], name: str,
            outputs: list[Output]) -> Iterator[tuple[Item, Any]]:
    """Each item with its decoded inbox record; undecodable items become dead letters in
    ``outputs``."""
    for item in items:
        try:
            record = decode_union(adapter, name, item.raw.value or b"")
        except DecodeError as exc:
            outputs.append(Output("dlq", item.raw.key, dead_letter(item.raw, str(exc))))
            continue
        yield item, record


class Continuity:
    """Fills gaps in one input topic, relative to positions the agent stores itself."""

    def __init__(self, pipeline: Pipeline, role: str, stored: Callable[[int], int | None]) -> None:
        self.pipeline = pipeline
        self.topic = pipeline.names.name(role)
        self.stored = stored
        self.filled = 0
        self.batches = 0  # batches taken so far
        self.in_hand = False  # a batch is being handled right now

    async def feed(self, stream: faust.StreamT, handle: Callable[[Sequence[EventT]], Awaitable[None]]) -> None:
        """Hand each batch of ``stream`` to ``handle``, noting when one is in hand."""
        async for events in batches(stream):
            self.batches += 1
            self.in_hand = True
            try:
                await handle(events)
            finally:
                self.in_hand = False

    async def complete(self, events: Sequence[EventT]) -> list[Item]:
        """The batch's records, with any records Faust skipped inserted before them."""
        expected: dict[int, int] = {}
        items: list[Item] = []
        for event in events:
            message = event.message
            partition, offset = message.partition, message.offset
            if partition not in expected:
                last = self.stored(partition)
                expected[partition] = 0 if last is None else last + 1
            nxt = expected[partition]
            if offset > nxt:
                missing = await self._read(partition, nxt, offset)
                log.warning("%s[%d]: offsets %d..%d were not delivered by the consumer; read %d record(s) from the topic",
                            self.topic, partition, nxt, offset - 1, len(missing))
                self.filled += len(missing)
                items.extend(Item(RawRecord(self.topic, partition, r.offset, r.key, r.value, r.timestamp), event)
                             for r in missing)
            items.append(Item(RawRecord(self.topic, partition, offset, message.key, message.value,
                                        message_time_ms(event)), event))
            if offset >= nxt:
                expected[partition] = offset + 1
        return items

    async def _read(self, partition: int, start: int, end: int, timeout_s: float = 30.0) -> list:
        """Records ``start`` .. ``end - 1`` of one partition (fewer if retention removed some)."""
        consumer = new_consumer(self.pipeline.settings, self.pipeline.broker.bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            return await read_until(consumer, {tp: end}, timeout_s, f"{self.topic}[{partition}] {start}..{end - 1}")
        finally:
            await consumer.stop()


class Progress(NamedTuple):
    """What the stall check sees of one input partition and of the worker's agents."""

    stored: int | None  # the partition's last applied offset (None: nothing applied yet)
    batches: int  # batches the worker's agents have taken, all inputs together
    busy: bool  # some agent of the worker is handling a batch


class Watch(NamedTuple):
    """What the stall check remembers of a partition behind its end."""

    stored: int | None
    batches: int
    checks: int  # consecutive checks that found the partition at this position


def activity(inputs: Sequence[Continuity]) -> tuple[int, bool]:
    """The worker's agents together: (batches taken, whether one is in hand)."""
    return sum(i.batches for i in inputs), any(i.in_hand for i in inputs)


def stall(end: int | None, now: Progress, last: Watch | None, patience: int) -> tuple[Watch | None, int | None]:
    """One stall check of one partition: (what to remember, offset to re-read from).

    ``end`` is the partition's high watermark. A partition behind its end is stalled
    when its position has not moved since the last check and either the whole worker
    was idle meanwhile (no batch taken, none in hand now) or ``patience`` checks have
    passed. A busy worker is given time because Faust hands fetched records to one
    stream after another: a stream with a full buffer holds the others back, so a
    partition can wait behind other work without anything having been lost.
    Re-reading after a false alarm is safe, only wasteful: records applied already
    re-emit the same outputs and change nothing.
    """
    position = -1 if now.stored is None else now.stored
    if end is None or position >= end - 1:
        return None, None  # caught up
    if last is None or last.stored != now.stored:
        return Watch(now.stored, now.batches, 1), None  # first seen behind here: look again later
    if (not now.busy and now.batches == last.batches) or last.checks + 1 >= patience:
        return None, position + 1
    return Watch(now.stored, now.batches, last.checks + 1), None


def positions_table(pipeline: Pipeline) -> faust.Table:
    """Last applied offset per input partition of the stateful agents (``{topic}/{partition}``)."""
    return json_table(pipeline, "positions", "last input offset applied, per agent input partition")


class Positions:
    """Read and advance the stored positions of one input, in rows ``{name}/{partition}``
    that hold the last applied offset as ``offset``."""

    def __init__(self, name: str, table: faust.Table) -> None:
        self.name = name
        self.table = table

    def key(self, partition: int) -> str:
        return f"{self.name}/{partition}"

    def stored(self, partition: int) -> int | None:
        row = self.table.get(self.key(partition))
        return None if row is None else row["offset"]

    def advanced(self, items: Sequence[Item]) -> list[tuple[faust.Table, str, dict, EventT]]:
        """Rows recording the last offset of each partition in ``items`` (for a TableWriter)."""
        last: dict[int, Item] = {}
        for item in items:
            if item.partition not in last or item.offset > last[item.partition].offset:
                last[item.partition] = item
        rows = []
        for partition, item in last.items():
            stored = self.stored(partition)
            if stored is None or item.offset > stored:
                rows.append((self.table, self.key(partition), {"offset": item.offset}, item.event))
        return rows
