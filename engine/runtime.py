"""The runtime: one consumer, one loop, one task per assigned partition number.

One pass of the loop (Kafka Streams' ``process(record)`` -> outputs, plus punctuation):

1. fetch what the broker has for the active tasks (``getmany``);
2. per task, take the records that may be processed now (time-ordered inputs go through
   the task's merger) and hand each one to its source's handler; handlers decode, call
   a pure transition and leave outputs and state changes in the pass;
3. run the punctuators that are due (wall-clock work such as timer ticks), once the tasks
   have caught up with their inputs since tasks last became active;
4. commit the pass (:class:`~engine.checkpoint.Checkpoint`).

Processing errors stay with their record: if a handler raises, the task's pass is
recomputed from its committed state without that record, and the record goes to the
dead-letter topic with the error (Kafka Streams' processing exception handler). The
transitions are pure, so recomputing gives the same result for every other record.

Rebalancing: on revocation the loop finishes its pass first (a lock), tasks are
suspended and keep their stores; on assignment each task's store catches up with its
changelog (from scratch for a new memory store, from its offset otherwise) while the
task's inputs are paused; then the inputs are sought to the stored positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from streams.admission import RawRecord, dead_letter
from streams.outputs import Output
from streams.settings import Settings
from streams.topics import TopicNames

from . import compat
from .assignor import CopartitionedAssignor
from .checkpoint import Checkpoint, LostStateWrite, TaskCommit
from .kafka import BrokerAddress, changelog_topic, end_offsets, new_consumer, new_producer
from .metrics import EngineMetrics
from .publish import Partitioner, Publisher, Record
from .recovery import StaleStore, recover
from .state import MemoryStore, PartitionStore, RocksDBStore
from .task import Forwarded, Punctuator, Source, Task, TaskBatch

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Records fetched per pass at most (bounds a pass's latency and memory).
MAX_POLL_RECORDS = 4000
#: How often consumer offsets are committed for Kafka tooling (positions live in state).
OFFSET_COMMIT_INTERVAL_S = 2.0
#: A task that became active punctuates (ticks timers by the wall clock) only once it has
#: caught up with its inputs, so that a worker's own downtime does not expire leases whose
#: renewals wait in the inputs; under a load that never lets it catch up, after this long.
PUNCTUATION_HOLD_S = 30.0


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs beyond the settings: sources, punctuators and how to make a
    transaction over a store (the pure layer's, duck-typed: ``changes()`` at commit)."""

    sources: Sequence[Source]
    punctuators: Sequence[Punctuator]
    transaction: Callable[[PartitionStore], Any]
    ordered_tables: frozenset[str] = frozenset()
    #: Roles whose latest published values the engine keeps in memory, and how many
    #: (for views such as the dashboard's recent dead letters).
    recent_outputs: Mapping[str, int] = field(default_factory=dict)


class ProcessingError(Exception):
    """A handler raised: the record is dead-lettered with this description."""


