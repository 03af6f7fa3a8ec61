"""Outbox events and receipts of the persona transition: kinds, order, exact payload fields."""

from __future__ import annotations

from streams.inbox import RunRegistered
from streams.records import RunDispatch
from tables import ids
from tables.timefmt import parse_rfc3339_ms

from .harness import T0, Harness, cost, merge_captain, replace

PR = {"repository": "burin-labs/harn", "number": "462"}
RUN_KINDS = ["persona.lease.acquired", "persona.run.started", "persona.value.run_started", "persona.budget.recorded"]
FULL_COST = cost(
    0.011,
    20,
    avoided_cost_usd=0.003,
    deterministic_steps=2,
    llm_steps=1,
    frontier_escalations=1,
    metadata={"frontier_model": "gpt-5.4", "tokens": 999},
)


def test_one_inline_run_emits_its_events_in_the_specified_order():
    h = Harness()
    h.bind(merge_captain())
    h.trigger("merge_captain", "github", "pull_request", PR, cost=FULL_COST)
    kinds = [e.kind for e in h.events("merge_captain")][1:]  # after persona.binding.updated
    assert kinds == [
        "persona.trigger.received",
        *RUN_KINDS,
        "persona.value.deterministic_execution",
        "persona.value.frontier_escalation",
        "persona.value.run_completed",
        "persona.run.completed",
        "persona.lease.released",
    ]


def test_a_schedule_run_starts_with_schedule_fired_and_a_plain_run_has_no_optional_value_events():
    h = Harness()
    h.bind(merge_captain())
    h.trigger("merge_captain", "schedule", "cron.tick", cost=cost(0.01, 1))
    kinds = [e.kind for e in h.events("merge_captain")][1:]
    assert kinds == [
        "persona.schedule.fired",
        *RUN_KINDS,
        "persona.value.run_completed",
        "persona.run.completed",
        "persona.lease.released",
    ]


def test_payload_fields_are_exactly_the_specified_ones():
    h = Harness()
    h.bind(merge_captain())
    receipt = h.trigger("merge_captain", "github", "pull_request", PR, cost=FULL_COST, at_ms=T0)
    fields = {e.kind: set(e.payload) for e in h.events("merge_captain")}
    value = {
        "persona_id",
        "template_ref",
        "run_id",
        "kind",
        "paid_cost_usd",
        "avoided_cost_usd",
        "deterministic_steps",
        "llm_steps",
        "metadata",
        "occurred_at",
    }
    assert fields["persona.trigger.received"] == {"persona", "envelope"}
    assert fields["persona.lease.acquired"] == {"id", "holder", "work_key", "acquired_at_ms", "expires_at_ms"}
    assert fields["persona.run.started"] == {"work_key", "run_id", "started_at_ms", "entry_workflow", "lease_id"}
    assert fields["persona.budget.recorded"] == {"receipt_id", "persona", "cost_usd", "tokens", "lease_id"}
    assert fields["persona.run.completed"] == {"work_key", "run_id", "completed_at_ms", "entry_workflow", "lease_id"}
    assert fields["persona.lease.released"] == {"id", "work_key", "released_at_ms"}
    for kind in ("run_started", "deterministic_execution", "frontier_escalation", "run_completed"):
        assert fields[f"persona.value.{kind}"] == value
    lease = h.events("merge_captain", "persona.lease.acquired")[0].payload
    assert lease["holder"] == "persona-runtime"
    assert lease["expires_at_ms"] - lease["acquired_at_ms"] == 300000
    assert lease["id"].startswith("persona_lease_")
    recorded = h.events("merge_captain", "persona.budget.recorded")[0].payload
    assert recorded["receipt_id"] == receipt.budget_receipt_id and recorded["receipt_id"].startswith("persona_budget_")
    assert recorded["lease_id"] == receipt.lease.id
    started = h.events("merge_captain", "persona.value.run_started")[0].payload
    assert started["occurred_at"] == "2026-04-24T12:00:00Z"


