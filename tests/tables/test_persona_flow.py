"""Persona behaviour across several inputs: queues, leases, control, idempotency, time."""

from __future__ import annotations

from streams.inbox import TriggerReceived
from streams.wire import TriggerRequest
from tables.state import VALUE_RING
from tables.status import STATUS_LIST_LIMIT
from tables.timefmt import parse_rfc3339_ms

from .harness import T0, Harness, cost, external, merge_captain, replace


def pr(number: int | str) -> dict[str, str]:
    return {"repository": "burin-labs/harn", "number": str(number)}


def receipts_of(h: Harness, request_id: str) -> list[str]:
    return [r.status for r in h.receipts(request_id)]


def test_lease_busy_trigger_is_queued_then_drained_when_the_lease_frees():
    h = Harness()
    h.bind(external())
    first = h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="a")
    busy = h.trigger("merge_captain", "github", "pull_request", pr(2), request_id="b", at_ms=T0 + 10)
    assert busy.status == "lease_busy" and busy.queued is True
    assert busy.lease == first.lease and busy.error == "active lease already owns persona work"
    assert [e.kind for e in h.events("merge_captain")][-3:] == [
        "persona.trigger.received",
        "persona.lease.conflict",
        "persona.trigger.queued",
    ]
    assert h.events("merge_captain", "persona.trigger.queued")[-1].payload["reason"] == "lease_busy"
    assert h.status("merge_captain").queued_events == 1

    h.finish("merge_captain", first.run_id, first.lease.id, cost=cost(0.01, 5), at_ms=T0 + 20)
    assert receipts_of(h, "a") == ["dispatched", "completed"]
    assert receipts_of(h, "b") == ["lease_busy", "dispatched"]
    second = h.receipts("b")[-1]
    assert second.run_id != first.run_id and second.lease.work_key == "github:burin-labs/harn:pr:2"
    status = h.status("merge_captain")
    assert (status.state, status.queued_events, status.budget.spent_today_usd) == ("running", 0, 0.01)


def test_drain_runs_active_and_earlier_queued_work_one_by_one_then_pauses():
    h = Harness()
    h.bind(external())
    a = h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="a")
    h.trigger("merge_captain", "github", "pull_request", pr(2), request_id="b")  # lease_busy, queued
    h.control("merge_captain", "drain", T0 + 1)
    assert h.status("merge_captain").state == "draining"
    late = h.trigger("merge_captain", "github", "pull_request", pr(3), request_id="c", at_ms=T0 + 2)
    assert late.status == "queued"
    assert h.events("merge_captain", "persona.trigger.queued")[-1].payload["reason"] == "draining"

    h.finish("merge_captain", a.run_id, a.lease.id, at_ms=T0 + 3)
    b = h.receipts("b")[-1]
    assert b.status == "dispatched" and h.status("merge_captain").state == "draining"
    h.finish("merge_captain", b.run_id, b.lease.id, at_ms=T0 + 4)
    status = h.status("merge_captain")
    assert (status.state, status.queued_events) == ("paused", 1)
    assert [w.work_key for w in status.queued_work] == ["github:burin-labs/harn:pr:3"]
    assert h.events("merge_captain")[-1].kind == "persona.control.paused"

    h.control("merge_captain", "resume", T0 + 5)
    assert receipts_of(h, "c") == ["queued", "dispatched"]


def test_drain_of_an_idle_persona_with_nothing_queued_pauses_at_once():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "drain")
    assert [e.kind for e in h.events("merge_captain")][-2:] == ["persona.control.draining", "persona.control.paused"]
    assert h.status("merge_captain").state == "paused"


def test_queued_work_drains_by_priority_then_age():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause")
    for number, priority in [(1, 0), (2, 5), (3, 1), (4, 5), (5, -1)]:
        h.trigger("merge_captain", "github", "pull_request", pr(number), priority=priority, request_id=f"r{number}")
    assert [w.work_key[-1] for w in h.status("merge_captain").queued_work] == ["2", "4", "3", "1", "5"]
    h.control("merge_captain", "resume", T0 + 1)
    completed = [e.payload["work_key"][-1] for e in h.events("merge_captain", "persona.run.completed")]
    assert completed == ["2", "4", "3", "1", "5"]


