"""Recovery reads every commit to its end, on the embedded broker too."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.kafka import client_config, new_consumer, new_producer
from engine.publish import Publisher
from engine.recovery import StaleStore, recover
from engine.state import MemoryStore

pytestmark = pytest.mark.broker


async def make_topic(settings, broker, name: str, partitions: int = 2) -> None:
    admin = AIOKafkaAdminClient(**client_config(settings, broker.bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


async def write_commits(
    settings, broker, topic: str, partition: int, commits: list[list[tuple[str, str, bytes | None]]]
) -> None:
    producer = new_producer(settings, broker.bootstrap, linger_ms=0)
    await producer.start()
    try:
        publisher = Publisher(producer)
        for rows in commits:
            records = [(f"{table}\x1f{key}".encode(), value) for table, key, value in rows]
            await publisher.publish_batch(
                topic, partition, records, [], sum(len(k) + len(v or b"") for k, v in records)
            )
    finally:
        await producer.stop()


async def recovered(settings, broker, topic: str, stores: list[MemoryStore]) -> dict[int, int]:
    consumer = new_consumer(settings, broker.bootstrap)
    await consumer.start()
    try:
        return await recover(consumer, topic, stores, broker.embedded)
    finally:
        await consumer.stop()


async def listed_end(settings, broker, tp: TopicPartition) -> int:
    consumer = new_consumer(settings, broker.bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def test_recovery_applies_every_commit_whole_including_the_last_batch(settings, broker):
    topic = f"recovery-{uuid.uuid4().hex[:8]}"
    asyncio.run(make_topic(settings, broker, topic))
    commits = [
        [("personas", "a", b"1"), ("requests", "a/r1", b"x"), ("_engine", "positions", b'{"t": 1}')],
        [
            ("personas", "a", b"2"),
            ("requests", "a/r1", None),
            ("queues", "a/k", b"q"),
            ("_engine", "positions", b'{"t": 2}'),
        ],
        [
            ("personas", "a", b"3"),
            ("personas", "b", b"1"),
            ("timers", "0001", b""),
            ("_engine", "positions", b'{"t": 3}'),
        ],
    ]
    asyncio.run(write_commits(settings, broker, topic, 1, commits))

    # On Tansu, ListOffsets says the partition ends one record into the last batch: a
    # recovery that trusted it would restore "a" = 3 but not "b", and old positions.
    tp = TopicPartition(topic, 1)
    if broker.embedded:
        assert asyncio.run(listed_end(settings, broker, tp)) < 11

    store = MemoryStore(1, ordered={"timers"})
    applied = asyncio.run(recovered(settings, broker, topic, [store, MemoryStore(0)]))
    assert applied == {1: 11, 0: 0}
    assert store.changelog_offset == 10
    assert (store.get("personas", "a"), store.get("personas", "b")) == (b"3", b"1")
    assert store.get("requests", "a/r1") is None and store.get("queues", "a/k") == b"q"
    assert store.get("_engine", "positions") == b'{"t": 3}'
    assert list(store.items("timers")) == [("0001", b"")]

    # A store that is already there catches up from its own offset only.
    asyncio.run(
        write_commits(settings, broker, topic, 1, [[("personas", "c", b"1"), ("_engine", "positions", b'{"t": 4}')]])
    )
    assert asyncio.run(recovered(settings, broker, topic, [store])) == {1: 2}
    assert store.get("personas", "c") == b"1"

    # A store ahead of its changelog (the topic was recreated) is refused, to be rebuilt.
    ahead = MemoryStore(0)
    ahead.apply([], 5)
    with pytest.raises(StaleStore):
        asyncio.run(recovered(settings, broker, topic, [ahead]))