def test_value_amounts_and_metadata_merge_as_specified():
    h = Harness()
    h.bind(merge_captain())
    h.trigger("merge_captain", "github", "pull_request", PR, cost=FULL_COST)
    by_kind = {e.kind.split(".")[-1]: e.payload for e in h.events("merge_captain", "persona.value.")}
    assert (
        by_kind["deterministic_execution"]["avoided_cost_usd"],
        by_kind["deterministic_execution"]["deterministic_steps"],
    ) == (0.003, 2)
    assert (by_kind["frontier_escalation"]["paid_cost_usd"], by_kind["frontier_escalation"]["llm_steps"]) == (0.011, 1)
    assert (by_kind["run_completed"]["paid_cost_usd"], by_kind["run_completed"]["llm_steps"]) == (0.0, 0)
    assert by_kind["run_started"]["paid_cost_usd"] == 0.0
    metadata = by_kind["run_started"]["metadata"]
    assert metadata["work_key"] == "github:burin-labs/harn:pr:462"
    assert (metadata["trigger_provider"], metadata["trigger_kind"]) == ("github", "pull_request")
    assert metadata["frontier_escalations"] == 1
    assert metadata["tokens"] == 999  # the cost's metadata is merged last and overrides
    assert metadata["frontier_model"] == "gpt-5.4"


def test_non_object_cost_metadata_is_kept_under_run_cost_metadata_and_negatives_are_clamped():
    h = Harness()
    h.bind(merge_captain())
    h.trigger(
        "merge_captain",
        "linear",
        "issue",
        {"issue_key": "X-1"},
        cost=cost(0.0, 1, avoided_cost_usd=-5.0, deterministic_steps=-3, llm_steps=-1, metadata=["a"]),
    )
    completed = h.events("merge_captain", "persona.value.run_completed")[0].payload
    assert completed["metadata"]["run_cost_metadata"] == ["a"]
    assert completed["llm_steps"] == 0
    assert not h.events("merge_captain", "persona.value.deterministic_execution")


def test_receipt_fields_for_each_gate_outcome():
    h = Harness()
    h.bind(merge_captain(daily_usd=0.01))
    completed = h.trigger("merge_captain", "github", "pull_request", PR, cost=cost(0.005, 1))
    assert (completed.status, completed.queued, completed.error) == ("completed", False, None)
    assert completed.run_id and completed.lease and completed.budget_receipt_id
    duplicate = h.trigger("merge_captain", "github", "pull_request", PR)
    assert (duplicate.status, duplicate.lease, duplicate.run_id, duplicate.error) == ("duplicate", None, None, None)
    exhausted = h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}, cost=cost(0.02, 1))
    assert (exhausted.status, exhausted.error, exhausted.lease) == (
        "budget_exhausted",
        "persona budget exhausted: daily_usd",
        None,
    )
    h.control("merge_captain", "pause")
    queued = h.trigger("merge_captain", "linear", "issue", {"issue_key": "B"})
    assert (queued.status, queued.queued, queued.run_id, queued.lease, queued.budget_receipt_id) == (
        "queued",
        True,
        None,
        None,
        None,
    )
    h.control("merge_captain", "disable")
    dead = h.trigger("merge_captain", "linear", "issue", {"issue_key": "C"})
    assert (dead.status, dead.queued, dead.error) == ("dead_lettered", False, "persona is disabled")
    for receipt in (completed, duplicate, exhausted, queued, dead):
        assert receipt.persona == "merge_captain" and receipt.work_key and receipt.receipt_id.startswith("rcpt_")


