"""Admission rules: the pure decision ingress applies to each raw record."""

from __future__ import annotations

import base64
import json

from streams.admission import DLQ_VALUE_LIMIT, Forward, RawRecord, admit
from streams.records import DeadLetter


def raw(
    value: bytes | None, key: bytes | None = b"merge_captain", topic: str = "persona.triggers", ts: int = 1_000
) -> RawRecord:
    return RawRecord(topic=topic, partition=3, offset=42, key=key, value=value, timestamp_ms=ts)


def trigger_bytes(**extra) -> bytes:
    return json.dumps(
        {"request_id": "r1", "persona": "merge_captain", "provider": "GitHub", "kind": "pull_request", **extra}
    ).encode()


def test_valid_trigger_is_forwarded_keyed_by_persona_with_record_time_and_source():
    verdict = admit("triggers", raw(trigger_bytes()))
    assert isinstance(verdict, Forward)
    assert (verdict.inbox, verdict.key, verdict.record.at_ms) == ("persona_inbox", "merge_captain", 1_000)
    assert verdict.record.cause(None) == {"type": "trigger", "topic": "persona.triggers", "partition": 3, "offset": 42}


def test_received_at_ms_overrides_the_record_timestamp():
    verdict = admit("triggers", raw(trigger_bytes(received_at_ms=77)))
    assert isinstance(verdict, Forward) and verdict.record.at_ms == 77


def test_key_must_equal_the_persona():
    verdict = admit("triggers", raw(trigger_bytes(), key=b"other"))
    assert isinstance(verdict, DeadLetter)
    assert verdict.error.startswith("record key 'other' does not match persona 'merge_captain'")
    assert admit("triggers", raw(trigger_bytes(), key=None)).error.startswith("record key is missing")


def test_dead_letter_keeps_position_key_and_a_bounded_copy_of_the_value():
    value = b"x" * (DLQ_VALUE_LIMIT + 10)
    letter = admit("control", raw(value, topic="persona.control"))
    assert isinstance(letter, DeadLetter)
    assert (letter.source_topic, letter.partition, letter.offset, letter.key) == (
        "persona.control",
        3,
        42,
        "merge_captain",
    )
    assert letter.value_truncated and len(base64.b64decode(letter.value_b64)) == DLQ_VALUE_LIMIT


def test_binding_tombstone_is_an_unbind_and_a_binding_must_match_its_key():
    unbind = admit("bindings", raw(None, topic="persona.bindings"))
    assert isinstance(unbind, Forward) and unbind.record.binding is None
    binding = json.dumps({"name": "merge_captain", "entry_workflow": "w"}).encode()
    assert isinstance(admit("bindings", raw(binding, topic="persona.bindings")), Forward)
    mismatch = admit("bindings", raw(binding, key=b"other", topic="persona.bindings"))
    assert isinstance(mismatch, DeadLetter) and "binding name" in mismatch.error


def test_run_events_are_keyed_by_run_id_into_the_run_inbox():
    event = json.dumps({"event_id": "e", "run_id": "run-1", "lease_id": "l", "kind": "heartbeat"}).encode()
    verdict = admit("run_events", raw(event, key=b"run-1", topic="persona.run.events"))
    assert isinstance(verdict, Forward) and (verdict.inbox, verdict.key) == ("run_inbox", "run-1")
    assert isinstance(admit("run_events", raw(event, key=b"run-2", topic="persona.run.events")), DeadLetter)
