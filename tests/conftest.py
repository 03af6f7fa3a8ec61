"""Session fixtures: one broker and one worker process shared by all broker-level tests.

Tests give their personas unique names (``persona_name``) so they never see each
other's records, and wait on conditions (``SyncTail.until``), never on fixed sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.kafka import BrokerAddress
from streams.settings import Settings

from .support.cluster import SyncWorker, session_broker, session_settings
from .support.sync import SyncClient


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("personaflow")


@pytest.fixture(scope="session")
def broker(data_dir: Path) -> Iterator[BrokerAddress]:
    with session_broker(data_dir) as address:
        yield address


@pytest.fixture(scope="session")
def settings(data_dir: Path, broker: BrokerAddress) -> Settings:
    return session_settings(data_dir, broker)


@pytest.fixture(scope="session")
def kafka(settings: Settings, broker: BrokerAddress) -> Iterator[SyncClient]:
    import asyncio

    from engine.kafka import ensure_topics

    asyncio.run(ensure_topics(settings, broker.bootstrap))
    client = SyncClient(settings, broker)
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker(settings: Settings, kafka: SyncClient, data_dir: Path) -> Iterator[SyncWorker]:
    process = SyncWorker(settings, kafka, data_dir / "logs")
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def close_test_tails(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop the topic tails a test opened, so no consumer outlives its test."""
    if "kafka" not in request.fixturenames:
        yield
        return
    kafka: SyncClient = request.getfixturevalue("kafka")
    opened_before = kafka.open_tails
    yield
    kafka.stop_tails(opened_before)


@pytest.fixture
def persona_name(request: pytest.FixtureRequest) -> str:
    """A persona name no other test uses."""
    base = request.node.name.replace("[", "-").replace("]", "")[:80]
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def executor(settings: Settings, worker: SyncWorker, data_dir: Path) -> Iterator[object]:
    """The reference executor (``personaflow executor``) as a process of the session."""
    import asyncio

    from personaflow.process import ExecutorProcess

    process = ExecutorProcess(settings, data_dir / "logs", group=f"{settings.app_id}-executor")
    process.spawn()
    asyncio.run(process.wait_ready())
    yield process
    process.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server: ``PERSONAFLOW_TEST_POSTGRES_URL`` if set, else one started
    from the ``pgserver`` wheel (about a second). Yields the URL of its ``postgres`` database."""
    import os

    url = os.environ.get("PERSONAFLOW_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))  # pgserver asks for one; CI machines may not set it
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the session's PostgreSQL server."""
    import sqlalchemy as sa

    from audit.recorder import engine_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(engine_url(postgres_server), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.make_url(engine_url(postgres_server)).set(database=name).render_as_string(hide_password=False)
