"""A task: everything of one partition number (Kafka Streams' unit of work).

Its inputs are partition ``p`` of every input topic; its state is the
:class:`~engine.state.PartitionStore` of ``p``; ``positions`` says, per input topic,
the next offset to process. Positions are stored with the state (one row, written in
the same atomic changelog batch as the rows it covers), so the state and where it
stands can never disagree: the position is both the commit record and the resume point.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import ConsumerRecord

from streams.outputs import Output

from .merge import Merger
from .state import PartitionStore

#: Where a task keeps its positions in its own store.
ENGINE_TABLE = "_engine"
POSITIONS_KEY = "positions"


class Changes(Protocol):
    """What a transaction gives back at commit: the rows it changed."""

    def changes(self) -> Any: ...


@dataclass
class TaskBatch:
    """What handlers write into while one task's records of one loop pass are processed."""

    partition: int
    store: PartitionStore
    txn: Any
    now_ms: int  # wall clock at the start of the pass: for punctuators only
    outputs: list[Output] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)  # per-pass notes of the handlers
    punctuated_from: int | None = None  # outputs from this index on came from punctuators

    def emit(self, output: Output) -> None:
        self.outputs.append(output)


Handler = Callable[[TaskBatch, ConsumerRecord], None]


@dataclass(frozen=True)
class Source:
    """Input topics handled by one handler. ``in_time_order``: the topics' partitions are
    merged by record timestamp (see :mod:`engine.merge`); otherwise each topic is handled
    in offset order. ``finish`` runs once per pass, after the records (e.g. to publish
    the status of what changed).

    ``stage``: sources of stage 0 (ingress) are handled first and their outputs published
    at once, so that what they forward to this worker's own inputs is handled in the same
    pass (see :meth:`Task.feed`); they must not change state."""

    name: str
    roles: tuple[str, ...]
    handle: Handler
    in_time_order: bool = False
    finish: Callable[[TaskBatch], None] | None = None
    stage: int = 1


class Forwarded:
    """A record this worker published to one of its own inputs, as if fetched."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "timestamp", "headers")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: int,
        headers: Any,
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp, self.headers = key, value, timestamp, headers


@dataclass(frozen=True)
class Punctuator:
    """Work driven by the wall clock, run every ``interval_s`` for every active task."""

    name: str
    interval_s: float
    punctuate: Callable[[TaskBatch, int], None]


class Task:
    def __init__(
        self,
        partition: int,
        store: PartitionStore,
        sources: Sequence[Source],
        topic_of: Callable[[str], str],
        idle_ms: int,
    ) -> None:
        self.partition = partition
        self.store = store
        self.active = False
        self.positions: dict[str, int] = {}
        self.sources = list(sources)
        self.source_of: dict[str, Source] = {}
        self.buffers: dict[str, deque[ConsumerRecord]] = {}
        self.mergers: dict[str, Merger[ConsumerRecord]] = {}
        self.next_fetched: dict[str, int] = {}  # topic -> offset after the last record fetched
        self.ends: dict[str, int] = {}  # topic -> end offset when the task became active
        for source in self.sources:
            topics = [topic_of(role) for role in source.roles]
            for topic in topics:
                self.source_of[topic] = source
                self.buffers[topic] = deque()
            if source.in_time_order:
                self.mergers[source.name] = Merger(topics, idle_ms)

    @property
    def topics(self) -> list[str]:
        return list(self.source_of)

    def caught_up(self, lag: Callable[[str], int | None]) -> bool:
        """Nothing fetched is left unhandled and no input has records beyond what was
        fetched: everything that reached this task's inputs (the records its own stage 0
        forwarded there included) has been handled or is in the pass being built."""
        return all(not buffer for buffer in self.buffers.values()) and all(not lag(topic) for topic in self.topics)

    def load_positions(self) -> None:
        raw = self.store.get(ENGINE_TABLE, POSITIONS_KEY)
        self.positions = {} if raw is None else {k: int(v) for k, v in json.loads(raw).items()}

    def positions_row(self, positions: dict[str, int]) -> tuple[str, str, bytes]:
        return ENGINE_TABLE, POSITIONS_KEY, json.dumps(positions, sort_keys=True).encode()

    def reset_buffers(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        for merger in self.mergers.values():
            merger.clear()
        self.next_fetched = dict(self.positions)

    def offer(self, topic: str, records: Sequence[ConsumerRecord]) -> None:
        """Buffer fetched records; anything before the next expected offset was seen."""
        expected = self.next_fetched.get(topic, self.positions.get(topic, 0))
        fresh = [record for record in records if record.offset >= expected]
        if not fresh:
            return
        self.next_fetched[topic] = fresh[-1].offset + 1
        source = self.source_of[topic]
        merger = self.mergers.get(source.name)
        if merger is not None:
            merger.add(topic, fresh)
        else:
            self.buffers[topic].extend(fresh)

    def feed(self, topic: str, records: Sequence[Forwarded]) -> int:
        """Take records this worker itself just published to ``topic`` (this partition), in
        offset order, if they continue exactly what was fetched: then they are handled now
        and the copies the consumer fetches later are dropped as seen. If anything else was
        appended in between, nothing is taken; the fetch brings everything in order."""
        if not records or topic not in self.source_of or self.source_of[topic].in_time_order:
            return 0
        expected = self.next_fetched.get(topic, self.positions.get(topic, 0))
        if records[0].offset != expected or any(
            b.offset != a.offset + 1 for a, b in zip(records, records[1:], strict=False)
        ):
            return 0
        self.buffers[topic].extend(records)
        self.next_fetched[topic] = records[-1].offset + 1
        return len(records)

    def ready(
        self, now_ms: int, lag: Callable[[str], int | None], stage: int | None = None
    ) -> list[tuple[Source, list[ConsumerRecord]]]:
        """The records that may be processed now, per source (of ``stage``, or all), in
        processing order."""
        work = []
        for source in self.sources:
            if stage is not None and source.stage != stage:
                continue
            merger = self.mergers.get(source.name)
            if merger is not None:
                released = [record for _, record in merger.release(now_ms, lag)]
                if released:
                    work.append((source, released))
                continue
            records: list[ConsumerRecord] = []
            for role_topic in (t for t, s in self.source_of.items() if s is source):
                buffer = self.buffers[role_topic]
                records.extend(buffer)
                buffer.clear()
            if records:
                work.append((source, records))
        return work

    def buffered(self) -> int:
        return sum(len(b) for b in self.buffers.values()) + sum(m.buffered for m in self.mergers.values())

    def wake_at(self) -> int | None:
        times = [t for t in (m.wake_at() for m in self.mergers.values()) if t is not None]
        return min(times) if times else None
