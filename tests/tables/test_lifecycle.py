"""The original pipeline lifecycle's formatting rules and unsettled snapshot (seed 003)."""

from __future__ import annotations

import pytest

from tables.lifecycle import UnsettledSnapshot, payload_summary, trigger_spec_summary


@pytest.mark.parametrize("provider, kind, trigger_id, expected", [
    ("github", "issues.opened", "incoming-review-task", "incoming-review-task: github.issues.opened"),
    ("github", "", "t1", "t1"),
    ("", "push", "t1", "t1"),
    ("github", "push", None, "github.push"),
    ("slack", "", None, "slack"),
    ("", "push", None, "push"),
    ("", "", None, "trigger event"),
    ("", "", "", "trigger event"),
    ("github", "push", "", "github.push"),
])
def test_trigger_spec_summary(provider, kind, trigger_id, expected):
    assert trigger_spec_summary(provider, kind, trigger_id) == expected


@pytest.mark.parametrize("value, expected", [
    (None, "nil"), (True, "true"), (False, "false"), (42, "42"), (1.5, "1.5"),
    ("x" * 80, "x" * 80), ("x" * 81, "x" * 80 + "..."), ("é" * 81, "é" * 80 + "..."),
    ([1, 2, 3], "list(len=3)"), ({}, "object(keys=)"), ({"note": "x"}, "object(keys=note)"),
    ({"b": 1, "a": 2}, "object(keys=a,b)"),
    ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}, "object(keys=a,b,c,d,e,f,...)"),
    ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}, "object(keys=a,b,c,d,e,f)"),
])
def test_payload_summary(value, expected):
    assert payload_summary(value) == expected


def test_seed_003_unsettled_state_snapshot_starts_empty():
    snapshot = UnsettledSnapshot()
    assert snapshot.is_empty() and snapshot.summary() == "no unsettled work"
    assert snapshot.to_json() == {"suspended_subagents": [], "queued_triggers": [], "partial_handoffs": [],
                                  "in_flight_llm_calls": [], "pool_pending_tasks": []}
    assert snapshot.counts_json() == {"suspended": 0, "queued": 0, "partial": 0, "in_flight": 0, "pool_pending": 0}


def test_the_summary_prints_all_five_counts_zeros_included():
    snapshot = UnsettledSnapshot(queued_triggers=[{"id": "a"}, {"id": "b"}], partial_handoffs=[{"id": "c"}])
    assert snapshot.summary() == ("unsettled work: 0 suspended subagents, 2 queued triggers, 1 partial handoffs,"
                                  " 0 in-flight llm calls, 0 pool pending tasks")


def test_items_sort_by_queued_at_then_id_with_missing_times_last():
    snapshot = UnsettledSnapshot(queued_triggers=[{"id": "b", "queued_at_ms": 5}, {"id": "z"},
                                                  {"id": "a", "queued_at_ms": 5}, {"id": "c", "queued_at_ms": 1}])
    snapshot.sort()
    assert [i["id"] for i in snapshot.queued_triggers] == ["c", "a", "b", "z"]
    assert UnsettledSnapshot.from_json(snapshot.to_json()) == snapshot
