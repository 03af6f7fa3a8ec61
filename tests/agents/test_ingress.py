"""Ingress over a real broker: valid input reaches the inboxes, bad input the DLQ."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

pytestmark = pytest.mark.broker


def trigger(persona: str, **extra: object) -> dict:
    return {
        "request_id": f"req-{uuid.uuid4().hex[:10]}",
        "persona": persona,
        "provider": "github",
        "kind": "pull_request",
        "metadata": {"repository": "burin-labs/harn", "number": "462"},
        **extra,
    }


def test_valid_trigger_and_control_reach_the_persona_inbox_keyed_by_persona(worker, kafka, persona_name):
    inbox = kafka.tail("persona_inbox")
    request = trigger(persona_name)
    kafka.send("triggers", persona_name, request)
    kafka.send(
        "control", persona_name, {"command_id": "cmd-1", "persona": persona_name, "action": "pause", "actor": "ops"}
    )

    records = inbox.wait_for_key(persona_name, count=2)

    # Two input topics are ingested independently: no order between them is promised.
    records = sorted(records, key=lambda record: record["type"], reverse=True)
    assert [record["type"] for record in records] == ["trigger", "control"]
    defaults = {"raw": None, "cost": None, "priority": 0, "received_at_ms": None, "slo": None, "deadline_at_ms": None}
    assert records[0]["request"] == {**request, **defaults, "debug": None, "trace": None}
    assert records[0]["source"]["topic"].endswith("persona.triggers")
    assert records[0]["at_ms"] > 0  # defaulted to the record timestamp
    assert records[1]["command"]["action"] == "pause"
    assert all(r.key == persona_name for r in inbox.seen if r.value and persona_name in json.dumps(r.value))


def test_run_events_reach_the_run_inbox_keyed_by_run_id(worker, kafka):
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    inbox = kafka.tail("run_inbox")
    kafka.send("run_events", run_id, {"event_id": "e1", "run_id": run_id, "lease_id": "l1", "kind": "heartbeat"})
    kafka.send("run_control", run_id, {"command_id": "c1", "run_id": run_id, "action": "cancel", "actor": "ops"})
    records = inbox.wait_for_key(run_id, count=2)
    assert sorted(r["type"] for r in records) == ["control", "event"]


def test_five_kinds_of_bad_input_are_dead_lettered_and_the_stream_keeps_going(worker, kafka, persona_name):
    dlq = kafka.tail("dlq")
    inbox = kafka.tail("persona_inbox")
    marker = uuid.uuid4().hex[:8]
    missing_persona = trigger(persona_name)
    del missing_persona["persona"]
    huge = trigger(persona_name, raw={"blob": "x" * (2 * 1024 * 1024)})
    bad = [
        ("triggers", persona_name, b"this is not json " + marker.encode()),
        ("triggers", persona_name, json.dumps(missing_persona).encode()),
        ("triggers", f"someone-else-{marker}", json.dumps(trigger(persona_name)).encode()),
        ("triggers", persona_name, json.dumps(huge).encode()),
        (
            "control",
            persona_name,
            json.dumps({"command_id": "c", "persona": persona_name, "action": "explode", "actor": "ops"}).encode(),
        ),
    ]
    kafka.send_many(bad)
    good = trigger(persona_name)
    kafka.send("triggers", persona_name, good)

    inbox.wait_for_key(persona_name, where=lambda v: v["request"]["request_id"] == good["request_id"])
    mine = {persona_name, f"someone-else-{marker}"}
    letters = dlq.until(lambda seen: sum(1 for r in seen if r.key in mine) >= 5, 60, "five dead letters")
    letters = [r.value for r in letters if r.key in mine]

    def origin(letter: dict) -> int:
        """Index in ``bad`` of the record this letter is about (partition order is not global)."""
        value = base64.b64decode(letter["value_b64"])
        return next(i for i, (_, _, sent) in enumerate(bad) if sent[: len(value)] == value)

    by_origin = {origin(letter): letter for letter in letters}
    assert sorted(by_origin) == [0, 1, 2, 3, 4]
    errors = [by_origin[i]["error"] for i in range(5)]
    assert len(set(errors)) == 5, errors
    assert "not valid JSON" in errors[0]
    assert errors[1] == "TriggerRequest schema violation: persona: field required"
    assert "does not match persona" in errors[2] and persona_name in errors[2]
    assert "the limit is 1048576 bytes" in errors[3]
    assert "action:" in errors[4] and "'pause'" in errors[4]
    assert by_origin[3]["value_truncated"] is True
    assert len(base64.b64decode(by_origin[3]["value_b64"])) == 64 * 1024
    assert [by_origin[i]["source_topic"].rsplit(".", 1)[-1] for i in range(5)] == [
        "triggers",
        "triggers",
        "triggers",
        "triggers",
        "control",
    ]
    assert all(isinstance(letter["offset"], int) and letter["at_ms"] > 0 for letter in letters)


def test_reports_that_name_their_persona_reach_its_inbox_joined_and_in_order(worker, kafka, persona_name):
    inbox = kafka.tail("persona_inbox")
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    reports = [
        {"event_id": f"e{n}", "run_id": run_id, "lease_id": "l1", "kind": "heartbeat", "persona": persona_name}
        for n in range(12)
    ]
    kafka.send_many(("run_events", run_id, report) for report in reports)

    def arrived(seen: list) -> bool:
        return sum(len(r.value["reports"]) for r in seen if r.key == persona_name) >= len(reports)

    records = [r.value for r in inbox.until(arrived, what="the reports in the persona inbox") if r.key == persona_name]
    # Read in one pass or a few: one record per pass and persona, holding that pass's reports.
    assert {r["type"] for r in records} == {"run_reports"}
    assert [item["event"]["event_id"] for r in records for item in r["reports"]] == [r["event_id"] for r in reports]
    assert all(
        item["type"] == "run_report" and item["persona"] == persona_name for r in records for item in r["reports"]
    )
