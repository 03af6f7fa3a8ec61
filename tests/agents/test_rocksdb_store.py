"""The RocksDB table store: state survives a graceful restart and a SIGKILL.

Runs its own pipeline (topic prefix and consumer group of its own) on the session
broker, so it does not share partitions with the session worker.
"""

from __future__ import annotations

import pytest

from personaflow.embedded import free_port

from ..support.cluster import SyncWorker, own_pipeline
from ..support.personas import PersonaProbe

pytestmark = pytest.mark.broker


@pytest.fixture
def rocksdb_pipeline(settings, broker, data_dir):
    with own_pipeline(settings, broker, "rdb", store="rocksdb://", web_port=free_port()) as (rocks, kafka):
        worker = SyncWorker(rocks, kafka, data_dir / f"logs-{rocks.app_id}")
        worker.start()
        yield worker, kafka
        worker.stop()


def test_rocksdb_state_survives_restarts_and_a_sigkill(rocksdb_pipeline, persona_name):
    worker, kafka = rocksdb_pipeline
    persona = PersonaProbe(kafka, persona_name)
    try:
        persona.bind({"budget": {"daily_usd": 1.0}})
        assert (
            persona.trigger(
                "github", "pull_request", {"repository": "a/b", "number": "1"}, cost={"cost_usd": 0.25, "tokens": 1}
            )["status"]
            == "completed"
        )
        worker.restart()
        assert persona.trigger("github", "pull_request", {"repository": "a/b", "number": "1"})["status"] == "duplicate"
        worker.restart(kill=True)
        assert (
            persona.trigger(
                "github", "pull_request", {"repository": "a/b", "number": "2"}, cost={"cost_usd": 0.5, "tokens": 1}
            )["status"]
            == "completed"
        )
        status = persona.status(lambda s: s["budget"]["spent_today_usd"] == 0.75)
        assert status["state"] == "idle" and status["queued_events"] == 0
    finally:
        persona.close()
