"""Trigger normalization and schedule envelopes (docs/behaviour.md, section 3)."""

from __future__ import annotations

import pytest

from tables.envelope import normalize_trigger_envelope, schedule_envelope, subject_key
from tests.tables.harness import merge_captain


@pytest.mark.parametrize(
    ("provider", "kind", "metadata", "expected"),
    [
        ("github", "pull_request", {"repository": "burin-labs/harn", "number": "462"}, "github:burin-labs/harn:pr:462"),
        ("GitHub", "check_run", {"repository.full_name": "a/b", "check_name": "ci"}, "github:a/b:check:ci"),
        ("github", "push", {}, "github:unknown:push"),
        ("github", "x", {"repository": "r", "pr": "1", "pull_request.number": "2", "number": "3"}, "github:r:pr:1"),
        ("github", "x", {"repository": "r", "check_run.name": "lint", "check_name": "ci"}, "github:r:check:lint"),
        ("linear", "issue", {"issue_key": "HAR-462"}, "linear:issue:HAR-462"),
        ("linear", "issue", {"issue.identifier": "A-1", "issue_id": "9", "id": "7"}, "linear:issue:A-1"),
        ("linear", "issue", {"id": "7"}, "linear:issue:7"),
        ("linear", "issue", {}, "linear:issue:unknown"),
        ("slack", "message", {"channel": "C123", "ts": "1713988800.000100"}, "slack:C123:1713988800.000100"),
        ("slack", "message", {"channel_id": "C9", "event_ts": "5"}, "slack:C9:5"),
        ("slack", "message", {}, "slack:unknown:unknown"),
        ("webhook", "ping", {"dedupe_key": "abc", "event_id": "x"}, "webhook:abc"),
        ("webhook", "ping", {"event_id": "x"}, "webhook:x"),
        ("Jira", "issue", {"event_id": "9"}, "jira:issue:9"),
        ("handoff", "review", {"dedupe_key": "h1"}, "handoff:review:h1"),
    ],
)
def test_subject_keys_follow_the_provider_rules(provider, kind, metadata, expected):
    envelope = normalize_trigger_envelope(provider, kind, metadata, 1000, "req-1")
    assert envelope.subject_key == expected
    assert envelope.provider == provider.lower()
    assert envelope.kind == kind


def test_keys_without_a_dedupe_key_derive_from_the_request_id():
    assert subject_key("webhook", "ping", {}, "req-7") == "webhook:ping:req-7"
    assert subject_key("custom", "tick", {}, "req-8") == "custom:tick:req-8"
    # deterministic: the same request gets the same key every time
    assert subject_key("webhook", "ping", {}, "req-7") == subject_key("webhook", "ping", {}, "req-7")


def test_envelope_fields_source_event_id_time_and_raw():
    envelope = normalize_trigger_envelope("webhook", "ping", {"dedupe_key": "abc", "event_id": "x"}, 1234, "r")
    assert envelope.source_event_id == "x"
    assert envelope.received_at_ms == 1234
    assert envelope.raw == {"metadata": {"dedupe_key": "abc", "event_id": "x"}}
    assert normalize_trigger_envelope("linear", "i", {"id": "7"}, 0, "r").source_event_id == "7"
    assert normalize_trigger_envelope("x", "k", {}, 0, "r", raw={"body": 1}).raw == {"body": 1}


def test_provider_lowercasing_is_ascii_only():
    assert normalize_trigger_envelope("ÄBC", "k", {"event_id": "1"}, 0, "r").provider == "Äbc"


def test_schedule_envelope_is_unique_per_persona_schedule_and_instant():
    envelope = schedule_envelope(merge_captain(), "*/30 * * * *", 1777033800000)
    assert envelope.provider == "schedule" and envelope.kind == "cron.tick"
    assert envelope.subject_key == "schedule:merge_captain:*/30 * * * *:2026-04-24T12:30:00Z"
    assert envelope.metadata == {
        "persona": "merge_captain",
        "schedule": "*/30 * * * *",
        "fired_at": "2026-04-24T12:30:00Z",
    }
    assert envelope.raw == {} and envelope.source_event_id is None
