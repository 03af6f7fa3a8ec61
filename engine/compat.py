"""Compatibility with the embedded Tansu broker; used only when the broker is embedded.

Tansu answers ``ListOffsets(latest)`` with the base offset of the last record batch
plus one instead of the log end offset, so a reader that trusted it would stop inside
the last batch (state recovery would silently lose the end of the last commit). The
high watermark in a Fetch response is right: :func:`fetch_highwaters` reads it.

Tansu also answers JoinGroup only after half the session timeout, and it holds a fetch for
about half its maximum wait even when data arrives (measured: 4.6 ms at 1 ms, 8 ms at 10,
29 ms at 50, 54 ms at 100), while every empty fetch costs it CPU (idle worker and broker:
17 % and 29 % of a core at 10 ms, 1.5 % and 4 % at 200 ms). So the worker's consumer
fetches with a short wait while records flow and a long one once idle (:class:`FetchWait`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.protocol.fetch import FetchRequest

#: Consumer settings against Tansu: a short session (joins take half of it).
CONSUMER_SETTINGS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 200,
}


class FetchWait:
    """The worker consumer's fetch wait against Tansu: ``active_ms`` while records came in
    the last ``idle_after_s`` seconds, ``idle_ms`` after that."""

    def __init__(self, consumer: Any, active_ms: int = 10, idle_ms: int = 200, idle_after_s: float = 2.0) -> None:
        self.fetcher = consumer._fetcher  # aiokafka reads its _fetch_max_wait_ms per request
        self.active_ms, self.idle_ms, self.idle_after_s = active_ms, idle_ms, idle_after_s
        self.last_records = 0.0

    def saw(self, records: bool, now: float) -> None:
        if records:
            self.last_records = now
            self.fetcher._fetch_max_wait_ms = self.active_ms
        elif now - self.last_records > self.idle_after_s:
            self.fetcher._fetch_max_wait_ms = self.idle_ms


async def _fetch_once(
    client: Any, node: int, topics: dict[str, list[tuple[int, int, int]]]
) -> dict[TopicPartition, int]:
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