def test_enable_takes_a_disabled_persona_back_and_resume_does_not():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "disable")
    assert h.trigger("merge_captain", "slack", "message", {"channel": "C", "ts": "1"}).status == "dead_lettered"
    resume = h.control("merge_captain", "resume", command_id="res")
    assert [o.value.status for o in resume if o.role == "receipts"] == ["rejected"]
    assert "send `enable`" in h.receipts("res")[0].error
    assert h.status("merge_captain").state == "disabled"
    h.control("merge_captain", "enable", T0 + 1)
    assert h.events("merge_captain")[-1].kind == "persona.control.enabled"
    assert h.status("merge_captain").state == "idle"
    assert (
        h.trigger("merge_captain", "slack", "message", {"channel": "C", "ts": "1"}, at_ms=T0 + 2).status == "completed"
    )
    h.control("merge_captain", "enable", T0 + 3, command_id="again")
    assert h.receipts("again")[0].status == "rejected"


def test_enable_drains_work_queued_before_the_persona_was_disabled():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause")
    h.trigger("merge_captain", "github", "pull_request", pr(7), request_id="q")
    h.control("merge_captain", "disable")
    h.control("merge_captain", "enable", T0 + 1)
    assert receipts_of(h, "q") == ["queued", "completed"]


def test_a_redelivered_request_gets_the_same_receipt_and_no_second_effect():
    h = Harness()
    h.bind(merge_captain())
    first = h.trigger("merge_captain", "github", "pull_request", pr(1), cost=cost(0.01, 1), request_id="same")
    events_before = len(h.events())
    again = h.trigger(
        "merge_captain", "github", "pull_request", pr(1), cost=cost(0.01, 1), request_id="same", at_ms=T0 + 5
    )
    assert again == first
    assert len(h.events()) == events_before
    assert h.status("merge_captain").budget.spent_today_usd == 0.01


def test_a_redelivered_command_is_applied_once():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause", command_id="p1")
    h.control("merge_captain", "resume", T0 + 1, command_id="r1")
    h.control("merge_captain", "pause", T0 + 2, command_id="p1")  # redelivered: no effect
    assert h.status("merge_captain").state == "idle"
    assert len(h.events("merge_captain", "persona.control.paused")) == 1


def test_triggers_and_commands_for_an_unknown_persona_are_rejected_naming_it():
    h = Harness()
    receipt = h.trigger("ghost", "github", "pull_request", pr(1), request_id="g")
    assert receipt.status == "rejected" and "'ghost'" in receipt.error
    commanded = h.control("ghost", "pause", command_id="gc")
    assert [o.value.status for o in commanded if o.role == "receipts"] == ["rejected"]
    assert h.events() == []


def test_a_replayed_inbox_record_changes_nothing_and_re_emits_its_receipt():
    h = Harness()
    h.bind(merge_captain(), at_ms=T0)
    record = TriggerReceived(
        at_ms=T0,
        request=TriggerRequest(
            request_id="x", persona="merge_captain", provider="github", kind="pull_request", metadata=pr(1)
        ),
    )
    first = h.feed(record, position=10)
    tables_before = {name: dict(rows) for name, rows in h.store.tables.items()}
    replay = h.feed(record, position=10)
    assert [o.value for o in replay] == [o.value for o in first if o.role == "receipts"]
    assert {name: dict(rows) for name, rows in h.store.tables.items()} == tables_before


def test_a_queued_request_superseded_for_the_same_work_key_gets_a_duplicate_receipt():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause")
    h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="old", cost=cost(0.01, 1))
    h.trigger("merge_captain", "github", "pull_request_review", pr(1), request_id="new", cost=cost(0.002, 1))
    assert receipts_of(h, "old") == ["queued", "duplicate"]
    assert "superseded by request 'new'" in h.receipts("old")[-1].error
    assert h.status("merge_captain").queued_events == 1
    h.control("merge_captain", "resume", T0 + 1)
    assert receipts_of(h, "new") == ["queued", "completed"]
    assert h.status("merge_captain").budget.spent_today_usd == 0.002  # latest wins


def test_a_finally_failed_external_run_releases_the_lease_and_marks_the_persona_failed():
    h = Harness()
    h.bind(external())
    run = h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="a")
    h.finish(
        "merge_captain",
        run.run_id,
        run.lease.id,
        "failed",
        cost=cost(0.004, 3),
        error="tests broke",
        retryable=False,
        at_ms=T0 + 5,
    )
    assert receipts_of(h, "a") == ["dispatched", "failed"]
    assert h.receipts("a")[-1].error == "tests broke"
    assert [e.kind for e in h.events("merge_captain")][-4:] == [
        "persona.budget.recorded",
        "persona.budget.reconciled",
        "persona.run.failed",
        "persona.lease.released",
    ]
    status = h.status("merge_captain")
    assert (status.state, status.last_error, status.active_lease) == ("failed", "tests broke", None)
    assert status.budget.spent_today_usd == 0.004
    nxt = h.trigger("merge_captain", "github", "pull_request", pr(2), at_ms=T0 + 6)
    assert nxt.status == "dispatched" and h.status("merge_captain").state == "running"


