"""``GET /metrics`` in Prometheus text format, scraped and parsed as Prometheus would."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker


def scrape(worker) -> dict[str, list]:
    text = worker.get("/metrics").decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_inputs_receipts_dead_letters_and_show_lag_leases_queues_and_runs(worker, kafka, persona_name):
    persona = PersonaProbe(kafka, persona_name)
    try:
        before = scrape(worker)
        persona.bind(SELF_REPORTED)
        running = persona.trigger("github", "pull_request", {"repository": "r", "number": "1"})
        assert running["status"] == "dispatched"
        assert persona.trigger("github", "pull_request", {"repository": "r", "number": "2"})["status"] == "lease_busy"
        kafka.send("triggers", persona_name, b"not json")

        def counted() -> dict[str, list] | None:
            metrics = scrape(worker)
            grew = value(
                metrics["personaflow_dead_letters"], "personaflow_dead_letters_total", reason="invalid_input"
            ) > value(before["personaflow_dead_letters"], "personaflow_dead_letters_total", reason="invalid_input")
            return metrics if grew else None

        metrics = eventually(counted, 30, "the dead letter counted")
        receipts = metrics["personaflow_receipts"]
        assert value(receipts, "personaflow_receipts_total", status="dispatched") >= 1
        assert value(receipts, "personaflow_receipts_total", status="lease_busy") >= 1
        inputs = metrics["personaflow_inputs_applied"]
        for topic in ("bindings", "triggers", "persona_inbox", "run_inbox"):
            assert value(inputs, "personaflow_inputs_applied_total", topic=topic) >= 1, topic
        assert (
            value(metrics["personaflow_outputs_published"], "personaflow_outputs_published_total", topic="outbox") > 0
        )
        assert value(metrics["personaflow_active_leases"], "personaflow_active_leases") >= 1
        assert value(metrics["personaflow_queued_items"], "personaflow_queued_items") >= 1
        assert value(metrics["personaflow_runs_in_flight"], "personaflow_runs_in_flight") >= 1
        lag = metrics["personaflow_consumer_lag"]
        assert {s.labels["topic"] for s in lag} >= {"persona.triggers", "persona.inbox", "persona.run.inbox"}
        assert all(s.value >= 0 for s in lag)
        batches = metrics["personaflow_batch_records"]
        assert value(batches, "personaflow_batch_records_count") > 0
        assert [s for s in batches if s.name == "personaflow_batch_records_bucket" and s.labels["le"] == "+Inf"]
        assert value(metrics["personaflow_batch_processing_seconds"], "personaflow_batch_processing_seconds_count") > 0
    finally:
        persona.close()
