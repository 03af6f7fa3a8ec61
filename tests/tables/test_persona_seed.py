"""The original persona runtime's eight tests, as pure transition tests."""

from __future__ import annotations

from tables.timefmt import parse_rfc3339_ms

from .harness import T0, Harness, cost, merge_captain

PR_462 = {"repository": "burin-labs/harn", "number": "462"}


def test_schedule_tick_records_lifecycle_status_and_receipt():
    h = Harness()
    h.bind(merge_captain())
    now = parse_rfc3339_ms("2026-04-24T12:30:00Z")
    receipt = h.trigger("merge_captain", "schedule", "cron.tick", cost=cost(0.01, 10), at_ms=now)
    assert receipt.status == "completed"
    assert receipt.lease is not None
    assert receipt.work_key == "schedule:merge_captain:*/30 * * * *:2026-04-24T12:30:00Z"
    status = h.status("merge_captain", now)
    assert status.state == "idle"
    assert status.last_run == "2026-04-24T12:30:00Z"
    assert status.next_scheduled_run == "2026-04-24T13:00:00Z"
    assert status.budget.spent_today_usd == 0.01


def test_paused_personas_queue_and_resume_drains_once():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause", T0)
    receipt = h.trigger("merge_captain", "github", "pull_request", PR_462, at_ms=T0)
    assert receipt.status == "queued"
    assert h.status("merge_captain", T0).queued_events == 1
    h.control("merge_captain", "resume", T0 + 1000)
    status = h.status("merge_captain", T0 + 1000)
    assert status.state == "idle"
    assert status.queued_events == 0


def test_resumed_queued_work_reuses_original_budget_cost():
    h = Harness()
    h.bind(merge_captain(run_usd=0.01))
    h.control("merge_captain", "pause", T0)
    queued = h.trigger(
        "merge_captain",
        "github",
        "pull_request",
        {"repository": "burin-labs/harn", "number": "1379"},
        cost=cost(0.02, 1),
        at_ms=T0 + 1,
    )
    assert queued.status == "queued"
    h.control("merge_captain", "resume", T0 + 2)
    status = h.status("merge_captain", T0 + 2)
    assert status.budget.reason == "run_usd"
    assert "run_usd" in status.last_error
    assert status.queued_events == 1


def test_duplicate_trigger_envelope_is_not_processed_twice():
    h = Harness()
    h.bind(merge_captain())
    first = h.trigger("merge_captain", "github", "pull_request", PR_462, at_ms=T0)
    second = h.trigger("merge_captain", "github", "pull_request", PR_462, at_ms=T0 + 1000)
    assert first.status == "completed"
    assert second.status == "duplicate"
    assert second.lease is None


def test_disabled_personas_dead_letter_events():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "disable", T0)
    receipt = h.trigger("merge_captain", "slack", "message", {"channel": "C123", "ts": "1713988800.000100"}, at_ms=T0)
    assert receipt.status == "dead_lettered"
    status = h.status("merge_captain", T0)
    assert status.state == "disabled"
    assert status.disabled_events == 1


def test_budget_exhaustion_blocks_expensive_work():
    h = Harness()
    h.bind(merge_captain(daily_usd=0.01))
    receipt = h.trigger("merge_captain", "linear", "issue", {"issue_key": "HAR-462"}, cost=cost(0.02, 1), at_ms=T0)
    assert receipt.status == "budget_exhausted"
    status = h.status("merge_captain", T0)
    assert status.budget.reason == "daily_usd"
    assert status.budget.exhausted
    assert "daily_usd" in status.last_error


def test_deterministic_predicate_hit_emits_value_event_with_avoided_cost():
    h = Harness()
    h.bind(merge_captain())
    receipt = h.trigger(
        "merge_captain",
        "github",
        "pull_request",
        {"repository": "burin-labs/harn", "number": "715"},
        cost=cost(
            avoided_cost_usd=0.0042,
            deterministic_steps=1,
            metadata={"predicate": "pr_already_green", "would_have_called_model": "gpt-5.4-mini"},
        ),
        at_ms=T0,
    )
    run_id = receipt.run_id
    assert run_id is not None
    [event] = [e for e in h.events("merge_captain", "persona.value.deterministic_execution") if e.run_id == run_id]
    value = event.payload
    assert value["persona_id"] == "merge_captain"
    assert value["template_ref"] == "software_factory@v0"
    assert value["run_id"] == run_id
    assert value["paid_cost_usd"] == 0.0
    assert value["avoided_cost_usd"] == 0.0042
    assert value["deterministic_steps"] == 1
    assert value["metadata"]["predicate"] == "pr_already_green"


def test_frontier_escalation_run_emits_value_event_with_paid_cost():
    h = Harness()
    h.bind(merge_captain())
    receipt = h.trigger(
        "merge_captain",
        "linear",
        "issue",
        {"issue_key": "HAR-715"},
        cost=cost(
            0.011,
            20,
            llm_steps=1,
            frontier_escalations=1,
            metadata={"frontier_model": "gpt-5.4", "escalation_reason": "high_risk_merge"},
        ),
        at_ms=T0,
    )
    run_id = receipt.run_id
    [escalation] = [
        e.payload for e in h.events("merge_captain", "persona.value.frontier_escalation") if e.run_id == run_id
    ]
    assert escalation["paid_cost_usd"] == 0.011
    assert escalation["avoided_cost_usd"] == 0.0
    assert escalation["llm_steps"] == 1
    assert escalation["metadata"]["frontier_model"] == "gpt-5.4"
    [completion] = [e.payload for e in h.events("merge_captain", "persona.value.run_completed") if e.run_id == run_id]
    assert completion["paid_cost_usd"] == 0.0
