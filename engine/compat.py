"""Compatibility with the embedded Tansu broker (see ``spec/broker.md``).

Only activated for the embedded broker; against Apache Kafka the pipeline runs stock
Faust/aiokafka behaviour.

Tansu answers ``ListOffsets(latest)`` with the base offset of the last record batch
plus one instead of the log end offset. Faust reads changelog highwaters that way, so
table recovery would stop early and silently lose state. The high watermark in a
Fetch response is right, so :class:`TansuTransport` computes highwaters from a short
Fetch (one byte per partition) instead. Tansu also answers JoinGroup only after half
the session timeout, hence the short session timeout in :data:`FAUST_SETTINGS`.

Faust's worker consumer long-polls with a fixed 1.5 s fetch wait. Kafka answers such a
fetch as soon as data arrives; with Faust's consumer Tansu was measured to hold it for
the whole wait, adding ~0.9 s to every hop through an inbox. The Tansu consumer waits
at most :data:`FETCH_MAX_WAIT_MS` instead (hop latency measured at 60-100 ms).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from aiokafka import TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

#: Fetch long-poll of the worker consumer against Tansu (Faust hard-codes 1500 ms).
FETCH_MAX_WAIT_MS = 50

#: Faust settings applied only when the broker is the embedded Tansu broker.
FAUST_SETTINGS: dict[str, Any] = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
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


class TansuConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with Fetch-based highwaters and a short fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:  # type: ignore[override]
        consumer = self._ensure_consumer()
        if self.consumer.in_transaction:
            return {tp: consumer.last_stable_offset(tp) for tp in partitions}
        found = await fetch_highwaters(
            consumer._client, [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        )
        return {TP(tp.topic, tp.partition): offset for tp, offset in found.items()}


class TansuConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> TansuConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuTransport(faust_aiokafka.Transport):
    """Faust transport for ``tansu://host:port`` broker URLs (entry point ``faust.transports``)."""

    Consumer = TansuConsumer
