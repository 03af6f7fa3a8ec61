"""The demo scenario of ``make run``, against the session's broker and worker."""

from __future__ import annotations

import pytest

from personaflow.demo import scenario

pytestmark = pytest.mark.broker


def test_the_demo_prints_a_run_a_queued_run_drained_on_resume_a_dead_letter_and_status(worker, kafka, persona_name):
    lines: list[str] = []

    kafka.run(scenario(kafka.client, lines.append, worker.settings.web_url, persona=persona_name))

    receipts = [line for line in lines if " receipt " in line]
    assert [line.split()[3] for line in receipts] == ["completed", "queued", "completed"]
    assert all(persona_name in line for line in receipts)
    assert any("value is not valid JSON" in line for line in lines if " dlq " in line)
    assert [line.split()[3] for line in lines if " outbox " in line] == [
        "persona.run.completed", "persona.control.paused", "persona.trigger.queued",
        "persona.control.resumed", "persona.run.completed"]
    status = lines[-1]
    assert f"status {persona_name}: state=idle queued=0 spent_today_usd=0.02" in status
