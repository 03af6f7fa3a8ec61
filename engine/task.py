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
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

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

    def emit(self, output: Output) -> None:
        self.outputs.append(output)


Handler = Callable[[TaskBatch, ConsumerRecord], None]


@dataclass(frozen=True)
class Source:
    """Input topics handled by one handler. ``in_time_order``: the topics' partitions are
    merged by record timestamp (see :mod:`engine.merge`); otherwise each topic is handled
    in offset order. ``finish`` runs once per pass, after the records (e.g. to publish
    the status of what changed)."""

    name: str
    roles: tuple[str, ...]
    handle: Handler
    in_time_order: bool = False
    finish: Callable[[TaskBatch], None] | None = None


@dataclass(frozen=True)
class Punctuator:
    """Work driven by the wall clock, run every ``interval_s`` for every active task."""

    name: str
    interval_s: float
    punctuate: Callable[[TaskBatch, int], None]


class Task:
    def __init__(self, partition: int, store: PartitionStore, sources: Sequence[Source],
                 topic_of: Callable[[str], str], idle_ms: int) -> None:
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

    def ready(self, now_ms: int, lag: Callable[[str], int | None]) -> list[tuple[Source, list[ConsumerRecord]]]:
        """The records that may be processed now, per source, in processing order."""
        work = []
        for source in self.sources:
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
