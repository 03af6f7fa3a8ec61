"""Admission rules: the pure decision ingress applies to each raw record."""

from __future__ import annotations

import base64
import json

from streams.admission import DLQ_VALUE_LIMIT, Forward, RawRecord, admit, reason_of, redacted_dead_letter
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


HOUR = 3_600_000
NOW = 1_000_000_000


def test_an_input_stamped_beyond_the_bound_is_forwarded_refused_with_its_admission_time():
    late = admit("triggers", raw(trigger_bytes(received_at_ms=NOW + HOUR)), now_ms=NOW, max_future_ms=HOUR)
    assert isinstance(late, Forward) and (late.record.refused, late.record.admitted_at_ms) == (None, NOW)
    assert late.record.cause(7)["producer_at_ms"] == NOW + HOUR and late.record.cause(7)["admitted_at_ms"] == NOW
    ahead = admit("triggers", raw(trigger_bytes(received_at_ms=NOW + HOUR + 1)), now_ms=NOW, max_future_ms=HOUR)
    assert isinstance(ahead, Forward) and ahead.record.refused.startswith("timestamp_in_future: ")
    assert f"PERSONAFLOW_MAX_FUTURE_MS={HOUR}" in ahead.record.refused
    control = json.dumps({"command_id": "c", "persona": "merge_captain", "action": "pause", "actor": "a"}).encode()
    stamped = admit("control", raw(control, topic="persona.control", ts=NOW + 2 * HOUR), now_ms=NOW, max_future_ms=HOUR)
    assert isinstance(stamped, Forward) and stamped.record.refused is not None  # the record timestamp counts too


def test_a_binding_stamped_beyond_the_bound_is_dead_lettered_with_the_reason():
    binding = json.dumps({"name": "merge_captain", "entry_workflow": "w"}).encode()
    letter = admit("bindings", raw(binding, topic="persona.bindings", ts=NOW + 400 * 24 * HOUR), now_ms=NOW,
                   max_future_ms=HOUR)  # fmt: skip
    assert isinstance(letter, DeadLetter) and reason_of(letter) == "timestamp_in_future"
    assert reason_of(admit("bindings", raw(b"{", topic="persona.bindings"))) == "invalid_input"


def test_a_dead_letter_of_a_persona_that_redacts_shows_no_redacted_value():
    value = trigger_bytes(metadata={"token": "s3cret", "n": "1"}, priority="x")
    letter = admit("triggers", raw(value))
    assert isinstance(letter, DeadLetter) and b"s3cret" in base64.b64decode(letter.value_b64)
    shown = redacted_dead_letter(letter, raw(value), frozenset({"token"}))
    assert json.loads(base64.b64decode(shown.value_b64))["metadata"] == {"token": "[redacted]", "n": "1"}
    garbage = raw(b"not json s3cret")
    hidden = redacted_dead_letter(admit("triggers", garbage), garbage, frozenset({"token"}))
    assert hidden.value_b64 == "" and "value withheld" in hidden.error
