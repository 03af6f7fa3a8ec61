"""The guarantees of issue 13 (defects 1-10) over a real broker, through the public topics
only. The test acts as the executor (``SELF_REPORTED``: the session's reference executor
stays silent), so every report and its event time are in its hands; assertions read
receipts, outbox, status, dispatches, dead letters and the worker's HTTP views."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error

import pytest

from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker

DAY_MS = 86_400_000
UNDO = "workflows/undo.harn#run"
DIGEST = r"sha256:[0-9a-f]{32}"
FUTURE = "timestamp_in_future:"


@pytest.fixture
def persona(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    yield probe
    probe.close()


def manual(**fields):
    """A binding whose runs the test reports on itself."""
    return {**SELF_REPORTED, **fields}


def now_ms() -> int:
    return int(time.time() * 1000)


def cost(usd: float, tokens: int = 0) -> dict:
    return {"cost_usd": usd, "tokens": tokens}


def rejection(answer: dict) -> tuple[str | None, str]:
    """A receipt's status and the start of its error, as long as ``FUTURE``."""
    return answer.get("status"), (answer.get("error") or "")[: len(FUTURE)]


def statuses(persona: PersonaProbe, request_id: str, count: int) -> list[str]:
    return [r["status"] for r in persona.receipts_for(request_id, count)]


def run_view(worker, run_id: str, event_id: str | None = None) -> dict:
    """``GET /runs/{id}`` once the worker's state holds the run (and its event ``event_id``)."""
    seq = 0 if event_id is None else int(event_id.rsplit("/", 1)[1])

    def answer() -> dict | None:
        try:
            detail = json.loads(worker.get(f"/runs/{run_id}"))
        except urllib.error.HTTPError:
            return None
        return detail if detail["last_seq"] >= seq else None

    return eventually(answer, 30, f"run {run_id} in the worker's view")


def dispatch_where(persona: PersonaProbe, **fields) -> dict:
    """The first dispatch whose fields have these values (waits for it)."""

    def match(value: dict | None) -> bool:
        return value is not None and all(value.get(name) == wanted for name, wanted in fields.items())

    seen = persona.dispatches.until(lambda seen: any(match(r.value) for r in seen), persona.timeout_s, f"{fields}")
    return next(r.value for r in seen if match(r.value))


# ------------------------------------------------------------------ 1, 2: budget gate


