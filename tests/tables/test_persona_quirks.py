"""One test per decision on the original runtime's quirks (docs/behaviour.md, "Decisions")."""

from __future__ import annotations

import msgspec
import pytest

from streams.inbox import TriggerReceived
from streams.wire import TriggerRequest
from tables import persona as transition
from tables.state import QueueItem
from tables.store import MemoryStore

from .harness import T0, Harness, cost, merge_captain, replace, seen

PR = {"repository": "burin-labs/harn", "number": "462"}


def test_decision_1_resume_does_not_lift_disabled_enable_does():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "disable")
    h.control("merge_captain", "resume", command_id="r")
    assert h.receipts("r")[0].status == "rejected"
    assert h.status("merge_captain").state == "disabled"
    h.control("merge_captain", "enable")
    assert h.status("merge_captain").state == "idle"


def test_decision_2_expired_leases_are_written_as_persona_lease_expired():
    h = Harness()
    h.bind(replace(merge_captain(), execution="external", lease_ttl_ms=50))
    h.trigger("merge_captain", "github", "pull_request", PR)
    h.tick("merge_captain", T0 + 50)
    assert [e.kind for e in h.events("merge_captain", "persona.lease.")] == [
        "persona.lease.acquired",
        "persona.lease.expired",
    ]
    assert h.events("merge_captain", "persona.run.")[-1].kind == "persona.run.retrying"  # and it is not released


def test_decision_3_draining_queues_new_work_and_failed_still_accepts_it():
    h = Harness()
    h.bind(replace(merge_captain(), execution="external"))
    run = h.trigger("merge_captain", "github", "pull_request", PR)
    h.control("merge_captain", "drain")
    assert h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}).status == "queued"
    h2 = Harness()
    h2.bind(replace(merge_captain(), execution="external"))
    first = h2.trigger("merge_captain", "github", "pull_request", PR)
    h2.finish("merge_captain", first.run_id, first.lease.id, "failed", error="boom", retryable=False)
    assert h2.status("merge_captain").state == "failed"
    assert h2.trigger("merge_captain", "linear", "issue", {"issue_key": "B"}).status == "dispatched"
    assert run.status == "dispatched"


def test_decision_4_kept_github_pr_work_key_ignores_kind():
    h = Harness()
    h.bind(merge_captain())
    assert h.trigger("merge_captain", "github", "pull_request", PR).status == "completed"
    assert h.trigger("merge_captain", "github", "pull_request_review", PR).status == "duplicate"


def test_decision_5_sticky_exhaustion_ends_with_its_window():
    h = Harness()
    h.bind(merge_captain(run_usd=0.01))
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}, cost=cost(0.02, 1))
    assert h.status("merge_captain").budget.reason == "run_usd"
    tomorrow = T0 + 86_400_000
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "B"}, at_ms=tomorrow)
    status = h.status("merge_captain")
    assert (status.budget.exhausted, status.budget.reason) == (False, None)


def test_decision_6_queued_work_is_typed_so_a_malformed_item_cannot_be_stored():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(
            {
                "work_key": "k",
                "request_id": "r",
                "envelope": {"provider": "x"},
                "seq": 0,
                "reason": "paused",
                "queued_at_ms": 0,
            },
            QueueItem,
        )
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause")
    h.trigger("merge_captain", "webhook", "ping", {"weird": "\u0000\ud7ff"})
    assert h.status("merge_captain").queued_work[0].metadata == {"weird": "\u0000\ud7ff"}


def test_decision_7_drain_order_is_priority_then_age_not_work_key():
    h = Harness()
    h.bind(merge_captain())
    h.control("merge_captain", "pause")
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "Z"})
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"})
    h.control("merge_captain", "resume")
    assert [e.payload["work_key"] for e in h.events("merge_captain", "persona.run.completed")] == [
        "linear:issue:Z",
        "linear:issue:A",
    ]


def test_decision_8_an_input_older_than_the_last_is_handled_at_the_persona_clock():
    h = Harness()
    h.bind(merge_captain())
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}, cost=cost(0.01, 1), at_ms=T0 + 86_400_000)
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "B"}, cost=cost(0.01, 1), at_ms=T0)
    status = h.status("merge_captain")
    assert status.budget.spent_today_usd == 0.02  # both in the later day: nothing counted "in the future"


def test_decision_9_kept_budget_gate_before_duplicate_gate():
    h = Harness()
    h.bind(merge_captain(daily_usd=0.01))
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}, cost=cost(0.01, 1))
    again = h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}, cost=cost(0.01, 1))
    assert again.status == "budget_exhausted"
    assert h.events("merge_captain")[-1].kind == "persona.budget.exhausted"


def test_decision_10_binding_triggers_are_informational():
    h = Harness()
    h.bind(merge_captain())  # triggers: ["github.pr_opened"]
    assert h.trigger("merge_captain", "slack", "message", {"channel": "C", "ts": "1"}).status == "completed"


def test_decision_11_two_triggers_in_one_batch_cannot_both_take_the_lease():
    store = MemoryStore()
    h = Harness()
    h.store = store
    h.bind(replace(merge_captain(), execution="external"))
    txn = store.transaction()  # one transaction = one batch of the agent
    outputs = []
    for n in (1, 2):
        request = TriggerRequest(
            request_id=f"r{n}",
            persona="merge_captain",
            provider="github",
            kind="pull_request",
            metadata={"repository": "r", "number": str(n)},
        )
        outputs += seen(transition.apply(txn, TriggerReceived(at_ms=T0, request=request), 100 + n))
    statuses = [o.value.status for o in outputs if o.role == "receipts"]
    assert statuses == ["dispatched", "lease_busy"]
