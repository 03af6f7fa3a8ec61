"""A real broker and real worker processes for broker-level tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from engine.kafka import BrokerAddress, ensure_topics
from personaflow.embedded import EmbeddedBroker, free_port
from personaflow.process import WorkerProcess
from streams.settings import Settings

from .sync import SyncClient


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def session_broker(data_dir: Path) -> Iterator[BrokerAddress]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set; else Kafka in a container if Docker answers; else Tansu."""
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if servers:
        yield BrokerAddress(servers, embedded=False)
    elif docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield BrokerAddress(kafka.get_bootstrap_server(), embedded=False)
    else:
        with EmbeddedBroker(data_dir) as broker:
            assert broker.address is not None
            yield broker.address


#: The session's tracing UI (nothing listens there: the dashboard only links to it).
TRACE_URL = "http://tracing.invalid/trace/{trace_id}"


def session_settings(data_dir: Path, broker: BrokerAddress, *, partitions: int = 4) -> Settings:
    """Settings for one test session: its own app id and topic prefix on a shared broker."""
    session = uuid.uuid4().hex[:8]
    values = {
        "PERSONAFLOW_DATA_DIR": str(data_dir),
        "PERSONAFLOW_TOPIC_PREFIX": "" if broker.embedded else f"t{session}.",
        "PERSONAFLOW_APP_ID": f"pf-{session}",
        "PERSONAFLOW_PARTITIONS": str(partitions),
        "PERSONAFLOW_WEB_PORT": str(free_port()),
        "PERSONAFLOW_TIMER_INTERVAL_S": "0.5",
        "PERSONAFLOW_UNBOUND_GRACE_MS": "1500",
        # The original runtime's tests replay at tomorrow 12:00Z (so that the wall-clock
        # schedule ticker stays out of their way): the session admits event times up to two
        # days ahead of the worker's clock, not the default hour (tests/streams pin that).
        "PERSONAFLOW_MAX_FUTURE_MS": str(2 * 86_400_000),
        "PERSONAFLOW_LOG_LEVEL": "info",
        # The dashboard links a run's trace id to this tracing UI (tests/agents/test_dashboard.py).
        "PERSONAFLOW_TRACE_URL": TRACE_URL,
    }
    if not broker.embedded:
        values["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def own_pipeline(
    settings: Settings, broker: BrokerAddress, name: str, **overrides: object
) -> Iterator[tuple[Settings, SyncClient]]:
    """Settings and a client for a pipeline of its own on the session broker: its own
    topic prefix and consumer group, so its workers and their rebalances never touch
    the session worker's partitions."""
    tag = f"{name}{uuid.uuid4().hex[:6]}"
    own = settings.with_overrides(
        topic_prefix=f"{settings.topic_prefix}{tag}.", app_id=f"{settings.app_id}-{tag}", **overrides
    )
    asyncio.run(ensure_topics(own, broker.bootstrap))
    kafka = SyncClient(own, broker)
    try:
        yield own, kafka
    finally:
        kafka.close()


class SyncWorker(WorkerProcess):
    """A worker process whose readiness wait runs on the tests' synchronous client."""

    def __init__(self, settings: Settings, client: SyncClient, log_dir: Path) -> None:
        super().__init__(settings, log_dir)
        self.client = client

    def start(self, timeout_s: float = 120.0) -> None:
        self.spawn()
        self.client.run(self.wait_ready(timeout_s))

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()
