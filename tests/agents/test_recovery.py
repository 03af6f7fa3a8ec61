"""A restarted worker recovers its Faust tables from their changelogs."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from engine.compat import fetch_highwaters
from engine.kafka import new_consumer, new_producer

from ..support.wait import eventually

pytestmark = pytest.mark.broker


def partition_of(key: str, partitions: int) -> int:
    return DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))


async def append_one_batch(settings, broker, topic: str, partition: int, key: str, values: list[dict]) -> None:
    """Write ``values`` for ``key`` as a single record batch (linger lets them coalesce)."""
    producer = new_producer(settings, broker.bootstrap, linger_ms=200)
    await producer.start()
    try:
        pending = [await producer.send(topic, json.dumps(v).encode(), key=json.dumps(key).encode(), partition=partition)
                   for v in values]
        offsets = [(await fut).offset for fut in pending]
    finally:
        await producer.stop()
    assert offsets == list(range(offsets[0], offsets[0] + len(values)))


async def list_and_fetch_end(settings, broker, topic: str, partition: int) -> tuple[int, int]:
    consumer = new_consumer(settings, broker.bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        listed = (await consumer.end_offsets([tp]))[tp]
        fetched = (await fetch_highwaters(consumer._client, [tp]))[tp]
        return listed, fetched
    finally:
        await consumer.stop()


def test_restarted_worker_recovers_table_contents_from_the_changelog(worker, kafka, settings, broker, persona_name):
    # Real traffic first: some accepted and some dead-lettered records.
    inbox = kafka.tail("persona_inbox")
    for i in range(5):
        kafka.send("triggers", persona_name, {"request_id": f"r{i}", "persona": persona_name,
                                              "provider": "github", "kind": "push"})
        last_sent = kafka.send("triggers", persona_name, b"{broken").offset
    inbox.wait_for_key(persona_name, count=5)
    stats_key = f"triggers/{partition_of(persona_name, settings.partitions)}"

    def stats() -> dict:
        return json.loads(worker.get("/ingress/stats"))

    # The counters are per partition and shared with other tests: wait until this
    # test's last record was handled, so nothing of it is still on its way.
    before = eventually(lambda: (s := stats()).get(stats_key, {}).get("offset", -1) >= last_sent and s,
                        what="ingress stats counting this test's records")
    assert before[stats_key]["dead_lettered"] >= 5
    assert before[stats_key]["accepted"] >= 5

    # Append several changelog records as ONE batch. On Tansu, ListOffsets reports
    # the end as "base offset of the last batch + 1", so a recovery that trusted it
    # would stop after the first record of this batch and restore value 1, not 6.
    changelog = f"{settings.app_id}-ingress-stats-changelog"
    probe_key = f"recovery-probe/{uuid.uuid4().hex[:6]}"
    values = [{"offset": i, "accepted": i, "dead_lettered": 0} for i in range(1, 7)]
    asyncio.run(append_one_batch(settings, broker, changelog, 0, probe_key, values))
    listed, fetched = asyncio.run(list_and_fetch_end(settings, broker, changelog, 0))
    if broker.embedded:
        assert listed < fetched, "expected the embedded broker's ListOffsets gap to be present"

    worker.restart()

    after = stats()
    assert after[probe_key] == values[-1]
    probe_partition_key = f"triggers/{partition_of('probe', settings.partitions)}"  # readiness probe traffic
    for key, value in before.items():
        if key == probe_partition_key:
            assert after[key]["offset"] >= value["offset"]
        else:
            assert after[key] == value, key
