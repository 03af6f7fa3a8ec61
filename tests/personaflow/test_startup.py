"""Start-up that an early producer cannot break: ``personaflow broker`` creates the topics,
records published before any worker runs are processed once one does, and a worker
that finds a topic with the wrong layout says so in one line and exits 1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from engine.kafka import ensure_topics
from personaflow.embedded import free_port, read_address_file
from personaflow.process import settings_env
from streams.settings import Settings

from ..support.cluster import SyncWorker
from ..support.sync import SyncClient

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker(tmp_path: Path):
    settings = Settings(
        PERSONAFLOW_DATA_DIR=str(tmp_path),
        PERSONAFLOW_PARTITIONS="3",  # type: ignore[call-arg]
        PERSONAFLOW_WEB_PORT=str(free_port()),
        PERSONAFLOW_APP_ID="early",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "personaflow.cli", "broker"],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first_line = process.stdout.readline() if process.stdout else ""
        address = read_address_file(tmp_path)
        assert address is not None, first_line
        yield settings, address, first_line
    finally:
        process.terminate()
        process.wait(30)


def test_records_published_before_any_worker_are_processed_once_one_starts(own_broker, tmp_path):
    settings, address, first_line = own_broker
    assert "topics created with 3 partitions" in first_line
    client = SyncClient(settings, address)
    worker = SyncWorker(settings, client, tmp_path / "logs")
    try:
        receipts = client.tail("receipts", from_beginning=True)
        client.send("bindings", "early_bird", {"name": "early_bird", "entry_workflow": "wf"})
        client.send(
            "triggers",
            "early_bird",
            {
                "request_id": "e1",
                "persona": "early_bird",
                "provider": "linear",
                "kind": "issue",
                "metadata": {"issue_key": "E-1"},
            },
        )
        worker.start()
        [receipt] = receipts.wait_for_key("early_bird")
        assert receipt["status"] == "completed"
    finally:
        worker.stop()
        client.close()


def test_a_worker_that_finds_a_topic_with_the_wrong_layout_exits_1_with_one_line(own_broker):
    settings, address, _ = own_broker
    other = settings.with_overrides(topic_prefix="narrow.", partitions=2)
    asyncio.run(ensure_topics(other, address.bootstrap))  # topics of 2 partitions exist
    result = subprocess.run(
        [sys.executable, "-m", "personaflow.cli", "worker"],
        env=settings_env(other.with_overrides(partitions=3)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    [line] = [text for text in result.stderr.splitlines() if text.strip()]
    assert line == (
        "personaflow worker: topic 'narrow.persona.bindings' has 2 partitions but PERSONAFLOW_PARTITIONS is"
        " 3: every topic must have the same count (co-partitioning); set PERSONAFLOW_PARTITIONS=2, or"
        " delete the topic and let personaflow create it"
    )
