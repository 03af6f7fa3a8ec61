"""What ``GET /unsettled`` lists, from one partition's state: queued triggers, runs waiting
for a retry, runs in flight, paused runs (handoffs: ``test_handoffs.py``)."""

from __future__ import annotations

from tables.unsettled import partition_unsettled

from .harness import T0, Harness, binding

NOW = T0 + 60_000


def external(name: str, **fields):
    return binding(name=name, execution="external", entry_workflow="wf/x", retry={"backoff_ms": 10_000}, **fields)


def test_seed_003_queued_triggers_are_listed_with_ids_summaries_and_ages_until_taken_up():
    h = Harness()
    h.bind(binding(name="p1", entry_workflow="wf"))
    h.control("p1", "pause")
    h.trigger("p1", "github", "issues.opened", {"repository": "r", "number": "2"}, at_ms=T0 + 1)
    h.trigger("p1", "github", "issues.opened", {"repository": "r", "number": "1"}, at_ms=T0 + 2)
    queued = partition_unsettled(h.store, NOW).queued_triggers
    assert [(q["id"], q["spec_summary"], q["queued_at_ms"], q["age_ms"]) for q in queued] == [
        ("trigger://p1/github:r:pr:2", "github.issues.opened", T0 + 1, NOW - T0 - 1),
        ("trigger://p1/github:r:pr:1", "github.issues.opened", T0 + 2, NOW - T0 - 2),
    ]
    h.control("p1", "resume", at_ms=T0 + 3)
    assert partition_unsettled(h.store, NOW).is_empty()


def test_in_flight_paused_and_retrying_runs_are_listed_in_their_buckets():
    h = Harness()
    for name in ("a", "b", "c"):
        h.bind(external(name))
    running = h.trigger("a", "webhook", "push", {"dedupe_key": "1"}, at_ms=T0).run_id
    paused = h.trigger("b", "webhook", "push", {"dedupe_key": "1"}, at_ms=T0 + 1).run_id
    failing = h.trigger("c", "webhook", "push", {"dedupe_key": "1"}, at_ms=T0 + 2).run_id
    h.run_control("b", paused, "pause", at_ms=T0 + 3)
    lease = [d for d in h.dispatches(failing) if d.action == "start"][-1].lease_id
    h.finish("c", failing, lease, "failed", error="flaky", at_ms=T0 + 4)
    snapshot = partition_unsettled(h.store, NOW)
    [in_flight] = snapshot.in_flight_llm_calls
    [suspended] = snapshot.suspended_subagents
    [retry] = snapshot.queued_triggers
    assert (in_flight["id"], in_flight["status"], in_flight["attempt"]) == (f"run://a/{running}", "dispatched", 1)
    assert (suspended["id"], suspended["status"]) == (f"run://b/{paused}", "paused")
    assert (retry["id"], retry["source"], retry["attempt"], retry["queued_at_ms"], retry["not_before_ms"]) == (
        f"run://c/{failing}",
        "retry",
        2,
        T0 + 4,
        T0 + 10_004,
    )
    assert snapshot.summary() == (
        "unsettled work: 1 suspended subagents, 1 queued triggers, 0 partial handoffs,"
        " 1 in-flight llm calls, 0 pool pending tasks"
    )
    assert partition_unsettled(h.store, NOW, persona="b").counts_json()["suspended"] == 1
    assert partition_unsettled(h.store, NOW, persona="b").counts_json()["in_flight"] == 0