def test_an_expired_lease_requeues_the_work_without_spending_an_attempt_and_queued_work_proceeds():
    h = Harness()
    h.bind(external(lease_ttl_ms=1000))
    a = h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="a")
    h.trigger("merge_captain", "github", "pull_request", pr(2), request_id="b", at_ms=T0 + 1)
    assert h.tick("merge_captain", T0 + 999) == []  # not yet expired: nothing happens
    outputs = h.tick("merge_captain", T0 + 1000)
    assert "persona.lease.expired" in h.kinds(outputs)
    expired = h.events("merge_captain", "persona.lease.expired")[0].payload
    assert expired == {"id": a.lease.id, "work_key": a.lease.work_key, "expired_at_ms": T0 + 1000}
    retrying = h.receipts("a")[-1]
    assert receipts_of(h, "a") == ["dispatched", "retrying"]
    assert (retrying.attempt, retrying.not_before_ms) == (1, T0 + 2000)  # backoff_ms 1000, attempt not spent
    assert [d.action for d in h.dispatches(a.run_id)] == ["start", "cancel"]  # the silent executor is told to stop
    assert receipts_of(h, "b") == ["lease_busy", "dispatched"]
    b = h.receipts("b")[-1]
    h.finish("merge_captain", b.run_id, b.lease.id, at_ms=T0 + 1500)
    assert receipts_of(h, "a") == ["dispatched", "retrying"]  # still backing off
    h.tick("merge_captain", T0 + 2000)
    again = h.receipts("a")[-1]
    assert (again.status, again.attempt, again.run_id) == ("dispatched", 1, a.run_id)
    assert again.lease.id != a.lease.id
    h.finish("merge_captain", a.run_id, again.lease.id, at_ms=T0 + 2100)
    assert receipts_of(h, "a") == ["dispatched", "retrying", "dispatched", "completed"]


def test_an_expired_lease_counts_as_free_for_the_next_trigger_even_without_a_tick():
    h = Harness()
    h.bind(external(lease_ttl_ms=1000))
    h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="a")
    assert h.status("merge_captain", T0 + 1000).active_lease is None  # an expired lease is not shown
    late = h.trigger("merge_captain", "github", "pull_request", pr(2), request_id="b", at_ms=T0 + 1000)
    assert late.status == "dispatched"
    assert receipts_of(h, "a") == ["dispatched", "retrying"]


def test_a_report_on_an_expired_lease_is_fenced_but_its_spend_is_recorded():
    h = Harness()
    h.bind(external(lease_ttl_ms=1000))
    a = h.trigger("merge_captain", "github", "pull_request", pr(1), request_id="a")
    h.tick("merge_captain", T0 + 1000)
    spent = h.status("merge_captain").budget.spent_today_usd
    outputs = h.finish("merge_captain", a.run_id, a.lease.id, cost=cost(0.005, 1), at_ms=T0 + 1200)
    assert [o for o in outputs if o.role == "dlq"] == []
    [rejected] = h.run_events(a.run_id, "run.report_rejected")
    assert "no executor holds it" in rejected.payload["reason"]
    assert h.status("merge_captain").budget.spent_today_usd == spent + 0.005
    assert receipts_of(h, "a") == ["dispatched", "retrying"]


def test_the_persona_clock_never_goes_backwards():
    h = Harness()
    h.bind(merge_captain())
    h.trigger("merge_captain", "github", "pull_request", pr(1), at_ms=T0 + 10_000)
    older = h.trigger("merge_captain", "github", "pull_request", pr(2), at_ms=T0)
    assert older.at_ms == T0 + 10_000 and older.lease.acquired_at_ms == T0 + 10_000


def test_status_lists_are_bounded_but_counts_are_exact():
    h = Harness()
    h.bind(merge_captain(daily_usd=None, run_usd=None, max_tokens=None))
    for n in range(60):
        h.trigger("merge_captain", "github", "pull_request", pr(n), cost=cost(0.0, 0, frontier_escalations=1))
    status = h.status("merge_captain")
    assert len(status.value_receipts) == VALUE_RING
    assert status.value_receipts[-1].kind == "run_completed"
    assert status.value_receipts[-1].run_id == h.receipts()[-1].run_id
    h.control("merge_captain", "pause")
    for n in range(100, 250):
        h.trigger("merge_captain", "github", "pull_request", pr(n))
    status = h.status("merge_captain")
    assert status.queued_events == 150 and len(status.queued_work) == STATUS_LIST_LIMIT
    assert [w.work_key for w in status.queued_work] == [f"github:burin-labs/harn:pr:{n}" for n in range(100, 120)]


