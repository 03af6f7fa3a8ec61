"""The original pipeline lifecycle's formatting rules and unsettled snapshot (seed 003),
and its upstream tests mapped onto personaflow (the ``on_finish`` callback and its reset
have no counterpart: nothing but the transitions runs inside the pipeline)."""

from __future__ import annotations

import pytest

from tables.lifecycle import UnsettledSnapshot, payload_summary, trigger_spec_summary
from tables.unsettled import partition_unsettled

from .harness import T0, Harness, binding


@pytest.mark.parametrize(
    "provider, kind, trigger_id, expected",
    [
        ("github", "issues.opened", "incoming-review-task", "incoming-review-task: github.issues.opened"),
        ("github", "", "t1", "t1"),
        ("", "push", "t1", "t1"),
        ("github", "push", None, "github.push"),
        ("slack", "", None, "slack"),
        ("", "push", None, "push"),
        ("", "", None, "trigger event"),
        ("", "", "", "trigger event"),
        ("github", "push", "", "github.push"),
    ],
)
def test_trigger_spec_summary(provider, kind, trigger_id, expected):
    assert trigger_spec_summary(provider, kind, trigger_id) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "nil"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (1.5, "1.5"),
        ("x" * 80, "x" * 80),
        ("x" * 81, "x" * 80 + "..."),
        ("é" * 81, "é" * 80 + "..."),
        ([1, 2, 3], "list(len=3)"),
        ({}, "object(keys=)"),
        ({"note": "x"}, "object(keys=note)"),
        ({"b": 1, "a": 2}, "object(keys=a,b)"),
        ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}, "object(keys=a,b,c,d,e,f,...)"),
        ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}, "object(keys=a,b,c,d,e,f)"),
    ],
)
def test_payload_summary(value, expected):
    assert payload_summary(value) == expected


def test_seed_003_unsettled_state_snapshot_starts_empty():
    snapshot = UnsettledSnapshot()
    assert snapshot.is_empty() and snapshot.summary() == "no unsettled work"
    assert snapshot.to_json() == {
        "suspended_subagents": [],
        "queued_triggers": [],
        "partial_handoffs": [],
        "in_flight_llm_calls": [],
        "pool_pending_tasks": [],
    }
    assert snapshot.counts_json() == {"suspended": 0, "queued": 0, "partial": 0, "in_flight": 0, "pool_pending": 0}


def test_the_summary_prints_all_five_counts_zeros_included():
    snapshot = UnsettledSnapshot(queued_triggers=[{"id": "a"}, {"id": "b"}], partial_handoffs=[{"id": "c"}])
    assert snapshot.summary() == (
        "unsettled work: 0 suspended subagents, 2 queued triggers, 1 partial handoffs,"
        " 0 in-flight llm calls, 0 pool pending tasks"
    )


def test_items_sort_by_queued_at_then_id_with_missing_times_last():
    snapshot = UnsettledSnapshot(
        queued_triggers=[
            {"id": "b", "queued_at_ms": 5},
            {"id": "z"},
            {"id": "a", "queued_at_ms": 5},
            {"id": "c", "queued_at_ms": 1},
        ]
    )
    snapshot.sort()
    assert [i["id"] for i in snapshot.queued_triggers] == ["c", "a", "b", "z"]
    assert UnsettledSnapshot.from_json(snapshot.to_json()) == snapshot


# ------------------------------------------- the original's upstream tests, mapped (see docs)


def test_seed_003_audit_entries_are_outbox_events_with_a_monotonic_seq_and_headers():
    """``record_lifecycle_audit`` assigns a monotonic seq and persists ``kind`` with it:
    here every transition is an outbox event of its stream, gap-free ``seq``, headers
    ``kind`` and ``event_id``."""
    h = Harness()
    h.bind(binding(name="p", entry_workflow="wf"))
    h.control("p", "pause")
    h.trigger("p", "linear", "issue", {"issue_key": "L-1"})
    events = [o for o in h.outputs if o.role == "outbox"]
    assert [o.value.seq for o in events] == list(range(1, len(events) + 1))
    for output in events:
        headers = {name: bytes(value).decode() for name, value in output.headers}
        assert (headers["kind"], headers["event_id"]) == (output.value.kind, f"persona:p/{output.value.seq}")


def test_seed_003_the_disposition_is_the_runs_one_terminal_event():
    """``finalize_pipeline_records_disposition``: the run's terminal event is its
    disposition, the last event of its stream, and there is exactly one."""
    h = Harness()
    h.bind(binding(name="p", entry_workflow="wf", execution="external"))
    run = h.trigger("p", "webhook", "push", {"dedupe_key": "1"}).run_id
    lease = [d for d in h.dispatches(run) if d.action == "start"][-1].lease_id
    h.finish("p", run, lease, "completed")
    h.finish("p", run, lease, "failed", error="late")  # a second disposition changes nothing
    kinds = [e.kind for e in h.run_events(run)]
    assert kinds.count("run.completed") == 1 and "run.failed" not in kinds
    assert kinds[-1] == "run.report_rejected" and kinds[-3:-1] == ["run.completed", "run.bom"]


def test_seed_003_a_queued_trigger_superseded_or_drained_leaves_the_list():
    """The upstream test cancels an inbox event and the list empties: here a later request
    for the same work key supersedes the queued one, and a drain takes it up."""
    h = Harness()
    h.bind(binding(name="p", entry_workflow="wf"))
    h.control("p", "pause")
    h.trigger("p", "linear", "issue", {"issue_key": "L-1"}, request_id="old")
    h.trigger("p", "linear", "issue", {"issue_key": "L-1"}, request_id="new")
    [item] = partition_unsettled(h.store, T0).queued_triggers
    assert (item["id"], item["request_id"]) == ("trigger://p/linear:issue:L-1", "new")
    assert h.receipts("old")[-1].status == "duplicate"
    h.control("p", "resume")
    assert partition_unsettled(h.store, T0).is_empty()
