"""aiokafka plumbing shared by the runtime, the command line and the tests: client
configuration from the settings, topic administration, producers and consumers, and end
offsets that are right on every broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from streams.records import MAX_RECORD_BYTES
from streams.settings import Settings
from streams.topics import SPECS, TopicNames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker is, and whether it is the embedded one (compatibility mode)."""

    bootstrap: str
    embedded: bool
    instance: str = ""
    pid: int = 0


class TopicLayoutError(RuntimeError):
    """An existing topic has a layout the pipeline cannot work with."""


def client_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """aiokafka keyword arguments (servers + security) from the settings."""
    config: dict[str, Any] = {"bootstrap_servers": bootstrap}
    protocol = settings.security_protocol
    if protocol is None:
        if settings.sasl_mechanism:
            protocol = "SASL_SSL" if settings.ssl_cafile else "SASL_PLAINTEXT"
        elif settings.ssl_cafile:
            protocol = "SSL"
    if protocol:
        config["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        config["ssl_context"] = create_ssl_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.sasl_mechanism:
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = settings.sasl_password
    return config


#: Outputs embed the trigger envelope (up to the 1 MiB input limit) plus their own
#: fields, so topics accept records up to 4 MiB.
MAX_MESSAGE_BYTES = str(MAX_RECORD_BYTES * 4)
#: A partition's state changes of one batch are written as ONE record batch (that is
#: what makes them atomic), so the changelog accepts large batches.
MAX_CHANGELOG_BATCH_BYTES = 64 * 1024 * 1024


def changelog_topic(settings: Settings) -> str:
    """The worker group's state changelog: one partition per inbox partition, compacted."""
    return f"{settings.topic_prefix}{settings.app_id}-state-changelog"


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Name -> topic config for every contract topic and the state changelog."""
    names = TopicNames(settings.topic_prefix)
    configs = {
        names.name(spec.role): {
            "max.message.bytes": MAX_MESSAGE_BYTES,
            **({"cleanup.policy": "compact"} if spec.compacted else {}),
            **({"retention.ms": "-1"} if spec.kept else {}),
        }
        for spec in SPECS
    }
    configs[changelog_topic(settings)] = {
        "max.message.bytes": str(MAX_CHANGELOG_BATCH_BYTES),
        "cleanup.policy": "compact",
    }
    return configs


async def ensure_topics(settings: Settings, bootstrap: str, *, timeout_s: float = 30.0) -> None:
    """Create every contract topic that is missing; check partition counts of the rest.

    Persona-keyed topics must share one partition count (co-partitioning), so an
    existing topic with a different count is an error that names the topic.
    """
    admin = AIOKafkaAdminClient(**client_config(settings, bootstrap), request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        wanted = topic_configs(settings)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=config)
            for name, config in wanted.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # a concurrent worker won the race
                pass
        present = [name for name in wanted if name in existing]
        if present:
            described = await admin.describe_topics(present)
            for topic in described:
                count = len(topic.get("partitions", []))
                if count and count != settings.partitions:
                    raise TopicLayoutError(
                        f"topic {topic['topic']!r} has {count} partitions but PERSONAFLOW_PARTITIONS is"
                        f" {settings.partitions}: every topic must have the same count (co-partitioning);"
                        f" set PERSONAFLOW_PARTITIONS={count}, or delete the topic and let personaflow create it"
                    )
    finally:
        await admin.close()
    await wait_for_topics(settings, bootstrap, list(wanted), timeout_s=timeout_s)


async def wait_for_topics(settings: Settings, bootstrap: str, names: list[str], *, timeout_s: float) -> None:
    """Wait until metadata shows every topic with its partitions (creation is async)."""
    consumer = AIOKafkaConsumer(**client_config(settings, bootstrap))
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            known = await consumer.topics()
            if all(name in known and consumer.partitions_for_topic(name) for name in names):
                return
            if asyncio.get_running_loop().time() > deadline:
                absent = [n for n in names if n not in known]
                raise TimeoutError(f"topics not visible after {timeout_s}s: {absent}")
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
    finally:
        await consumer.stop()


def new_producer(settings: Settings, bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    config = client_config(settings, bootstrap)
    config.update(acks="all", linger_ms=2, max_request_size=MAX_RECORD_BYTES * 4)
    config.update(overrides)
    return AIOKafkaProducer(**config)


def new_consumer(settings: Settings, bootstrap: str, **overrides: Any) -> AIOKafkaConsumer:
    config = client_config(settings, bootstrap)
    config.update(
        enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=MAX_RECORD_BYTES * 4
    )
    config.update(overrides)
    return AIOKafkaConsumer(**config)


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], embedded: bool
) -> dict[TopicPartition, int]:
    """End offsets of ``partitions``: ListOffsets on Kafka; on the embedded broker, whose
    ListOffsets is wrong, the high watermarks of a Fetch (see :mod:`engine.compat`)."""
    if not partitions:
        return {}
    if embedded:
        from .compat import fetch_highwaters

        return await fetch_highwaters(consumer._client, partitions)
    return dict(await consumer.end_offsets(partitions))


async def read_until(
    consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int], timeout_s: float, what: str
) -> list[ConsumerRecord]:
    """The records below ``ends`` from where the assigned partitions are positioned.

    Returns once every partition reached its end; records the log no longer holds
    (retention) are skipped by the offset reset, so they simply do not appear.
    """
    reached = {tp: 0 for tp in ends}
    records: list[ConsumerRecord] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while any(reached[tp] < end for tp, end in ends.items()):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"could not read {what} within {timeout_s}s")
        for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
            for record in batch:
                reached[tp] = record.offset + 1
                if record.offset < ends[tp]:
                    records.append(record)
    return records
