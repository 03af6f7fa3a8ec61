"""Compatibility with the embedded Tansu broker; used only when the broker is embedded.

Tansu answers ``ListOffsets(latest)`` with the base offset of the last record batch
plus one instead of the log end offset, so a reader that trusted it would stop inside
the last batch (state recovery would silently lose the end of the last commit). The
high watermark in a Fetch response is right: :func:`fetch_highwaters` reads it.

Tansu also answers JoinGroup only after half the session timeout and holds a fetch for
most of its maximum wait, hence the consumer settings of :data:`CONSUMER_SETTINGS`.
"""

from __future__ import annotations

from typing import Any, Iterable

from aiokafka import TopicPartition
from aiokafka.protocol.fetch import FetchRequest

#: Consumer settings against Tansu: short session (joins take half of it) and a short
#: fetch wait (Tansu holds a fetch for most of its wait: 215 ms at 500, 3-9 ms at 50).
CONSUMER_SETTINGS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 50,
}


async def _fetch_once(client: Any, node: int, topics: dict[str, list[tuple[int, int, int]]]) -> dict[TopicPartition, int]:
    # min_bytes 0 with a short max_wait: Tansu answers an immediate (max_wait 0)
    # fetch with no partitions at all, but reports every partition, empty ones
    # included, once it may wait briefly. One byte per partition is enough for the
    # response to carry the high watermark.
    request = FetchRequest(50, 0, 1024 * 1024, 0, list(topics.items()))
    response = await client.send(node, request)
    found: dict[TopicPartition, int] = {}
    for topic, parts in response.topics:
        for part in parts:
            partition, error_code, highwater = part[0], part[1], part[2]
            if error_code:
                raise RuntimeError(
                    f"fetch for the highwater of {topic}[{partition}] failed with error code {error_code}"
                )
            found[TopicPartition(topic, partition)] = highwater
    return found


async def fetch_highwaters(client: Any, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """High watermark of each partition, read from Fetch responses.

    ``client`` is an ``aiokafka.AIOKafkaClient``. Partitions are grouped by leader;
    any partition a grouped response leaves out is asked for on its own.
    """
    wanted = list(partitions)
    if not wanted:
        return {}
    if any(client.cluster.leader_for_partition(tp) in (None, -1) for tp in wanted):
        await client.force_metadata_update()
    leaders: dict[TopicPartition, int] = {}
    for tp in wanted:
        node = client.cluster.leader_for_partition(tp)
        if node is None or node == -1:
            raise RuntimeError(f"no leader known for {tp.topic}[{tp.partition}]")
        leaders[tp] = node
    result: dict[TopicPartition, int] = {}
    for node in set(leaders.values()):
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for tp, leader in leaders.items():
            if leader == node:
                topics.setdefault(tp.topic, []).append((tp.partition, 0, 1))
        result.update(await _fetch_once(client, node, topics))
    for tp in [tp for tp in wanted if tp not in result]:
        result.update(await _fetch_once(client, leaders[tp], {tp.topic: [(tp.partition, 0, 1)]}))
    missing = [tp for tp in wanted if tp not in result]
    if missing:
        raise RuntimeError(f"broker reported no highwater for {missing}")
    return {tp: result[tp] for tp in wanted}
