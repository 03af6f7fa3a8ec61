"""Producing to and tailing contract topics, for the CLI, the demo and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from engine.kafka import BrokerAddress, end_offsets, new_consumer, new_producer, read_until
from streams.codec import encode
from streams.settings import Settings
from streams.topics import TopicNames


@dataclass(frozen=True)
class Seen:
    """One consumed record; ``value`` is the decoded JSON (None for tombstones/non-JSON)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    raw: bytes | None
    timestamp_ms: int
    headers: dict[str, str]


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def to_seen(record: Any) -> Seen:
    return Seen(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=None if record.key is None else record.key.decode("utf-8", errors="replace"),
        value=_decode(record.value),
        raw=record.value,
        timestamp_ms=record.timestamp,
        headers={name: value.decode("utf-8", errors="replace") for name, value in (record.headers or ())},
    )


class MissingTopic(LookupError):
    """A topic to follow does not exist yet: the worker creates them at start."""


class Tail:
    """Follows one topic (all partitions) from a fixed starting point; keeps what it read in
    ``seen`` unless ``keep`` is false (a long ``personaflow tail`` holds nothing)."""

    def __init__(self, client: Client, role: str, *, from_beginning: bool, keep: bool = True) -> None:
        self.client = client
        self.topic = client.names.name(role)
        self.from_beginning = from_beginning
        self.keep = keep
        self.consumer: AIOKafkaConsumer | None = None
        self.seen: list[Seen] = []
        self.next: dict[TopicPartition, int] = {}  # offset after the last record read, per partition

    async def start(self) -> Tail:
        # A short fetch wait: the embedded broker holds a fetch for half its wait even when
        # records arrive, and a tail is there to see them soon.
        consumer = new_consumer(self.client.settings, self.client.bootstrap, fetch_max_wait_ms=50)
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            await consumer.stop()
            raise MissingTopic(f"topic {self.topic!r} does not exist (is a worker running?)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if self.from_beginning:
            await consumer.seek_to_beginning(*tps)
            self.next = {tp: 0 for tp in tps}
        else:
            for tp, offset in (await end_offsets(consumer, tps, self.client.embedded)).items():
                consumer.seek(tp, offset)
                self.next[tp] = offset
        self.consumer = consumer
        return self

    async def poll(self, timeout_s: float = 0.2) -> list[Seen]:
        assert self.consumer is not None, "start() the tail first"
        batch = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=10_000)
        for tp, records in batch.items():
            if records:
                self.next[tp] = records[-1].offset + 1
        fresh = [to_seen(record) for records in batch.values() for record in records]
        if self.keep:
            self.seen.extend(fresh)
        return fresh

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """The end offsets (high watermarks) of the topic's partitions, as of now."""
        assert self.consumer is not None, "start() the tail first"
        return await end_offsets(self.consumer, sorted(self.consumer.assignment()), self.client.embedded)

    async def reached(self, ends: dict[TopicPartition, int]) -> bool:
        """Whether every partition's next record to read is at or past its offset in ``ends``
        (the consumer's position: it also moves past what the log no longer holds)."""
        assert self.consumer is not None, "start() the tail first"
        for tp, end in ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True

    async def catch_up(self, timeout_s: float = 30.0) -> list[Seen]:
        """Read everything the topic holds right now (up to its end offsets)."""
        assert self.consumer is not None, "start() the tail first"
        ends = await end_offsets(self.consumer, list(self.consumer.assignment()), self.client.embedded)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while [tp for tp, end in ends.items() if self.next.get(tp, 0) < end]:
            if loop.time() > deadline:
                raise TimeoutError(f"could not catch up with {self.topic} within {timeout_s}s")
            await self.poll(0.1)
        return self.seen

    async def until(self, done: Callable[[list[Seen]], bool], timeout_s: float, what: str = "condition") -> list[Seen]:
        """Poll until ``done(all records seen so far)`` holds; raise TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done(self.seen):
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{what} not met on {self.topic} within {timeout_s}s ({len(self.seen)} records seen)"
                )
            await self.poll(min(0.2, max(0.01, deadline - loop.time())))
        return self.seen

    async def stop(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            # A fetch left waiting while nobody polled may have timed out or been
            # cancelled; closing the consumer then reports it, which no longer matters
            # to anyone. A cancellation of the caller itself is passed on.
            try:
                await consumer.stop()
            except (TimeoutError, KafkaError, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise


class Client:
    """A producer plus tails for one broker and topic prefix."""

    def __init__(self, settings: Settings, broker: BrokerAddress) -> None:
        self.settings = settings
        self.broker = broker
        self.bootstrap = broker.bootstrap
        self.embedded = broker.embedded
        self.names = TopicNames(settings.topic_prefix)
        self.producer = new_producer(settings, broker.bootstrap)
        self.tails: list[Tail] = []  # open tails, oldest first

    async def start(self) -> Client:
        await self.producer.start()
        return self

    async def stop_tails(self, keep: int = 0) -> None:
        """Stop and forget the tails opened after the first ``keep``."""
        stopping, self.tails[keep:] = self.tails[keep:], []
        for tail in stopping:
            await tail.stop()

    async def stop(self) -> None:
        try:
            await self.stop_tails()
        finally:
            await self.producer.stop()

    async def send(
        self,
        role: str,
        key: str | bytes | None,
        value: BaseModel | bytes | dict | None,
        headers: Iterable[tuple[str, str]] = (),
        timestamp_ms: int | None = None,
    ) -> Any:
        if isinstance(value, BaseModel):
            payload: bytes | None = encode(value)
        elif isinstance(value, dict):
            payload = json.dumps(value).encode()
        else:
            payload = value
        key_bytes = key.encode() if isinstance(key, str) else key
        return await self.producer.send_and_wait(
            self.names.name(role),
            payload,
            key=key_bytes,
            headers=[(name, text.encode()) for name, text in headers] or None,
            timestamp_ms=timestamp_ms,
        )

    @contextlib.asynccontextmanager
    async def following(self, role: str, *, from_beginning: bool = False, keep: bool = True) -> AsyncIterator[Tail]:
        """A tail for the length of a block: stopped at its end, never kept open."""
        tail = await Tail(self, role, from_beginning=from_beginning, keep=keep).start()
        try:
            yield tail
        finally:
            await tail.stop()

    async def tail(self, role: str, *, from_beginning: bool = False) -> Tail:
        tail = Tail(self, role, from_beginning=from_beginning)
        await tail.start()
        self.tails.append(tail)
        return tail


async def read_all(client: Client, role: str, timeout_s: float = 60.0) -> list[Seen]:
    """Every record of a topic, from the start to its end as of now."""
    async with client.following(role, from_beginning=True) as tail:
        assert tail.consumer is not None
        ends = await end_offsets(tail.consumer, list(tail.consumer.assignment()), client.embedded)
        records = await read_until(tail.consumer, ends, timeout_s, f"{tail.topic} to its end")
    return [to_seen(record) for record in records]