def describe_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (in {frames[-1].name} at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = str(exc) or "no message"
    return (
        f"processing failed: {type(exc).__name__}: {text}{where}; the record was skipped and the"
        " stream went on. This is a bug or a state the pipeline cannot handle: report it with this record"
    )


class Engine:
    def __init__(
        self, settings: Settings, broker: BrokerAddress, config: EngineConfig, metrics: EngineMetrics | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.config = config
        self.names = TopicNames(settings.topic_prefix)
        self.changelog = changelog_topic(settings)
        self.partitioner = Partitioner(settings.partitions)
        self.assignor = CopartitionedAssignor(settings.web_url)
        self.metrics = metrics or EngineMetrics()
        self.tasks: dict[int, Task] = {}
        self.suspended: dict[int, Task] = {}
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.generation = -1
        self._next_punctuation = {p.name: 0.0 for p in config.punctuators}
        self.recent: dict[str, deque[bytes | None]] = {
            role: deque(maxlen=size) for role, size in config.recent_outputs.items()
        }
        self.punctuating = False
        self.activated_at = 0.0
        self._last_offset_commit = 0.0
        self._recoveries: set[asyncio.Task[None]] = set()
        self.topics = sorted({self.names.name(role) for source in config.sources for role in source.roles})
        self._topic = self.names.name
        self.role_of = {self.names.name(role): role for source in config.sources for role in source.roles}
        self.consumer: AIOKafkaConsumer | None = None
        self.fetch_wait: compat.FetchWait | None = None
        self.publisher: Publisher | None = None
        self.checkpoint: Checkpoint | None = None
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.data_dir).absolute() / "state" / f"{self.settings.app_id}@{self.settings.web_port}"

    def _open_store(self, partition: int) -> PartitionStore:
        if self.settings.store == "rocksdb://":
            store = RocksDBStore(partition, self.state_dir / "rocksdb", self.config.ordered_tables)
            if store.rebuilt:
                log.warning(
                    "partition %d: the local store held a state batch the changelog may not have"
                    " (the worker stopped uncleanly); rebuilding it from the changelog",
                    partition,
                )
            return store
        return MemoryStore(partition, self.config.ordered_tables)

    async def start(self) -> None:
        producer = new_producer(
            self.settings,
            self.broker.bootstrap,
            linger_ms=0,
            max_request_size=128 * 1024 * 1024,
            request_timeout_ms=60_000,
        )
        await producer.start()
        self.publisher = Publisher(producer)
        self.checkpoint = Checkpoint(self.publisher, self.changelog, self._changelog_headers)
        overrides: dict[str, Any] = dict(
            group_id=self.settings.app_id,
            partition_assignment_strategy=(self.assignor,),
            max_poll_records=MAX_POLL_RECORDS,
            fetch_max_wait_ms=100,
        )
        if self.broker.embedded:
            overrides.update(compat.CONSUMER_SETTINGS)
        self.consumer = new_consumer(self.settings, self.broker.bootstrap, **overrides)
        await self.consumer.start()
        self.fetch_wait = compat.FetchWait(self.consumer) if self.broker.embedded else None
        self.consumer.subscribe(self.topics, listener=_Listener(self))

    async def stop(self) -> None:
        self.stopping.set()
        for recovery in list(self._recoveries):
            recovery.cancel()
        async with self.lock:
            if self.checkpoint is not None:
                with contextlib.suppress(LostStateWrite):
                    await self.checkpoint.flush()
            for task in [*self.tasks.values(), *self.suspended.values()]:
                task.store.close()
            self.tasks.clear()
            self.suspended.clear()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.producer.stop()

    def _changelog_headers(self) -> list[tuple[str, bytes]]:
        return [("generation", str(self.generation).encode())]

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Process until :meth:`stop` (or a fatal error)."""
        assert self.consumer is not None
        while not self.stopping.is_set():
            fetched = await self.consumer.getmany(timeout_ms=self._poll_timeout_ms(), max_records=MAX_POLL_RECORDS)
            if self.stopping.is_set():
                return
            if self.fetch_wait is not None:
                self.fetch_wait.saw(bool(fetched), time.monotonic())
            async with self.lock:
                for tp, records in fetched.items():
                    task = self.tasks.get(tp.partition)
                    if task is not None and task.active:
                        task.offer(tp.topic, records)
                await self._pass()

    def _poll_timeout_ms(self) -> int:
        """Until the next punctuation or the end of an idle wait, at most a second."""
        wait_s = min((due - time.monotonic() for due in self._next_punctuation.values()), default=1.0)
        now = wall_ms()
        for task in self.tasks.values():
            wake = task.wake_at()
            if wake is not None:
                wait_s = min(wait_s, (wake - now) / 1000)
        return int(max(0.0, min(1.0, wait_s)) * 1000)

    def _lag(self, task: Task) -> Callable[[str], int | None]:
        consumer = self.consumer
        assert consumer is not None

        def lag(topic: str) -> int | None:
            highwater: int | None = consumer.highwater(TopicPartition(topic, task.partition))
            if highwater is None:  # no fetch response has named it yet: its end when the task started
                highwater = task.ends.get(topic)
                if highwater is None:
                    return None
            return highwater - task.next_fetched.get(topic, task.positions.get(topic, 0))

        return lag

    async def _pass(self) -> None:
        """One pass: stage 0 (ingress), its outputs published and fed back to this worker's
        own inputs, then stage 1 (the state machines) and the punctuators, then commit."""
        now = wall_ms()
        monotonic = time.monotonic()
        due = [p for p in self.config.punctuators if self._next_punctuation[p.name] <= monotonic]
        for punctuator in due:
            self._next_punctuation[punctuator.name] = monotonic + punctuator.interval_s
        started = time.perf_counter()
        handled: dict[str, int] = defaultdict(int)
        active = [task for task in self.tasks.values() if task.active]
        positions: dict[int, dict[str, int]] = {}
        forwarded: list[tuple[int, Output]] = []

        for task in active:
            work = task.ready(now, self._lag(task), stage=0)
            if work:
                batch, positions[task.partition] = self._process(task, work, (), now, dict(task.positions))
                assert not batch.txn.changed, "stage-0 sources must not change state"
                self._count(work, handled)
                forwarded.extend((task.partition, output) for output in batch.outputs)
        if forwarded:
            await self._forward(forwarded)

        prepared = []
        for task in active:
            lag = self._lag(task)
            prepared.append((task, task.ready(now, lag, stage=1), lag))
        if (
            not self.punctuating
            and active
            and (
                all(task.caught_up(lag) for task, _, lag in prepared)
                or monotonic - self.activated_at > PUNCTUATION_HOLD_S
            )
        ):
            self.punctuating = True  # from now on, wall-clock work runs
        if not self.punctuating:
            due = []
        batches: list[tuple[Task, TaskBatch, dict[str, int]]] = []
        for task, work, _ in prepared:
            if not work and not due and task.partition not in positions:
                continue
            batch, done = self._process(task, work, due, now, positions.get(task.partition, dict(task.positions)))
            self._count(work, handled)
            batches.append((task, batch, done))
        if not batches:
            return
        # What the records caused goes out before what the punctuators caused, across tasks:
        # a record one task forwarded to another task's input precedes that task's tick.
        outputs = [
            (output.phase, self._record(output, task.partition))
            for task, batch, _ in batches
            for output in batch.outputs[: batch.punctuated_from]
        ]
        outputs += [
            (output.phase, self._record(output, task.partition))
            for task, batch, _ in batches
            if batch.punctuated_from is not None
            for output in batch.outputs[batch.punctuated_from :]
        ]
        commits = [TaskCommit(task, list(batch.txn.changes()), done) for task, batch, done in batches]
        written = self.checkpoint.changelog_records if self.checkpoint else 0
        await self._commit(outputs, commits)
        if self.checkpoint is not None:
            self.metrics.changelog_records.inc(self.checkpoint.changelog_records - written)
        self.metrics.observe_pass(
            handled,
            [*(o for _, o in forwarded), *(o for _, b, _ in batches for o in b.outputs)],
            time.perf_counter() - started,
        )
        await self._maybe_commit_offsets()

    def _count(self, work: list[tuple[Source, list[ConsumerRecord]]], handled: dict[str, int]) -> None:
        for _, records in work:
            for record in records:
                handled[self.role_of[record.topic]] += 1

    async def _forward(self, outputs: list[tuple[int, Output]]) -> None:
        """Publish stage-0 outputs now; hand those addressed to this worker's own inputs
        straight to their task (see :meth:`engine.task.Task.feed`), saving a fetch."""
        records = [self._record(output, partition) for partition, output in outputs]
        offsets = await self._retrying(lambda: self.publisher.publish(records))  # type: ignore[union-attr]
        now = wall_ms()
        by_input: dict[tuple[str, int], list[Forwarded]] = defaultdict(list)
        for (topic, partition, key, value, headers), offset in zip(records, offsets, strict=True):
            by_input[(topic, partition)].append(Forwarded(topic, partition, offset, key, value, now, headers))
        for (topic, partition), fed in by_input.items():
            task = self.tasks.get(partition)
            if task is not None and task.active:
                task.feed(topic, fed)

    def _process(
        self,
        task: Task,
        work: list[tuple[Source, list[ConsumerRecord]]],
        due: Sequence[Punctuator],
        now: int,
        start: dict[str, int],
    ) -> tuple[TaskBatch, dict[str, int]]:
        """Run the handlers over ``work``; on a handler error, start over without that record.
        Returns the pass and the positions after it (``start``: the positions before)."""
        poisoned: dict[tuple[str, int], str] = {}
        while True:
            batch = TaskBatch(task.partition, task.store, self.config.transaction(task.store), now)
            positions = dict(start)
            try:
                for source, records in work:
                    for record in records:
                        positions[record.topic] = record.offset + 1
                        error = poisoned.get((record.topic, record.offset))
                        if error is not None:
                            batch.emit(
                                Output(
                                    "dlq",
                                    record.key,
                                    dead_letter(_raw(record), error),
                                    (("error", error[:200]), ("reason", "processing_error")),
                                )
                            )
                            continue
                        try:
                            source.handle(batch, record)
                        except Exception as exc:
                            poisoned[(record.topic, record.offset)] = describe_error(exc)
                            log.error(
                                "%s[%d]@%d: %s",
                                record.topic,
                                record.partition,
                                record.offset,
                                poisoned[(record.topic, record.offset)],
                                exc_info=exc,
                            )
                            self.metrics.processing_errors.inc()
                            raise ProcessingError from exc
                    if source.finish is not None:
                        self._guarded(source.finish, batch)
                batch.punctuated_from = len(batch.outputs) if due else None
                for punctuator in due:
                    self._guarded(_punctuation(punctuator, now), batch)
                return batch, positions
            except ProcessingError:
                continue

    def _guarded(self, work: Callable[[TaskBatch], None], batch: TaskBatch) -> None:
        """Per-pass work that is not about one record: an error is logged and counted, and
        that work's outputs of this pass are dropped; the pass itself goes on."""
        mark = len(batch.outputs)
        try:
            work(batch)
        except Exception:
            log.exception("per-pass work failed on partition %d; its outputs of this pass are dropped", batch.partition)
            self.metrics.processing_errors.inc()
            del batch.outputs[mark:]

    def _record(self, output: Output, partition: int) -> Record:
        recent = self.recent.get(output.role)
        if recent is not None:
            recent.append(output.value_bytes())
        key = output.key_bytes()
        target = (
            output.partition if output.partition is not None else (partition if key is None else self.partitioner(key))
        )
        return self._topic(output.role), target, key, output.value_bytes(), output.header_list()

    async def _commit(self, outputs: list[tuple[int, Record]], commits: list[TaskCommit]) -> None:
        assert self.checkpoint is not None
        checkpoint = self.checkpoint
        await self._retrying(lambda: checkpoint.commit(outputs, commits))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Publish or commit, again while the broker is unreachable: publishing the same
        records again is safe (same ids), and state is written only after its outputs."""
        delay = 0.2
        while True:
            try:
                return await attempt()
            except KafkaError as exc:
                if self.stopping.is_set():
                    raise
                log.warning("publishing failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _maybe_commit_offsets(self) -> None:
        """Consumer offsets for Kafka tooling (lag dashboards); positions in state rule."""
        if time.monotonic() - self._last_offset_commit < OFFSET_COMMIT_INTERVAL_S or self.consumer is None:
            return
        self._last_offset_commit = time.monotonic()
        offsets = {
            TopicPartition(topic, task.partition): OffsetAndMetadata(offset, "")
            for task in self.tasks.values()
            if task.active
            for topic, offset in task.positions.items()
        }
        if offsets:
            with contextlib.suppress(KafkaError, AssertionError, asyncio.TimeoutError):
                await self.consumer.commit(offsets)

    # --------------------------------------------------------------- rebalancing

    def _input_tps(self, partition: int) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic in self.topics]

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            if self.checkpoint is not None:  # others recover from the changelog: it must be complete
                await self.checkpoint.flush()
            for partition in sorted({tp.partition for tp in revoked}):
                task = self.tasks.pop(partition, None)
                if task is not None:
                    task.active = False
                    task.reset_buffers()
                    self.suspended[partition] = task

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self.consumer is not None
        self.generation = self.consumer._coordinator.generation if self.consumer._coordinator else -1
        partitions = sorted({tp.partition for tp in assigned})
        async with self.lock:
            for partition in list(self.suspended):
                if partition not in partitions:
                    self.suspended.pop(partition).store.close()
            fresh = []
            for partition in partitions:
                task = self.suspended.pop(partition, None)
                if task is None:
                    task = Task(
                        partition,
                        self._open_store(partition),
                        self.config.sources,
                        self.names.name,
                        self.settings.max_task_idle_ms,
                    )
                self.tasks[partition] = task
                fresh.append(task)
            if assigned:
                self.consumer.pause(*assigned)
        if fresh:
            job = asyncio.get_running_loop().create_task(self._recover(fresh))
            self._recoveries.add(job)
            job.add_done_callback(self._recoveries.discard)

    async def _recover(self, tasks: list[Task]) -> None:
        assert self.consumer is not None
        started = time.monotonic()
        consumer = new_consumer(self.settings, self.broker.bootstrap)
        await consumer.start()
        try:
            try:
                await recover(consumer, self.changelog, [t.store for t in tasks], self.broker.embedded)
            except StaleStore as exc:
                log.warning("%s: rebuilding the local state from the changelog", exc)
                for task in tasks:
                    task.store.close()
                    if self.settings.store == "rocksdb://":
                        RocksDBStore.destroy(self.state_dir / "rocksdb", task.partition)
                    task.store = self._open_store(task.partition)
                await recover(consumer, self.changelog, [t.store for t in tasks], self.broker.embedded)
        finally:
            await consumer.stop()
        ends = await self._input_ends(tasks)
        async with self.lock:
            for task in tasks:
                if self.tasks.get(task.partition) is not task:
                    continue  # revoked while recovering
                task.load_positions()
                task.reset_buffers()
                task.ends = {tp.topic: end for tp, end in ends.items() if tp.partition == task.partition}
                for tp in self._input_tps(task.partition):
                    if tp not in self.consumer.assignment():
                        continue
                    position = task.positions.get(tp.topic)
                    if position is None:
                        await self.consumer.seek_to_beginning(tp)
                        task.positions[tp.topic] = task.next_fetched[tp.topic] = await self.consumer.position(tp)
                    else:
                        self.consumer.seek(tp, position)
                    self.consumer.resume(tp)
                task.active = True
            self.punctuating = False  # until the tasks caught up with their inputs
            self.activated_at = time.monotonic()
        self.metrics.recovery_seconds.observe(time.monotonic() - started)
        log.info("partitions %s active after %.2fs", [t.partition for t in tasks], time.monotonic() - started)

    async def _input_ends(self, tasks: list[Task]) -> dict[TopicPartition, int]:
        """End offsets of the tasks' inputs now: the merger's lag until fetches report them."""
        consumer = new_consumer(self.settings, self.broker.bootstrap)
        await consumer.start()
        try:
            tps = [tp for task in tasks for tp in self._input_tps(task.partition)]
            consumer.assign(tps)
            return await end_offsets(consumer, tps, self.broker.embedded)
        finally:
            await consumer.stop()

    # ------------------------------------------------------------------- reading

    @property
    def ready(self) -> bool:
        """Every assigned partition recovered and processing."""
        return bool(self.tasks) and all(task.active for task in self.tasks.values()) and not self._recoveries

    def owner_url(self, partition: int) -> str | None:
        return self.assignor.owners.get(partition)

    def partition_of(self, key: str) -> int:
        return self.partitioner(key.encode())

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet processed, per input partition of the active tasks."""
        result: dict[tuple[str, int], int] = {}
        if self.consumer is None:
            return result
        for task in self.tasks.values():
            for topic in task.topics:
                highwater = self.consumer.highwater(TopicPartition(topic, task.partition))
                if highwater is not None and task.active:
                    result[(topic, task.partition)] = max(0, highwater - task.positions.get(topic, 0))
        return result


def _punctuation(punctuator: Punctuator, now: int) -> Callable[[TaskBatch], None]:
    """``punctuator``'s work for one batch at ``now``."""
    return lambda batch: punctuator.punctuate(batch, now)


def _raw(record: ConsumerRecord) -> RawRecord:
    return RawRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.engine.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.engine.on_assigned(set(assigned))