def test_gate_events_carry_the_specified_payloads():
    h = Harness()
    h.bind(merge_captain(daily_usd=0.01))
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "A"}, cost=cost(0.02, 3))
    exhausted = h.events("merge_captain", "persona.budget.exhausted")[0].payload
    assert set(exhausted) == {"receipt_id", "reason", "attempted_cost_usd", "attempted_tokens", "persona"}
    assert (exhausted["reason"], exhausted["attempted_cost_usd"], exhausted["attempted_tokens"]) == (
        "daily_usd",
        0.02,
        3,
    )
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "B"})
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "B"})
    assert set(h.events("merge_captain", "persona.trigger.duplicate")[0].payload) == {"work_key", "envelope", "reason"}
    h.control("merge_captain", "pause")
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "C"}, cost=cost(0.001, 1))
    queued = h.events("merge_captain", "persona.trigger.queued")[0].payload
    assert set(queued) == {"work_key", "envelope", "cost", "reason"} and queued["reason"] == "paused"
    assert queued["cost"]["cost_usd"] == 0.001
    h.control("merge_captain", "disable")
    h.trigger("merge_captain", "linear", "issue", {"issue_key": "D"})
    assert h.events("merge_captain", "persona.trigger.dead_lettered")[0].payload["reason"] == "disabled"
    assert h.events("merge_captain", "persona.control.paused")[0].payload == {
        "paused_at_ms": T0,
        "policy": "queue_then_drain_on_resume",
    }
    assert h.events("merge_captain", "persona.control.disabled")[0].payload == {"disabled_at_ms": T0}


def test_outbox_sequence_is_gap_free_and_ids_derive_from_stream_and_seq():
    h = Harness()
    h.bind(merge_captain())
    for n in range(5):
        h.trigger("merge_captain", "github", "pull_request", {"repository": "r", "number": str(n)}, cost=cost(0.001, 1))
    events = h.events("merge_captain")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(
        e.event_id == ids.event_id("persona:merge_captain", e.seq) and e.stream == "persona:merge_captain"
        for e in events
    )


def test_the_same_inbox_gives_the_same_outputs_every_time():
    def run() -> list:
        h = Harness()
        h.bind(merge_captain())
        h.trigger("merge_captain", "webhook", "ping", {}, request_id="w1")
        h.control("merge_captain", "pause", T0 + 5, command_id="c1")
        h.trigger("merge_captain", "github", "pull_request", PR, cost=cost(0.01, 2), at_ms=T0 + 6, request_id="g1")
        h.control("merge_captain", "resume", T0 + 7, command_id="c2")
        return [(o.role, o.key, o.value_bytes()) for o in h.outputs]

    assert run() == run()


def test_external_dispatch_registers_the_run_before_executors_see_it():
    h = Harness()
    binding = replace(merge_captain(), execution="external", estimated_run_usd=0.001)
    h.bind(binding)
    receipt = h.trigger("merge_captain", "github", "pull_request", PR)
    assert receipt.status == "dispatched" and receipt.lease is not None
    registered = [o for o in h.outputs if o.role == "run_inbox"]
    dispatched = [o for o in h.outputs if o.role == "dispatch"]
    assert len(registered) == 1 and len(dispatched) == 1
    assert registered[0].phase < dispatched[0].phase
    assert isinstance(registered[0].value, RunRegistered) and isinstance(dispatched[0].value, RunDispatch)
    dispatch = dispatched[0].value
    assert (dispatch.run_id, dispatch.lease_id, dispatch.attempt, dispatch.action) == (
        receipt.run_id,
        receipt.lease.id,
        1,
        "start",
    )
    assert dispatch.deadline_ms == receipt.lease.expires_at_ms
    assert dispatch.envelope.subject_key == receipt.work_key
    assert [e.kind for e in h.events("merge_captain")][-4:] == [
        "persona.lease.acquired",
        "persona.run.started",
        "persona.value.run_started",
        "persona.budget.reserved",
    ]
    assert [e.kind for e in h.run_events(receipt.run_id)] == ["run.dispatched"]
    assert h.status("merge_captain").state == "running"


def test_schedule_times_are_rfc3339_in_receipts_and_status():
    h = Harness()
    h.bind(merge_captain())
    at = parse_rfc3339_ms("2026-04-24T12:30:00.250Z")
    h.trigger("merge_captain", "github", "pull_request", PR, at_ms=at)
    assert h.status("merge_captain").last_run == "2026-04-24T12:30:00.25Z"