def test_a_retry_that_would_exceed_the_daily_budget_waits_with_a_budget_exhausted_receipt(persona):
    persona.bind(manual(estimated_run_usd=0.6, budget={"daily_usd": 1.0}, retry={"max_attempts": 2, "backoff_ms": 100}))
    first = persona.trigger("linear", "issue", {"issue_key": "B-1"}, at_ms=now_ms())
    persona.report(first["run_id"], first["lease"]["id"], "failed", error="flaky", cost=cost(0.9), at_ms=now_ms())
    assert statuses(persona, first["request_id"], 3) == ["dispatched", "retrying", "budget_exhausted"]
    waiting = persona.receipts_for(first["request_id"], 3)[2]
    assert (waiting["queued"], waiting["attempt"], waiting["error"]) == (True, 2, "persona budget exhausted: daily_usd")
    assert waiting["not_before_ms"] == (waiting["at_ms"] // DAY_MS + 1) * DAY_MS  # the next UTC day
    persona.trigger("linear", "issue", {"issue_key": "B-2"})  # a later transition: no second receipt, no dispatch
    persona.dispatches.catch_up()
    assert len(persona.receipts_for(first["request_id"])) == 3
    assert [d["action"] for d in persona.dispatches_of(first["run_id"])].count("start") == 1


def test_a_first_trigger_whose_token_reservation_exceeds_the_token_budget_is_budget_exhausted(persona):
    persona.bind(manual(run_limits={"max_tokens": 500}, budget={"max_tokens": 100}))
    receipt = persona.trigger("linear", "issue", {"issue_key": "T-1"})
    assert (receipt["status"], receipt["error"]) == ("budget_exhausted", "persona budget exhausted: max_tokens")
    [exhausted] = persona.wait_events("persona.budget.exhausted")
    assert exhausted["payload"]["reason"] == "max_tokens"
    persona.dispatches.catch_up()
    assert [d for d in persona.dispatches.values() if d and d["persona"] == persona.name] == []


# ------------------------------------------------------------------ 3: event time


def test_inputs_stamped_beyond_the_bound_are_rejected_and_never_move_the_persona_clock(persona, kafka, settings):
    # The session's bound is two days (see tests/support/cluster.py); the default hour is
    # pinned by tests/streams. 400 days ahead, as a broken producer clock sent.
    bound = settings.max_future_ms
    persona.bind(manual())
    sent_at = now_ms()
    run = persona.trigger("linear", "issue", {"issue_key": "F-1"}, at_ms=sent_at)
    answered_at = now_ms()
    persona.control("record_spend", cost=cost(0.2))
    ahead = now_ms() + 400 * DAY_MS

    future = persona.trigger("linear", "issue", {"issue_key": "F-2"}, at_ms=ahead)
    assert rejection(future) == ("rejected", FUTURE), future
    assert f"PERSONAFLOW_MAX_FUTURE_MS={bound}" in future["error"]  # the bound, in ms
    assert rejection(persona.control("pause", at_ms=ahead)) == ("rejected", FUTURE)
    persona.report(run["run_id"], run["lease"]["id"], "heartbeat", at_ms=ahead)
    persona.report(run["run_id"], "persona_lease_not_this_one", "heartbeat", at_ms=now_ms() + 30 * 60_000)
    rejected = persona.wait_run_events(run["run_id"], "run.report_rejected", 2)
    reasons = sorted(e["payload"]["reason"] for e in rejected)  # whichever came first
    assert reasons[0].startswith("stale lease") and reasons[1].startswith("timestamp_in_future"), reasons

    later = persona.control("record_spend", cost=cost(0.1))
    status = persona.status(lambda s: s["budget"]["last_receipt_id"] == later["budget_receipt_id"])
    assert status["budget"]["spent_today_usd"] == pytest.approx(0.3)  # still today: the clock did not move
    assert status["active_lease"] == run["lease"]  # neither renewed nor expired
    cause = next(
        e["cause"]
        for e in persona.wait_events("persona.trigger.received")
        if e["cause"].get("request_id") == run["request_id"]
    )
    assert cause.get("producer_at_ms") == sent_at and sent_at <= cause.get("admitted_at_ms", -1) <= answered_at

    stranger = PersonaProbe(kafka, f"{persona.name}-unbound")
    try:
        unbound = stranger.trigger("linear", "issue", {"issue_key": "F-3"}, at_ms=now_ms() + 10 * 365 * DAY_MS)
    finally:
        stranger.close()
    assert rejection(unbound) == ("rejected", FUTURE), unbound


# ------------------------------------------------------------------ 4: spend windows


def test_a_final_cost_below_yesterdays_usage_never_makes_todays_spend_negative(persona):
    midnight = now_ms() // DAY_MS * DAY_MS
    before, after = midnight - 1000, midnight + 1000  # 23:59:59Z yesterday, 00:00:01Z today
    persona.bind(manual(lease_ttl_ms=2 * DAY_MS), at_ms=before - 1000)
    receipt = persona.trigger("linear", "issue", {"issue_key": "M-1"}, at_ms=before)
    run_id, lease = receipt["run_id"], receipt["lease"]["id"]
    persona.report(run_id, lease, "usage", cost_usd=1.0, at_ms=before)
    persona.wait_run_events(run_id, "run.usage")
    persona.report(run_id, lease, "completed", cost=cost(0.3), at_ms=after)
    assert persona.final_receipt(receipt["request_id"])["status"] == "completed"
    status = persona.status(lambda s: s["last_run"] is not None)
    assert status["budget"]["spent_today_usd"] == pytest.approx(0.0)
    recorded = persona.wait_events("persona.budget.recorded", 2)
    assert sum(e["payload"]["cost_usd"] for e in recorded) == pytest.approx(0.3)


# ------------------------------------------------------------------ 5: compensation


def test_a_completed_compensation_is_not_a_completed_run_and_the_failed_work_key_can_run_again(persona):
    persona.bind(manual(retry={"max_attempts": 1}, compensation_workflow=UNDO))
    first = persona.trigger("linear", "issue", {"issue_key": "C-1"})
    persona.report(first["run_id"], first["lease"]["id"], "failed", error="broke it", retryable=False)
    assert persona.final_receipt(first["request_id"])["status"] == "failed"
    undo = dispatch_where(persona, kind="compensation", parent_run_id=first["run_id"])
    done_at = now_ms()
    persona.report(undo["run_id"], undo["lease_id"], "completed", at_ms=done_at)
    persona.wait_run_events(undo["run_id"], "run.completed")
    again = persona.trigger("linear", "issue", {"issue_key": "C-1"})  # a later transition: all of the above is out
    persona.outbox.catch_up()
    assert [e["payload"] for e in persona.events("persona.compensation.completed")] == [
        {
            "work_key": "linear:issue:C-1",
            "run_id": undo["run_id"],
            "compensated_run_id": first["run_id"],
            "entry_workflow": UNDO,
            "completed_at_ms": done_at,
            "lease_id": undo["lease_id"],
        }
    ]
    assert [e for e in persona.events("persona.run.completed") if e["payload"]["run_id"] == undo["run_id"]] == []
    assert again["status"] == "dispatched"


# ------------------------------------------------------------------ 6: unbinding


def test_a_run_in_flight_when_its_persona_is_unbound_still_expires_retries_and_fails_releasing_its_reservations(
    persona, kafka
):
    persona.bind(manual(lease_ttl_ms=1500, estimated_run_usd=0.1, retry={"max_attempts": 2, "backoff_ms": 200}))
    receipt = persona.trigger("linear", "issue", {"issue_key": "U-1"}, at_ms=now_ms())
    kafka.send("bindings", persona.name, None)
    [removed] = persona.wait_events("persona.binding.removed")
    final = persona.final_receipt(receipt["request_id"])
    assert statuses(persona, receipt["request_id"], 4) == ["dispatched", "retrying", "dispatched", "failed"]
    assert "expired 2 times" in final["error"]
    assert removed["seq"] < persona.wait_events("persona.lease.expired")[0]["seq"]  # expired after the unbind
    reconciled = persona.wait_events("persona.budget.reconciled", 2)
    assert [e["payload"]["status"] for e in reconciled] == ["expired", "expired"]


# ------------------------------------------------------------------ 7, 8: run states and limits


def test_resume_returns_a_paused_waiting_run_to_waiting_and_its_input_is_then_accepted(persona, worker):
    persona.bind(manual())
    receipt = persona.trigger("linear", "issue", {"issue_key": "W-1"})
    run_id, lease = receipt["run_id"], receipt["lease"]["id"]
    persona.report(run_id, lease, "waiting", name="approval")
    persona.wait_run_events(run_id, "run.waiting")
    assert persona.run_control(run_id, "pause")["status"] == "completed"
    resumed = persona.run_control(run_id, "resume")
    assert resumed["status"] == "completed"
    assert run_view(worker, run_id, resumed["event_id"])["status"] == "waiting"
    persona.report(run_id, lease, "input_received", name="approval", payload={"approved": True})
    [accepted] = persona.wait_run_events(run_id, "run.input_received")
    assert persona.run_events(run_id, "run.report_rejected") == []
    assert run_view(worker, run_id, accepted["event_id"])["status"] == "running"


def test_a_run_limit_of_zero_gives_no_warning_and_the_first_positive_value_exceeds_it(persona):
    persona.bind(manual(run_limits={"max_steps": 0}))
    receipt = persona.trigger("linear", "issue", {"issue_key": "Z-1"})
    run_id, lease = receipt["run_id"], receipt["lease"]["id"]
    persona.report(run_id, lease, "heartbeat")  # limits are checked: 0 steps of at most 0
    persona.wait_run_events(run_id, "run.heartbeat")
    persona.report(run_id, lease, "step_started", step_id="s1")
    final = persona.final_receipt(receipt["request_id"])
    assert persona.run_events(run_id, "run.limit_warning") == []
    assert (final["status"], final["error"]) == ("failed", "limit_exceeded:max_steps")
    [exceeded] = persona.run_events(run_id, "run.limit_exceeded")
    assert exceeded["payload"] == {"limit": "max_steps", "value": 1, "max": 0}


# ------------------------------------------------------------------ 9: redaction


def test_a_redacted_issue_key_shows_only_as_a_digest_and_its_value_only_in_the_dispatch(persona, worker, kafka):
    secrets = {"issue_key": "SECRET-42", "event_id": "EVT-SECRET-9"}
    persona.bind(manual(redact_metadata_keys=sorted(secrets)))
    receipt = persona.trigger("linear", "issue", secrets)
    work_key, run_id = receipt["work_key"], receipt["run_id"]
    assert re.fullmatch(f"linear:issue:{DIGEST}", work_key), work_key
    assert persona.dispatch_for(run_id)["envelope"]["metadata"] == secrets
    [received] = persona.wait_events("persona.trigger.received")
    assert re.fullmatch(DIGEST, received["payload"]["envelope"]["source_event_id"] or ""), received["payload"]

    dlq = kafka.tail("dlq")
    invalid = {"request_id": "bad", "persona": persona.name, "provider": "linear", "kind": "issue", "priority": "x"}
    kafka.send("triggers", persona.name, {**invalid, "metadata": secrets})
    [letter] = dlq.wait_for_key(persona.name)
    assert persona.status(lambda s: s["active_lease"] is not None)["active_lease"]["work_key"] == work_key
    run_view(worker, run_id)
    unsettled = json.loads(worker.get(f"/unsettled?persona={persona.name}"))
    assert [item["work_key"] for item in unsettled["in_flight_llm_calls"]] == [work_key]
    views = (f"/runs/{run_id}", f"/runs/{run_id}/events", f"/personas/{persona.name}/runs", f"/personas/{persona.name}")
    shown = {path: worker.get(path).decode() for path in views}
    for name, tail in (("receipts", persona.receipts), ("outbox", persona.outbox), ("status", persona.statuses)):
        tail.catch_up()
        shown[name] = json.dumps(tail.for_key(persona.name))
    shown["/unsettled"] = json.dumps(unsettled)
    shown["dead letter"] = json.dumps(letter) + base64.b64decode(letter["value_b64"]).decode(errors="replace")
    assert [name for name, text in shown.items() if any(value in text for value in secrets.values())] == []


# ------------------------------------------------------------------ 10: budget receipt ids


def test_a_final_receipt_names_the_runs_own_last_budget_record_or_none(persona):
    persona.bind(manual(budget={"daily_usd": 1.0}))
    first = persona.trigger("linear", "issue", {"issue_key": "R-1"})
    run_id, lease = first["run_id"], first["lease"]["id"]
    persona.report(run_id, lease, "usage", cost_usd=0.1)
    [own] = [e for e in persona.wait_events("persona.budget.recorded") if e["payload"]["lease_id"] == lease]
    assert persona.control("record_spend", cost=cost(0.2))["status"] == "completed"  # another record
    assert persona.control("record_spend", cost=cost(5.0))["status"] == "budget_exhausted"  # an exhaustion
    persona.report(run_id, lease, "completed")
    assert persona.final_receipt(first["request_id"])["budget_receipt_id"] == own["payload"]["receipt_id"]
    second = persona.trigger("linear", "issue", {"issue_key": "R-2"})
    persona.report(second["run_id"], second["lease"]["id"], "completed")
    assert persona.final_receipt(second["request_id"])["budget_receipt_id"] is None
