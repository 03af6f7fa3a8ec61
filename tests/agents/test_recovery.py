"""A restarted worker recovers its state from the changelog and resumes where it stood."""

from __future__ import annotations

import pytest

from ..support.personas import PersonaProbe

pytestmark = pytest.mark.broker


def test_a_restarted_worker_keeps_spend_dedupe_and_queue_and_resumes_at_its_positions(worker, kafka, persona_name):
    persona = PersonaProbe(kafka, persona_name)
    try:
        persona.bind({"budget": {"daily_usd": 1.0}})
        for number in (1, 2, 3):
            receipt = persona.trigger(
                "github",
                "pull_request",
                {"repository": "a/b", "number": str(number)},
                cost={"cost_usd": 0.125, "tokens": 1},
            )
            assert receipt["status"] == "completed"
        persona.control("pause")
        assert persona.trigger("linear", "issue", {"issue_key": "Q-1"})["status"] == "queued"
        completed_before = len(persona.events("persona.run.completed"))

        worker.restart()

        again = persona.trigger("github", "pull_request", {"repository": "a/b", "number": "3"})
        assert again["status"] == "queued"  # still paused: the pause survived
        persona.control("resume")
        status = persona.status(lambda s: s["queued_events"] == 0 and s["state"] == "idle")
        assert status["budget"]["spent_today_usd"] == 0.375  # no run applied twice
        receipts = persona.receipts_for(again["request_id"], 2)
        assert receipts[1]["status"] == "duplicate"  # the completed work key survived
        # Nothing before the restart was applied again: the only new run is the queued one.
        persona.wait_events("persona.run.completed", completed_before + 1)
        assert len(persona.events("persona.run.completed")) == completed_before + 1
    finally:
        persona.close()
