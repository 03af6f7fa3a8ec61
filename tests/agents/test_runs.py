"""External runs over a real broker, through the public topics only: the reference
executor (``personaflow executor``) or the test acting as an executor on
``persona.run.events``; assertions read receipts, outbox, dispatches and the HTTP views."""

from __future__ import annotations

import json
import urllib.error

import pytest

from ..support.personas import SELF_REPORTED, PersonaProbe

pytestmark = pytest.mark.broker

ISSUE = {"issue_key": "RUN-1"}


@pytest.fixture
def persona(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    yield probe
    probe.close()


def external(**fields):
    """Runs for the reference executor."""
    return {"execution": "external", **fields}


def manual(**fields):
    """Runs the test reports on itself."""
    return {**SELF_REPORTED, **fields}


def view(worker, path: str):
    return json.loads(worker.get(path))


def http_error(worker, path: str) -> tuple[int, dict]:
    with pytest.raises(urllib.error.HTTPError) as caught:
        worker.get(path)
    return caught.value.code, json.loads(caught.value.read())


def test_a_run_longer_than_three_lease_ttls_completes_while_its_executor_heartbeats(persona, executor, worker):
    persona.bind(external(lease_ttl_ms=1000))
    receipt = persona.trigger("linear", "issue", {**ISSUE, "executor.duration_ms": "3500", "executor.steps": "2"})
    final = persona.final_receipt(receipt["request_id"])
    assert final["status"] == "completed"
    assert len(persona.run_events(receipt["run_id"], "run.heartbeat")) >= 3
    assert persona.events("persona.lease.expired") == []
    detail = view(worker, f"/runs/{receipt['run_id']}")
    assert (detail["status"], detail["dispatches"], detail["steps"]) == ("completed", 1, 2)


def test_a_silent_executor_is_requeued_retried_with_backoff_then_fails_and_compensates_once(persona, executor):
    persona.bind(
        external(
            lease_ttl_ms=800,
            retry={"max_attempts": 2, "backoff_ms": 300},
            compensation_workflow="workflows/undo.harn#run",
        )
    )
    receipt = persona.trigger("linear", "issue", {**ISSUE, "executor.silent": "true"})
    final = persona.final_receipt(receipt["request_id"])
    statuses = [r["status"] for r in persona.receipts_for(receipt["request_id"], 4)]
    assert statuses == ["dispatched", "retrying", "dispatched", "failed"]
    retrying = persona.receipts_for(receipt["request_id"], 2)[1]
    assert retrying["attempt"] == 1 and retrying["not_before_ms"] - retrying["at_ms"] == 300
    assert "expired 2 times" in final["error"]
    persona.wait_run_events(receipt["run_id"], "run.compensation_scheduled")
    compensation = persona.dispatches.until(
        lambda seen: any((r.value or {}).get("kind") == "compensation" for r in seen), 30, "the compensation dispatch"
    )
    runs = {
        r.value["run_id"]
        for r in compensation
        if (r.value or {}).get("kind") == "compensation" and r.value["parent_run_id"] == receipt["run_id"]
    }
    assert len(runs) == 1


def test_a_report_with_a_stale_lease_is_fenced_on_the_run_stream(persona):
    persona.bind(manual())
    receipt = persona.trigger("linear", "issue", ISSUE)
    persona.report(receipt["run_id"], "persona_lease_not_this_one", "completed")
    [fenced] = persona.wait_run_events(receipt["run_id"], "run.report_rejected")
    assert fenced["payload"]["reason"].startswith("stale lease")
    persona.report(receipt["run_id"], receipt["lease"]["id"], "completed")
    assert persona.final_receipt(receipt["request_id"])["status"] == "completed"


def test_cancel_while_running_records_the_spend_so_far(persona, executor, worker):
    persona.bind(external(lease_ttl_ms=5000))
    receipt = persona.trigger(
        "linear",
        "issue",
        {
            **ISSUE,
            "executor.steps": "20",
            "executor.duration_ms": "20000",
            "executor.cost_per_step_usd": "0.01",
            "executor.tokens_per_step": "10",
        },
    )
    run_id = receipt["run_id"]
    persona.wait_run_events(run_id, "run.usage", 2)
    answer = persona.run_control(run_id, "cancel", reason="not needed")
    assert answer["status"] == "completed"
    final = persona.final_receipt(receipt["request_id"])
    assert final["status"] == "cancelled"
    assert persona.dispatches.until(
        lambda seen: any((r.value or {}).get("action") == "cancel" and r.key == run_id for r in seen),
        30,
        "cancel to the executor",
    )
    detail = view(worker, f"/runs/{run_id}")
    [attempt] = detail["ledger"]
    assert attempt["status"] == "cancelled" and attempt["actual_usd"] >= 0.02
    status = persona.status(lambda s: s["active_lease"] is None)
    assert status["budget"]["spent_today_usd"] == pytest.approx(attempt["actual_usd"])


def test_completed_then_cancel_and_cancel_then_completed_each_give_one_terminal_event(persona):
    persona.bind(manual())
    first = persona.trigger("linear", "issue", {"issue_key": "A"})
    persona.report(first["run_id"], first["lease"]["id"], "completed")
    persona.final_receipt(first["request_id"])
    late_cancel = persona.run_control(first["run_id"], "cancel")
    [completed] = persona.wait_run_events(first["run_id"], "run.completed")
    assert (late_cancel["status"], late_cancel["event_id"]) == ("rejected", completed["event_id"])

    second = persona.trigger("linear", "issue", {"issue_key": "B"})
    persona.run_control(second["run_id"], "cancel")
    persona.report(second["run_id"], second["lease"]["id"], "completed")
    [rejected] = persona.wait_run_events(second["run_id"], "run.report_rejected")
    [cancelled] = persona.run_events(second["run_id"], "run.cancelled")
    assert rejected["payload"]["terminal_event_id"] == cancelled["event_id"]
    for run_id in (first["run_id"], second["run_id"]):
        kinds = [e["kind"] for e in persona.run_events(run_id)]
        assert sum(kinds.count(k) for k in ("run.completed", "run.cancelled", "run.failed", "run.expired")) == 1


def test_max_tokens_gives_one_warning_then_limit_exceeded(persona, executor):
    persona.bind(external(run_limits={"max_tokens": 100}))
    receipt = persona.trigger("linear", "issue", {**ISSUE, "executor.steps": "5", "executor.tokens_per_step": "40"})
    final = persona.final_receipt(receipt["request_id"])
    assert (final["status"], final["error"]) == ("failed", "limit_exceeded:max_tokens")
    warnings = persona.run_events(receipt["run_id"], "run.limit_warning")
    assert [w["payload"]["limit"] for w in warnings] == ["max_tokens"]
    assert persona.run_events(receipt["run_id"], "run.limit_exceeded")[0]["payload"]["value"] == 120


def test_a_run_and_its_spawned_child_reserve_the_daily_budget_until_they_reconcile(persona, executor):
    # Both runs take 3 s (the child's options come from the binding), so both are in flight
    # when the third trigger arrives; the parent's completion cancels the child.
    persona.bind(
        external(
            estimated_run_usd=0.4,
            budget={"daily_usd": 1.0},
            lease_ttl_ms=5000,
            executor_options={"steps": "2", "duration_ms": "3000"},
        )
    )
    parent = persona.trigger("linear", "issue", {"issue_key": "P", "executor.spawn": "tests:wf/test"})
    persona.wait_events("persona.budget.reserved", 2)  # the parent's and the child's
    blocked = persona.trigger("linear", "issue", {"issue_key": "Q"})
    assert blocked["status"] == "budget_exhausted" and "daily_usd" in blocked["error"]
    assert persona.final_receipt(parent["request_id"])["status"] == "completed"
    persona.status(lambda s: s["active_lease"] is None)
    later = persona.trigger("linear", "issue", {"issue_key": "R"})
    assert later["status"] == "dispatched"


def test_a_handoff_to_a_paused_persona_waits_in_its_handoff_inbox_and_runs_on_resume(
    worker, kafka, executor, persona_name
):
    source, target = PersonaProbe(kafka, persona_name + "-src"), PersonaProbe(kafka, persona_name + "-dst")
    try:
        target.bind({})
        target.control("pause")
        source.bind(external(executor_options={"handoff_to": target.name, "handoff_task": "review the fix"}))
        run = source.trigger("linear", "issue", ISSUE)
        assert source.final_receipt(run["request_id"])["status"] == "completed"
        status = target.status(lambda s: s["queued_events"] == 1)
        [item] = status["handoff_inbox"]
        assert (item["source_persona"], item["task"]) == (source.name, "review the fix")
        target.control("resume")
        assert target.wait_events("persona.run.completed")
    finally:
        source.close()
        target.close()


def test_cancelling_a_parent_cancels_an_inheriting_child_and_not_a_background_one(persona, worker):
    persona.bind(manual())
    parent = persona.trigger("linear", "issue", ISSUE)
    run_id, lease = parent["run_id"], parent["lease"]["id"]
    persona.report(run_id, lease, "spawn", child_key="inherits", entry_workflow="wf/a", inherit_inbox=True)
    persona.report(run_id, lease, "spawn", child_key="background", entry_workflow="wf/b", background=True)
    spawned = persona.wait_run_events(run_id, "run.spawned", 2)
    children = {e["payload"]["child_key"]: e["payload"]["child_run_id"] for e in spawned}
    persona.run_control(run_id, "guidance", content="stay small")
    persona.dispatches.until(
        lambda seen: any(r.key == children["inherits"] and (r.value or {}).get("action") == "guidance" for r in seen),
        30,
        "guidance reaching the child",
    )
    persona.run_control(run_id, "cancel")
    persona.wait_run_events(children["inherits"], "run.cancelled")
    assert view(worker, f"/runs/{children['inherits']}")["status"] == "cancelled"
    assert view(worker, f"/runs/{children['background']}")["status"] == "dispatched"


def test_transcript_and_run_list_paging_with_the_over_limit_error(persona, worker):
    persona.bind(manual())
    runs = []
    for n in range(3):
        receipt = persona.trigger("linear", "issue", {"issue_key": f"T-{n}"})
        runs.append(receipt["run_id"])
        if n < 2:
            persona.report(receipt["run_id"], receipt["lease"]["id"], "completed")
            persona.final_receipt(receipt["request_id"])
    for text in ("one", "two", "three"):
        persona.run_control(runs[2], "guidance", content=text)
    page = view(worker, f"/runs/{runs[2]}/transcript?start=0&limit=2")
    assert ([i["content"] for i in page["items"]], page["next_start"], page["total_items"]) == (["one", "two"], 2, 3)
    assert view(worker, f"/runs/{runs[2]}/transcript?start=2&limit=2")["has_more"] is False
    code, error = http_error(worker, f"/runs/{runs[2]}/transcript?limit=101")
    assert code == 400 and error["max"] == 100 and "maximum 100" in error["error"]
    listed = view(worker, f"/personas/{persona.name}/runs?limit=2")
    assert [r["run_id"] for r in listed["runs"]] == [runs[2], runs[1]] and listed["has_more"]
    rest = view(worker, f"/personas/{persona.name}/runs?limit=2&cursor={listed['next_cursor']}")
    assert [r["run_id"] for r in rest["runs"]] == [runs[0]] and not rest["has_more"]
    assert http_error(worker, f"/personas/{persona.name}/runs?limit=101")[0] == 400
    events = view(worker, f"/runs/{runs[0]}/events?cursor=1&limit=1")
    assert events["events"][0]["kind"] == "run.dispatched" and events["next_cursor"] == 2 and events["has_more"]
    assert http_error(worker, "/runs/no-such-run")[0] == 404


def test_redacted_metadata_is_published_redacted_but_dispatched_as_is(persona):
    persona.bind(manual(redact_metadata_keys=["customer_email"]))
    receipt = persona.trigger("linear", "issue", {**ISSUE, "customer_email": "a@example.com"})
    dispatch = persona.dispatch_for(receipt["run_id"])
    assert dispatch["envelope"]["metadata"]["customer_email"] == "a@example.com"
    [received] = persona.wait_events("persona.trigger.received")
    assert received["payload"]["envelope"]["metadata"]["customer_email"] == "[redacted]"
    assert not any("a@example.com" in json.dumps(e) for e in persona.events())
