"""The persona agent over a real broker, driven only through the public topics.

Inputs go to persona.bindings / persona.triggers / persona.control (and persona.run.events,
acting as an executor); assertions read persona.receipts, persona.outbox and persona.status.

The original runtime's tests run at a fixed instant *tomorrow* at 12:00Z rather than their date:
the worker's schedule ticker runs on the wall clock and would otherwise fire the test
binding's ``*/30`` schedule. The pure tests pin the literal dates.
"""

from __future__ import annotations

import json
import time

import pytest

from tables.timefmt import DAY_MS, format_ms

from ..support.personas import SELF_REPORTED, PersonaProbe

pytestmark = pytest.mark.broker

T0 = (int(time.time() * 1000) // DAY_MS + 1) * DAY_MS + 12 * 3_600_000  # tomorrow 12:00:00Z
MINUTE = 60_000
ORIGINAL_BINDING = {
    "template_ref": "software_factory@v0",
    "entry_workflow": "workflows/merge.harn#run",
    "schedules": ["*/30 * * * *"],
    "triggers": ["github.pr_opened"],
    "budget": {"daily_usd": 0.02, "hourly_usd": None, "run_usd": 0.02, "max_tokens": 100},
}
PR_462 = {"repository": "burin-labs/harn", "number": "462"}


@pytest.fixture
def persona(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    yield probe
    probe.close()


def original_binding(**budget) -> dict:
    return {**ORIGINAL_BINDING, "budget": {**ORIGINAL_BINDING["budget"], **budget}}


# ------------------------------------------------- the original runtime's tests


def test_schedule_tick_records_lifecycle_status_and_receipt(persona):
    persona.bind(original_binding(), at_ms=T0)
    receipt = persona.trigger("schedule", "cron.tick", cost={"cost_usd": 0.01, "tokens": 10}, at_ms=T0 + 30 * MINUTE)
    assert receipt["status"] == "completed"
    assert receipt["lease"] is not None
    status = persona.status(lambda s: s["last_run"] is not None)
    assert status["state"] == "idle"
    assert status["last_run"] == format_ms(T0 + 30 * MINUTE)
    assert status["next_scheduled_run"] == format_ms(T0 + 60 * MINUTE)
    assert status["budget"]["spent_today_usd"] == 0.01


def test_paused_personas_queue_and_resume_drains_once(persona):
    persona.bind(original_binding(), at_ms=T0)
    persona.control("pause", T0)
    receipt = persona.trigger("github", "pull_request", PR_462, at_ms=T0)
    assert receipt["status"] == "queued"
    assert persona.status(lambda s: s["queued_events"] == 1)["state"] == "paused"
    persona.control("resume", T0 + 1000)
    status = persona.status(lambda s: s["last_run"] is not None)
    assert status["state"] == "idle"
    assert status["queued_events"] == 0


def test_resumed_queued_work_reuses_original_budget_cost(persona):
    persona.bind(original_binding(run_usd=0.01), at_ms=T0)
    persona.control("pause", T0)
    queued = persona.trigger(
        "github",
        "pull_request",
        {"repository": "burin-labs/harn", "number": "1379"},
        cost={"cost_usd": 0.02, "tokens": 1},
        at_ms=T0 + 1,
    )
    assert queued["status"] == "queued"
    persona.control("resume", T0 + 2)
    status = persona.status(lambda s: s["state"] == "idle" and s["queued_events"] == 1)
    assert status["budget"]["reason"] == "run_usd"
    assert "run_usd" in status["last_error"]
    assert status["queued_events"] == 1


def test_duplicate_trigger_envelope_is_not_processed_twice(persona):
    persona.bind(original_binding(), at_ms=T0)
    first = persona.trigger("github", "pull_request", PR_462, at_ms=T0)
    second = persona.trigger("github", "pull_request", PR_462, at_ms=T0 + 1000)
    assert first["status"] == "completed"
    assert second["status"] == "duplicate"
    assert second["lease"] is None


def test_disabled_personas_dead_letter_events(persona):
    persona.bind(original_binding(), at_ms=T0)
    persona.control("disable", T0)
    receipt = persona.trigger("slack", "message", {"channel": "C123", "ts": "1713988800.000100"}, at_ms=T0)
    assert receipt["status"] == "dead_lettered"
    status = persona.status(lambda s: s["disabled_events"] == 1)
    assert status["state"] == "disabled"


def test_budget_exhaustion_blocks_expensive_work(persona):
    persona.bind(original_binding(daily_usd=0.01), at_ms=T0)
    receipt = persona.trigger(
        "linear", "issue", {"issue_key": "HAR-462"}, cost={"cost_usd": 0.02, "tokens": 1}, at_ms=T0
    )
    assert receipt["status"] == "budget_exhausted"
    status = persona.status(lambda s: s["budget"]["exhausted"])
    assert status["budget"]["reason"] == "daily_usd"
    assert "daily_usd" in status["last_error"]


def test_deterministic_predicate_hit_emits_value_event_with_avoided_cost(persona):
    persona.bind(original_binding(), at_ms=T0)
    receipt = persona.trigger(
        "github",
        "pull_request",
        {"repository": "burin-labs/harn", "number": "715"},
        at_ms=T0,
        cost={
            "cost_usd": 0.0,
            "tokens": 0,
            "avoided_cost_usd": 0.0042,
            "deterministic_steps": 1,
            "metadata": {"predicate": "pr_already_green", "would_have_called_model": "gpt-5.4-mini"},
        },
    )
    run_id = receipt["run_id"]
    [event] = [e for e in persona.wait_events("persona.value.deterministic_execution") if e["run_id"] == run_id]
    value = event["payload"]
    assert value["persona_id"] == persona.name
    assert value["template_ref"] == "software_factory@v0"
    assert value["run_id"] == run_id
    assert (value["paid_cost_usd"], value["avoided_cost_usd"], value["deterministic_steps"]) == (0.0, 0.0042, 1)
    assert value["metadata"]["predicate"] == "pr_already_green"


def test_frontier_escalation_run_emits_value_event_with_paid_cost(persona):
    persona.bind(original_binding(), at_ms=T0)
    receipt = persona.trigger(
        "linear",
        "issue",
        {"issue_key": "HAR-715"},
        at_ms=T0,
        cost={
            "cost_usd": 0.011,
            "tokens": 20,
            "llm_steps": 1,
            "frontier_escalations": 1,
            "metadata": {"frontier_model": "gpt-5.4", "escalation_reason": "high_risk_merge"},
        },
    )
    run_id = receipt["run_id"]
    persona.wait_events("persona.value.run_completed")
    [escalation] = [e["payload"] for e in persona.events("persona.value.frontier_escalation") if e["run_id"] == run_id]
    assert (escalation["paid_cost_usd"], escalation["avoided_cost_usd"], escalation["llm_steps"]) == (0.011, 0.0, 1)
    assert escalation["metadata"]["frontier_model"] == "gpt-5.4"
    [completion] = [e["payload"] for e in persona.events("persona.value.run_completed") if e["run_id"] == run_id]
    assert completion["paid_cost_usd"] == 0.0


# -------------------------------------------------------------- more behaviour


EXTERNAL = {**SELF_REPORTED, "budget": {"daily_usd": 1.0}}


def test_lease_busy_trigger_is_queued_and_drained_when_the_run_completes(persona):
    persona.bind(EXTERNAL)
    first = persona.trigger("github", "pull_request", {"repository": "r", "number": "1"})
    assert first["status"] == "dispatched"
    dispatch = persona.dispatch_for(first["run_id"])
    assert (dispatch["lease_id"], dispatch["action"], dispatch["persona"]) == (
        first["lease"]["id"],
        "start",
        persona.name,
    )

    busy = persona.trigger("github", "pull_request", {"repository": "r", "number": "2"})
    assert (busy["status"], busy["queued"], busy["lease"]["id"]) == ("lease_busy", True, first["lease"]["id"])
    persona.status(lambda s: s["queued_events"] == 1 and s["state"] == "running")

    persona.report(first["run_id"], first["lease"]["id"], "started")
    persona.report(first["run_id"], first["lease"]["id"], "completed", cost={"cost_usd": 0.03, "tokens": 12})
    assert [r["status"] for r in persona.receipts_for(first["request_id"], 2)] == ["dispatched", "completed"]
    drained = persona.receipts_for(busy["request_id"], 2)[1]
    assert drained["status"] == "dispatched"
    persona.dispatch_for(drained["run_id"])
    status = persona.status(lambda s: (s["active_lease"] or {}).get("work_key") == "github:r:pr:2")
    assert status["queued_events"] == 0
    assert status["budget"]["spent_today_usd"] == 0.03


def test_drain_finishes_the_active_and_earlier_queued_work_then_pauses(persona):
    persona.bind(EXTERNAL)
    a = persona.trigger("github", "pull_request", {"repository": "r", "number": "1"})
    b = persona.trigger("github", "pull_request", {"repository": "r", "number": "2"})
    persona.control("drain")
    persona.status(lambda s: s["state"] == "draining")
    c = persona.trigger("github", "pull_request", {"repository": "r", "number": "3"})
    assert c["status"] == "queued"
    persona.report(a["run_id"], a["lease"]["id"], "completed")
    b_run = persona.receipts_for(b["request_id"], 2)[1]
    assert b_run["status"] == "dispatched"
    persona.report(b_run["run_id"], b_run["lease"]["id"], "completed")
    status = persona.status(lambda s: s["state"] == "paused")
    assert status["queued_events"] == 1 and status["queued_work"][0]["reason"] == "draining"
    persona.control("resume")
    assert persona.receipts_for(c["request_id"], 2)[1]["status"] == "dispatched"


def test_queued_work_drains_highest_priority_first_then_oldest(persona):
    persona.bind({"budget": {}})
    persona.control("pause")
    order = [("1", 0), ("2", 5), ("3", 1), ("4", 5)]
    for number, priority in order:
        persona.trigger("github", "pull_request", {"repository": "r", "number": number}, priority=priority)
    persona.control("resume")
    completed = persona.wait_events("persona.run.completed", 4)
    assert [e["payload"]["work_key"][-1] for e in completed] == ["2", "4", "3", "1"]


def test_enable_brings_a_disabled_persona_back(persona):
    persona.bind({})
    persona.control("disable")
    rejected = persona.control("resume")
    assert rejected["status"] == "rejected" and "enable" in rejected["error"]
    persona.control("enable")
    assert persona.trigger("linear", "issue", {"issue_key": "E-1"})["status"] == "completed"


def test_a_redelivered_request_gets_the_same_receipt_and_no_second_budget_record(persona):
    persona.bind({"budget": {"daily_usd": 1.0}})
    first = persona.trigger(
        "linear", "issue", {"issue_key": "R-1"}, cost={"cost_usd": 0.05, "tokens": 3}, request_id=f"{persona.name}-once"
    )
    persona.trigger(
        "linear",
        "issue",
        {"issue_key": "R-1"},
        cost={"cost_usd": 0.05, "tokens": 3},
        request_id=f"{persona.name}-once",
        wait=False,
    )
    first_again, second = persona.receipts_for(first["request_id"], 2)
    assert second == first == first_again
    persona.trigger("linear", "issue", {"issue_key": "R-2"})  # a later input: everything before it is applied
    persona.wait_events("persona.run.completed", 2)
    recorded = [
        e for e in persona.events("persona.budget.recorded") if e["payload"]["lease_id"] == first["lease"]["id"]
    ]
    assert len(recorded) == 1
    assert len(persona.events("persona.run.completed")) == 2
    assert persona.status(lambda s: s["last_run"] is not None)["budget"]["spent_today_usd"] == 0.05


def test_triggers_for_an_unknown_persona_get_a_rejected_receipt_naming_it(persona):
    receipt = persona.trigger("github", "pull_request", PR_462)
    assert receipt["status"] == "rejected"
    assert persona.name in receipt["error"]
    assert persona.events() == []


def test_the_lease_reaper_requeues_a_silent_run_and_takes_up_queued_work(persona):
    persona.bind({**SELF_REPORTED, "lease_ttl_ms": 1500, "retry": {"backoff_ms": 60_000}})
    silent = persona.trigger("github", "pull_request", {"repository": "r", "number": "1"})
    waiting = persona.trigger("github", "pull_request", {"repository": "r", "number": "2"})
    retrying = persona.receipts_for(silent["request_id"], 2)[1]
    assert retrying["status"] == "retrying" and "expired" in retrying["error"] and retrying["attempt"] == 1
    assert persona.receipts_for(waiting["request_id"], 2)[1]["status"] == "dispatched"
    assert persona.wait_events("persona.lease.expired")[0]["payload"]["id"] == silent["lease"]["id"]
    persona.report(silent["run_id"], silent["lease"]["id"], "completed")  # too late: fenced
    [fenced] = persona.wait_events("run.report_rejected")
    assert fenced["run_id"] == silent["run_id"] and "no executor holds it" in fenced["payload"]["reason"]


def test_the_schedule_ticker_fires_a_due_cron_occurrence(persona):
    bound_at = int(time.time() * 1000) - 61_000  # at least one minute boundary since binding
    persona.bind({"schedules": ["* * * * *"]}, at_ms=bound_at)
    [fired] = persona.wait_events("persona.schedule.fired")
    envelope = fired["payload"]["envelope"]
    assert envelope["provider"] == "schedule" and envelope["kind"] == "cron.tick"
    assert envelope["metadata"]["schedule"] == "* * * * *"
    assert persona.wait_events("persona.run.completed")


def test_status_is_served_by_the_worker_and_matches_the_published_status(worker, persona):
    persona.bind({"budget": {"daily_usd": 2.0}})
    persona.trigger("linear", "issue", {"issue_key": "S-1"}, cost={"cost_usd": 0.5, "tokens": 1})
    published = persona.status(lambda s: s["last_run"] is not None)
    served = json.loads(worker.get(f"/personas/{persona.name}"))
    assert served == published
    assert persona.name in json.loads(worker.get("/personas"))