def test_record_spend_counts_toward_the_budget_or_is_refused():
    h = Harness()
    h.bind(merge_captain(daily_usd=0.02))
    outputs = h.control("merge_captain", "record_spend", cost=cost(0.015, 1), command_id="s1")
    [receipt] = [o.value for o in outputs if o.role == "receipts"]
    assert receipt.status == "completed" and receipt.budget_receipt_id
    assert h.events("merge_captain", "persona.budget.recorded")[-1].payload["lease_id"] is None
    refused = h.control("merge_captain", "record_spend", cost=cost(0.01, 1), command_id="s2")
    assert [o.value.status for o in refused if o.role == "receipts"] == ["budget_exhausted"]
    assert h.status("merge_captain").budget.spent_today_usd == 0.015


def test_schedule_ticks_fire_each_due_occurrence_once():
    h = Harness()
    h.bind(merge_captain())  # */30, bound at 12:00:00
    at = parse_rfc3339_ms
    h.tick("merge_captain", at("2026-04-24T12:10:00Z"))
    assert not h.events("merge_captain", "persona.schedule.fired")
    h.tick("merge_captain", at("2026-04-24T12:31:00Z"))
    h.tick("merge_captain", at("2026-04-24T12:32:00Z"))
    fired = [e.payload["envelope"]["metadata"]["fired_at"] for e in h.events("merge_captain", "persona.schedule.fired")]
    assert fired == ["2026-04-24T12:30:00Z"]
    assert [r.status for r in h.receipts()] == ["completed"]
    h.tick("merge_captain", at("2026-04-24T15:05:00Z"))  # missed 13:00..15:00: "latest" fires 15:00 once
    fired = [e.payload["envelope"]["metadata"]["fired_at"] for e in h.events("merge_captain", "persona.schedule.fired")]
    assert fired == ["2026-04-24T12:30:00Z", "2026-04-24T15:00:00Z"]
    assert h.status("merge_captain").next_scheduled_run == "2026-04-24T15:30:00Z"


def test_schedule_catchup_skip_drops_occurrences_noticed_late():
    h = Harness()
    h.bind(replace(merge_captain(), schedule_catchup="skip"))
    h.tick("merge_captain", parse_rfc3339_ms("2026-04-24T12:30:30Z"))  # 30 s late: on time
    h.tick("merge_captain", parse_rfc3339_ms("2026-04-24T14:05:00Z"))  # 5 min late: skipped
    fired = [e.payload["envelope"]["metadata"]["fired_at"] for e in h.events("merge_captain", "persona.schedule.fired")]
    assert fired == ["2026-04-24T12:30:00Z"]


def test_handoffs_waiting_in_the_queue_show_in_the_handoff_inbox():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause")
    h.trigger(
        "merge_captain",
        "handoff",
        "review",
        {"handoff_id": "h1", "source_persona": "triager", "task": "review PR", "dedupe_key": "h1"},
    )
    h.trigger("merge_captain", "github", "pull_request", {**pr(9), "handoff_id": "h2", "kind": "escalation"})
    inbox = h.status("merge_captain").handoff_inbox
    assert [(i.handoff_id, i.handoff_kind, i.source_persona, i.task, i.reason) for i in inbox] == [
        ("h1", None, "triager", "review PR", "paused"),
        ("h2", "escalation", None, None, "paused"),
    ]


def test_unbinding_rejects_new_work_and_rebinding_keeps_the_history():
    h = Harness()
    h.bind(merge_captain())
    h.trigger("merge_captain", "github", "pull_request", pr(1), cost=cost(0.01, 1))
    h.unbind("merge_captain", T0 + 1)
    assert h.events("merge_captain")[-1].kind == "persona.binding.removed"
    assert h.trigger("merge_captain", "github", "pull_request", pr(2), at_ms=T0 + 2).status == "rejected"
    h.bind(merge_captain(), at_ms=T0 + 3)
    assert h.trigger("merge_captain", "github", "pull_request", pr(1), at_ms=T0 + 4).status == "duplicate"
    assert h.status("merge_captain").budget.spent_today_usd == 0.01
