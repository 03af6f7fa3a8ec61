"""Decisions 22-32 (docs/behaviour.md): money, time, fencing and redaction hold against
faulty and hostile input. One test per decision, through the pure persona transition."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from streams import wire
from streams.inbox import RunReportReceived, TriggerReceived
from streams.redaction import digest
from tables.timefmt import DAY_MS, HOUR_MS, parse_rfc3339_ms

from .harness import T0, cost, request
from .test_execution import P, Runs, runner

FUTURE = "timestamp_in_future: the event time is too far ahead"


def total_recorded(h: Runs) -> float:
    return sum(e.payload["cost_usd"] for e in h.events(P, "persona.budget.recorded"))


# ----------------------------------------------------------------- 22, 23: one gate


def test_decision_22_a_retry_that_the_budget_cannot_take_waits_and_is_told_once():
    h = Runs()
    run = h.start(runner(estimated_run_usd=0.6, budget={"daily_usd": 1.0}, retry={"backoff_ms": 100})).run_id
    h.say(run, "failed", error="flaky", cost=cost(0.9, 0), at_ms=T0 + 10)
    for n in range(3):  # due, then examined again on every input: refused once, silently after
        h.tick(P, T0 + 200 + n)
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "retrying", "budget_exhausted"]
    waiting = h.receipts("req-1")[-1]
    assert (waiting.queued, waiting.attempt, waiting.error) == (True, 2, "persona budget exhausted: daily_usd")
    assert waiting.not_before_ms == (T0 // DAY_MS + 1) * DAY_MS  # when the day turns
    assert [d.attempt for d in h.dispatches(run) if d.action == "start"] == [1]
    assert h.run(run)["status"] == "ready" and h.run(run)["blocked"] == "daily_usd"
    h.tick(P, waiting.not_before_ms)  # a new day: the spend of the last one no longer counts
    assert [r.status for r in h.receipts("req-1")][-1] == "dispatched" and h.receipts("req-1")[-1].attempt == 2


def test_decision_22_a_dispatch_reserves_tokens_through_the_gate_and_a_reservation_alone_over_a_limit_fails():
    h = Runs()
    refused = h.start(runner(budget={"max_tokens": 100}, run_limits={"max_tokens": 500}))
    assert (refused.status, refused.error) == ("budget_exhausted", "persona budget exhausted: max_tokens")
    assert h.dispatches() == []
    h2 = Runs()
    run = h2.start(runner(estimated_run_usd=0.2, retry={"backoff_ms": 0})).run_id
    h2.say(run, "failed", error="flaky")
    h2.bind(runner(estimated_run_usd=0.2, budget={"run_usd": 0.1}, retry={"backoff_ms": 0}))  # can never pass now
    h2.tick(P, T0 + 1)
    final = h2.receipts("req-1")[-1]
    assert (final.status, final.error) == ("failed", "persona budget exhausted: run_usd")
    assert h2.run(run)["status"] == "failed"


def test_decision_23_a_compensation_reserves_through_the_gate_and_waits_for_budget():
    h = Runs()
    b = runner(
        estimated_run_usd=0.5, budget={"daily_usd": 1.0}, retry={"max_attempts": 1}, compensation_workflow="wf/u"
    )
    run = h.start(b).run_id
    h.say(run, "failed", error="boom", cost=cost(0.8, 0))
    compensation = h.run(run)["compensation_run_id"]
    assert h.run(compensation)["status"] == "ready" and h.run(compensation)["blocked"] == "daily_usd"
    assert [e.kind for e in h.run_events(compensation)] == ["run.budget_exhausted"]
    h.tick(P, (T0 // DAY_MS + 1) * DAY_MS)
    assert h.run(compensation)["status"] == "dispatched"


# ---------------------------------------------------------------- 24: spend windows


def test_decision_24_a_settlement_below_yesterdays_usage_never_makes_todays_spend_negative():
    h = Runs()
    evening = parse_rfc3339_ms("2026-04-24T23:59:59Z")
    run = h.start(runner(budget={"daily_usd": 2.0}, lease_ttl_ms=DAY_MS), at_ms=evening).run_id
    h.say(run, "usage", cost_usd=1.0, tokens=100, at_ms=evening)
    h.say(run, "completed", cost=cost(0.3, 30), at_ms=evening + 2000)  # after midnight
    budget = h.budget()
    assert (budget.spent_today_usd, budget.tokens_today, budget.remaining_today_usd) == (0.0, 0, 2.0)
    assert total_recorded(h) == pytest.approx(0.3)  # the correction is recorded, and sums right
    assert h.head().budget.spent_total_usd == pytest.approx(0.3)


def test_decision_24_a_settlement_within_the_day_takes_back_only_its_own_usage():
    h = Runs()
    run = h.start(runner()).run_id
    h.control(P, "record_spend", cost=cost(0.5, 0), at_ms=T0)
    h.say(run, "usage", cost_usd=0.4, tokens=0)
    h.say(run, "completed", cost=cost(0.1, 0))
    assert h.budget().spent_today_usd == pytest.approx(0.6)


# ------------------------------------------------------------- 25: compensation


def test_decision_25_a_completed_compensation_leaves_the_failed_work_open():
    h = Runs()
    run = h.start(runner(retry={"max_attempts": 1}, compensation_workflow="wf/undo")).run_id
    h.say(run, "failed", error="boom")
    compensation = h.run(run)["compensation_run_id"]
    h.say(compensation, "completed")
    assert h.events(P, "persona.run.completed") == []
    [done] = h.events(P, "persona.compensation.completed")
    assert (done.payload["compensated_run_id"], done.payload["entry_workflow"]) == (run, "wf/undo")
    again = h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, request_id="again")
    assert again.status == "dispatched"


# -------------------------------------------------------------------- 26: unbind


def test_decision_26_an_unbound_personas_runs_finish_under_its_last_binding():
    h = Runs()
    h.start(runner(lease_ttl_ms=1000, estimated_run_usd=0.1, retry={"max_attempts": 2, "backoff_ms": 0}))
    queued = h.trigger(P, "github", "pull_request", {"repository": "r", "number": "2"}, request_id="q")
    assert queued.status == "lease_busy"
    h.unbind(P, at_ms=T0 + 1)
    h.tick(P, T0 + 1000)  # the lease expires: re-queued, dispatched again under the last binding
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "retrying", "dispatched"]
    h.tick(P, T0 + 2000)
    assert [r.status for r in h.receipts("req-1")][-1] == "failed"
    assert h.head().budget.reserved_usd == 0.0
    assert [r.status for r in h.receipts("q")] == ["lease_busy"]  # queued work waits for a rebind
    h.bind(runner(), at_ms=T0 + 3000)
    assert h.receipts("q")[-1].status == "dispatched"


# ------------------------------------------------------------- 27, 28: run states


def test_decision_27_resume_returns_a_run_to_the_state_it_was_paused_from():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "waiting", name="approval")
    h.run_control(P, run, "pause")
    h.run_control(P, run, "resume")
    assert h.run(run)["status"] == "waiting"
    h.say(run, "input_received", name="approval")
    assert h.run(run)["status"] == "running" and h.kinds_of(run)[-1] == "run.input_received"


def test_decision_28_a_limit_of_zero_never_warns_and_the_first_positive_value_exceeds_it():
    h = Runs()
    run = h.start(runner(run_limits={"max_cost_usd": 0.0})).run_id
    h.say(run, "heartbeat")
    h.say(run, "usage", cost_usd=0.001, tokens=1)
    assert [e.kind for e in h.run_events(run, "run.limit_")] == ["run.limit_exceeded"]
    assert h.run(run)["error"] == "limit_exceeded:max_cost_usd"


def test_decision_28_a_failure_whose_cost_breaks_a_run_limit_is_not_retried():
    h = Runs()
    run = h.start(runner(run_limits={"max_cost_usd": 0.5}, retry={"max_attempts": 3})).run_id
    h.say(run, "failed", error="flaky", cost=cost(0.6, 0))
    assert h.run(run)["status"] == "failed" and h.run(run)["error"] == "limit_exceeded:max_cost_usd"
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "failed"]


# -------------------------------------------------------------------- 29: redaction


def test_decision_29_keys_derived_from_a_redacted_value_are_digests():
    h = Runs()
    h.bind(runner(redact_metadata_keys=["issue_key", "event_id"]))
    receipt = h.trigger(P, "linear", "issue", {"issue_key": "SECRET-42", "event_id": "E-9"}, request_id="r")
    assert receipt.work_key == f"linear:issue:{digest('SECRET-42')}"
    assert re.fullmatch(r"linear:issue:sha256:[0-9a-f]{32}", receipt.work_key)
    published = b"".join(o.raw or b"" for o in h.outputs if o.role in ("outbox", "receipts", "status", "dlq"))
    assert b"SECRET-42" not in published and b"E-9" not in published
    assert h.dispatches()[0].envelope.metadata["issue_key"] == "SECRET-42"
    assert h.dispatches()[0].envelope.source_event_id == digest("E-9")
    again = h.trigger(P, "linear", "issue", {"issue_key": "SECRET-42"}, request_id="r2")
    assert again.status == "duplicate"  # dedupe still works on the digest


# ------------------------------------------------------------- 30: budget receipt


def test_decision_30_the_final_receipt_names_the_runs_own_budget_record():
    h = Runs()
    h.bind(runner(estimated_run_usd=0.5, budget={"daily_usd": 1.0}))
    run = h.start(number=1).run_id
    h.say(run, "usage", cost_usd=0.1, tokens=1)
    [own] = h.events(P, "persona.budget.recorded")
    assert h.start(number=2).status == "budget_exhausted"  # the persona's last budget record now
    h.say(run, "completed", cost=cost(0.1, 1))
    assert h.receipts("req-1")[-1].budget_receipt_id == own.payload["receipt_id"]
    silent = Runs()
    quiet = silent.start(runner()).run_id
    silent.say(quiet, "completed")
    assert silent.receipts("req-1")[-1].budget_receipt_id is None


# ------------------------------------------------------------------------ 31: time


def refused_trigger(at_ms: int, request_id: str) -> Any:
    req = request(P, "github", "pull_request", {"repository": "r", "number": "9"}, request_id=request_id)
    return TriggerReceived(at_ms=at_ms, request=req, admitted_at_ms=T0, refused=FUTURE)


def test_decision_31_an_input_refused_at_admission_is_rejected_and_never_moves_the_clock():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000)).run_id
    far = T0 + 400 * DAY_MS
    [receipt] = h.receipts_in(h.feed(refused_trigger(far, "late")), "late")
    assert (receipt.status, receipt.error, receipt.at_ms) == ("rejected", FUTURE, T0)
    assert h.feed(refused_trigger(far, "late"))[0].value.receipt_id == receipt.receipt_id  # same answer
    event = wire.RunEvent(event_id="hb", run_id=run, lease_id=h.lease(run), kind="heartbeat")
    refused = RunReportReceived(at_ms=far, persona=P, event=event, admitted_at_ms=T0, refused=FUTURE)
    h.feed(refused)
    assert h.run_events(run)[-1].payload["reason"] == FUTURE
    assert h.feed(refused) == []  # the same record again (ingress forwarded it twice): answered once
    assert h.head().clock_ms == T0 and h.status(P).active_lease is not None
    h.say(run, "heartbeat", event_id="hb", at_ms=T0 + 500)  # sent again, clock fixed: not a redelivery
    assert h.kinds_of(run)[-1] == "run.heartbeat"


def test_decision_31_a_fenced_report_never_moves_the_clock():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000)).run_id
    h.say(run, "heartbeat", lease_id="persona_lease_other", at_ms=T0 + HOUR_MS // 2)
    assert h.head().clock_ms == T0
    h.tick(P, T0 + 999)
    assert h.events(P, "persona.lease.expired") == []


def test_decision_31_a_held_triggers_grace_runs_from_its_admission_when_its_time_is_ahead():
    h = Runs()
    req = request("newcomer", "linear", "issue", {"issue_key": "A"}, request_id="held")
    h.feed(TriggerReceived(at_ms=T0 + HOUR_MS // 2, request=req, hold_ms=1000, admitted_at_ms=T0))
    h.tick("newcomer", T0 + 1000)
    [receipt] = h.receipts("held")
    assert receipt.status == "rejected" and "no binding arrived" in receipt.error


# ------------------------------------------------------------------ 32: the machines


def test_decision_32_pause_does_not_lift_a_disabled_persona():
    h = Runs()
    h.bind(runner())
    h.control(P, "disable")
    [rejected] = h.receipts_in(h.control(P, "pause", command_id="p"), "p")
    assert rejected.status == "rejected" and "disabled" in rejected.error
    assert h.status(P).state == "disabled"


def test_a_cause_names_the_producers_time_and_the_admission_time():
    h = Runs()
    h.bind(runner())
    req = request(P, "github", "pull_request", {"repository": "r", "number": "1"}, request_id="c")
    h.feed(msgspec.structs.replace(TriggerReceived(at_ms=T0 + 5, request=req), admitted_at_ms=T0 + 7))
    cause = h.events(P, "persona.trigger.received")[-1].cause
    assert (cause["producer_at_ms"], cause["admitted_at_ms"]) == (T0 + 5, T0 + 7)
