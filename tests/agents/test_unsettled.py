"""``GET /unsettled`` and ``personaflow unsettled`` over a real broker: queued triggers, a
run in flight, a run waiting for its retry, and a handoff from sent to acknowledged."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from personaflow.process import settings_env

from ..support.personas import SELF_REPORTED, PersonaProbe

pytestmark = pytest.mark.broker

SUMMARY = re.compile(
    r"^unsettled work: \d+ suspended subagents, \d+ queued triggers, \d+ partial handoffs,"
    r" \d+ in-flight llm calls, \d+ pool pending tasks$"
)


def unsettled(worker, persona: str | None = None) -> dict:
    return json.loads(worker.get("/unsettled" + (f"?persona={persona}" if persona else "")))


def mine(answer: dict, prefix: str) -> list[tuple[str, str]]:
    """(bucket, id) of the items of personas named ``prefix``..., in the answer's order."""
    return [
        (bucket, item["id"])
        for bucket in ("queued_triggers", "in_flight_llm_calls", "suspended_subagents", "partial_handoffs")
        for item in answer[bucket]
        if (item.get("persona") or item.get("from", "")).startswith(prefix)
    ]


def test_a_paused_persona_with_two_queued_triggers_a_run_in_flight_and_a_retry_lists_exactly_those(
    worker, kafka, settings, persona_name
):
    persona = PersonaProbe(kafka, persona_name)
    try:
        persona.bind({**SELF_REPORTED, "retry": {"max_attempts": 3, "backoff_ms": 600_000}})
        failing = persona.trigger("github", "pull_request", {"repository": "r", "number": "1"})
        persona.report(failing["run_id"], failing["lease"]["id"], "failed", error="flaky", retryable=True)
        assert persona.receipts_for(failing["request_id"], 2)[-1]["status"] == "retrying"  # the lease is free again
        running = persona.trigger("github", "pull_request", {"repository": "r", "number": "2"})
        assert running["status"] == "dispatched"
        persona.control("pause")
        first = persona.trigger("linear", "issue", {"issue_key": "U-1"})
        second = persona.trigger("linear", "issue", {"issue_key": "U-2"})
        assert (first["status"], second["status"]) == ("queued", "queued")

        answer = unsettled(worker, persona.name)
        assert answer["summary"] == (
            "unsettled work: 0 suspended subagents, 3 queued triggers, 0 partial handoffs,"
            " 1 in-flight llm calls, 0 pool pending tasks"
        )
        assert answer["counts"] == {"suspended": 0, "queued": 3, "partial": 0, "in_flight": 1, "pool_pending": 0}
        assert mine(answer, persona.name) == [
            ("queued_triggers", f"run://{persona.name}/{failing['run_id']}"),  # waiting since its failure
            ("queued_triggers", f"trigger://{persona.name}/{first['work_key']}"),
            ("queued_triggers", f"trigger://{persona.name}/{second['work_key']}"),
            ("in_flight_llm_calls", f"run://{persona.name}/{running['run_id']}"),
        ]
        retry, *queued = answer["queued_triggers"]
        assert (retry["source"], retry["attempt"], retry["status"], retry["spec_summary"]) == (
            "retry",
            2,
            "retry_wait",
            "github.pull_request",
        )
        assert [(q["spec_summary"], q["reason"]) for q in queued] == [("linear.issue", "paused")] * 2
        assert all(item["age_ms"] >= 0 for item in answer["queued_triggers"])
        assert SUMMARY.match(unsettled(worker)["summary"])  # across every persona of every worker

        shown = subprocess.run(
            [sys.executable, "-m", "personaflow.cli", "unsettled", "--persona", persona.name],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert shown.splitlines()[0] == answer["summary"]
        assert f"trigger://{persona.name}/{first['work_key']}" in shown
    finally:
        persona.close()


def test_a_handoff_becomes_work_for_the_target_and_is_unsettled_until_it_decides_then_acknowledged(
    worker, kafka, persona_name
):
    source, target = PersonaProbe(kafka, f"{persona_name}-src"), PersonaProbe(kafka, f"{persona_name}-dst")
    try:
        source.bind(SELF_REPORTED)
        target.bind({})
        target.control("pause")
        run = source.trigger("github", "pull_request", {"repository": "r", "number": "3"})
        source.report(
            run["run_id"], run["lease"]["id"], "handoff", target_persona=target.name, task="review it", name="review"
        )
        status = target.status(lambda s: s["queued_events"] == 1)
        [waiting] = status["handoff_inbox"]  # the handoff became work for the target
        assert (waiting["source_persona"], waiting["task"], waiting["handoff_kind"]) == (
            source.name,
            "review it",
            "review",
        )
        [item] = unsettled(worker, source.name)["partial_handoffs"]
        assert item["id"] == f"handoff://{source.name}/{item['envelope_id']}"
        assert (item["to"], item["payload_summary"], item["origin_pipeline"]) == (
            target.name,
            "review it",
            run["run_id"],
        )
        target.control("resume")
        [ack] = source.wait_events("persona.handoff.acknowledged")
        assert (ack["payload"]["decision"], ack["payload"]["target_persona"]) == ("completed", target.name)
        assert ack["payload"]["target_run_id"] and ack["payload"]["handoff_id"] == item["envelope_id"]
        assert unsettled(worker, source.name)["partial_handoffs"] == []
    finally:
        source.close()
        target.close()
