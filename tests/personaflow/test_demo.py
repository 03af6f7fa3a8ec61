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
        "persona.run.completed",
        "persona.control.paused",
        "persona.trigger.queued",
        "persona.control.resumed",
        "persona.run.completed",
    ]
    status = lines[-1]
    assert f"status {persona_name}: state=idle queued=0 spent_today_usd=0.02" in status


def test_the_demo_shows_external_runs_heartbeating_past_their_lease_and_a_retry_with_the_ledger(
    worker, executor, kafka, persona_name
):
    from personaflow.demo import external_scenario

    lines: list[str] = []

    kafka.run(external_scenario(kafka.client, lines.append, worker.settings.web_url, persona=persona_name))

    statuses = [line.split()[3] for line in lines if " receipt " in line]
    assert statuses == ["dispatched", "lease_busy", "completed", "dispatched", "retrying", "dispatched", "completed"]
    streams = [line for line in lines if line.startswith("-- run:")]
    assert "dispatched -> started -> completed" in streams[0]
    assert int(streams[0].split(", ")[1].split()[0]) >= 2  # heartbeats kept a 1.5 s lease for 2.4 s
    assert "retry_scheduled -> dispatched -> started -> completed" in streams[1]
    ledger = [line.strip() for line in "\n".join(lines).splitlines() if line.strip().startswith("dispatch ")]
    assert ledger[0].startswith("dispatch 1 attempt 1 completed")
    assert ledger[1].startswith("dispatch 1 attempt 1 retry_scheduled") and "simulated failure" in ledger[1]
    assert ledger[2].startswith("dispatch 2 attempt 2 completed")
    [status] = [line for line in lines if line.strip().startswith(f"status {persona_name}:")]
    assert "spent_today_usd=0.014" in status
    after = lines[lines.index("-- unsettled (GET /unsettled; the dashboard is at the worker's /)") + 1]
    assert after == "no unsettled work" or after.startswith("unsettled work: ")
