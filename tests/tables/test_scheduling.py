"""The step scheduler of seed 004, through the pure persona transition: SLO ranking, in-flight
backpressure, deadlines, breakpoints, checkpoints handed on, cancellable queued work."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from streams import records, wire
from streams.inbox import ControlReceived, TriggerReceived
from tables.dispatch import step_slo
from tables.queue import rank
from tables.runstate import RunRow
from tables.state import PersonaState, Scheduling

from .harness import T0
from .test_execution import P, Runs, runner


def slo(**fields: Any) -> Any:
    return wire.from_model(records.Slo.model_validate(fields))


def queued_trigger(h: Runs, number: int, *, at_ms: int, priority: int = 0, **fields: Any) -> Any:
    """A trigger for PR ``number`` with the given scheduling fields (slo, deadline_at_ms, debug)."""
    request = wire.from_model(
        records.TriggerRequest.model_validate(
            {
                "request_id": f"req-{number}",
                "persona": P,
                "provider": "github",
                "kind": "pull_request",
                "metadata": {"repository": "r", "number": str(number)},
                "priority": priority,
                **fields,
            }  # fmt: skip
        )
    )
    outputs = h.feed(TriggerReceived(at_ms=at_ms, request=request))
    return h.receipts_in(outputs, f"req-{number}")[-1]


def started_runs(h: Runs) -> list[str]:
    """Request ids in the order their runs were dispatched."""
    return [r.request_id for r in h.receipts() if r.status == "dispatched"]


# -------------------------------------------------------------------- 004.5 SLO


def test_seed_004_test_1_build_step_slo_includes_queue_observations():
    run = RunRow(run_id="r", persona=P, request_id="q", work_key="k", envelope=wire.TriggerEnvelope(
        provider="p", kind="k", subject_key="k", received_at_ms=0), entry_workflow="wf", root_run_id="r",
        created_at_ms=T0, priority=5, queued_at_ms=T0 - 1500,
        scheduling=Scheduling(slo=slo(tier="gold", queue_target_ms=1000, priority_boost=3, error_budget_ratio=0.25)),
    )  # fmt: skip
    built = step_slo(run, T0)
    assert built is not None
    assert (built.tier, built.queue_target_ms, built.slack_ms, built.priority_boost, built.error_budget_ratio) == (
        "gold", 1000, -500, 3, 0.25)  # fmt: skip
    assert built.observed_queue_ms >= 1500
    assert step_slo(msgspec.structs.replace(run, scheduling=Scheduling()), T0) is None  # no SLO, no StepSlo


def test_seed_004_test_2_slo_scores_prioritize_breaches_over_healthy_steps():
    target = slo(queue_target_ms=2000)
    now = T0
    breached = rank(target, 0, now - 4000, 1)  # waited 4,000: slack < 0
    healthy = rank(target, 0, now - 100, 2)  # waited 100: slack > 0
    assert breached < healthy


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (rank(None, 5, T0, 2), rank(None, 1, T0, 1)),  # without contracts: priority 5 first
        (rank(slo(queue_target_ms=60_000), 0, T0, 2), rank(None, 100, T0, 1)),  # a contract first, even healthy
    ],
)
def test_seed_004_5_additional_acceptance_cases(first, second):
    assert first < second


def test_breached_queued_work_is_dispatched_first_and_counted_as_a_preemption():
    h = Runs()
    holder = h.start(runner()).run_id  # holds the lease: what follows queues
    queued_trigger(h, 2, at_ms=T0 + 1, priority=9)  # no SLO, queued first
    queued_trigger(h, 3, at_ms=T0 + 2, slo={"tier": "gold", "queue_target_ms": 1000})
    h.say(holder, "completed", at_ms=T0 + 5000)  # the lease frees at 5,000: req-3's SLO is breached
    assert started_runs(h) == ["req-1", "req-3"]
    dispatch = [d for d in h.dispatches() if d.action == "start"][-1]
    assert dispatch.slo is not None and dispatch.slo.slack_ms == 1000 - (5000 - 2) and dispatch.slo.tier == "gold"
    assert h.head().preemptions == 1
    assert h.run_events(dispatch.run_id, "run.dispatched")[0].payload["slo"]["preempted"] is True


def test_retries_and_queued_triggers_are_ranked_in_one_order():
    h = Runs()
    run = h.start(runner(retry={"backoff_ms": 10})).run_id
    queued_trigger(h, 2, at_ms=T0 + 1, priority=5)
    h.say(run, "failed", error="flaky", at_ms=T0 + 2)  # the retry waits, the queued trigger takes the lease
    assert started_runs(h) == ["req-1", "req-2"]
    later = h.dispatches(run)[-1]
    assert later.action == "start" and later.attempt == 1  # the retry has not been dispatched
    h.tick(P, T0 + 100)
    assert [d.attempt for d in h.dispatches(run) if d.action == "start"] == [1]  # still behind req-2's run


# ----------------------------------------------------------- 004.9.2 backpressure


def test_seed_004_test_7_a_dispatch_over_the_in_flight_cost_is_deferred_never_refused():
    h = Runs()
    b = runner(estimated_run_usd=0.5, max_inflight_cost_usd=1.0, backpressure_ms=20)
    parent = h.start(b).run_id  # 0 + 0.5 <= 1.0
    h.say(parent, "spawn", child_key="a", entry_workflow="wf/a")  # 0.5 + 0.5 <= 1.0: runs
    h.say(parent, "spawn", child_key="b", entry_workflow="wf/b")  # 1.0 + 0.5 > 1.0: deferred
    a, b_ = h.run(parent)["children"]
    deferred = h.run(b_)
    assert (deferred["status"], deferred["attempt"], deferred["blocked"]) == ("ready", 1, "backpressure")
    assert deferred["not_before_ms"] == T0 + 20 and deferred["ledger"] == []  # nothing reserved
    assert [e.kind for e in h.run_events(b_)] == ["run.deferred"]
    h.say(a, "completed", at_ms=T0 + 5)  # in-flight spend falls: the deferred child runs
    assert h.run(b_)["status"] == "dispatched"


def test_a_deferred_child_whose_reservation_alone_breaks_the_new_binding_fails_at_its_turn():
    h = Runs()
    parent = h.start(runner(estimated_run_usd=0.5, max_inflight_cost_usd=1.0, backpressure_ms=20)).run_id
    h.say(parent, "spawn", child_key="a", entry_workflow="wf/a")
    h.say(parent, "spawn", child_key="b", entry_workflow="wf/b")  # deferred by backpressure
    _, b_ = h.run(parent)["children"]
    h.bind(runner(estimated_run_usd=0.4, budget={"daily_usd": 0.3}), at_ms=T0 + 1)  # 0.4 alone breaks the day
    h.tick(P, T0 + 30)
    assert (h.run(b_)["status"], h.run(parent)["status"]) == ("failed", "running")
    assert h.head().ready_children == []


def test_a_trigger_over_the_in_flight_limit_is_queued_with_reason_backpressure():
    h = Runs()
    first = h.start(runner(estimated_run_usd=0.4)).run_id
    h.say(first, "spawn", child_key="bg", entry_workflow="wf/bg", background=True)
    h.say(first, "completed", at_ms=T0 + 1)  # the background child keeps 0.4 in flight
    h.bind(runner(estimated_run_usd=0.4, max_inflight_cost_usd=0.5, backpressure_ms=1000), at_ms=T0 + 1)
    receipt = queued_trigger(h, 2, at_ms=T0 + 2)
    assert (receipt.status, receipt.error, receipt.not_before_ms) == ("queued", "backpressure", T0 + 1002)
    assert h.head().budget.reserved_usd == pytest.approx(0.4)
    [child] = h.run(first)["children"]
    h.say(child, "completed", at_ms=T0 + 3)
    assert h.receipts("req-2")[-1].status == "dispatched"


# ------------------------------------------------------------------- 004.6 deadline


def test_work_past_its_deadline_fails_deadline_exceeded_without_a_dispatch():
    h = Runs()
    holder = h.start(runner(deadline_ms=1000)).run_id
    queued_trigger(h, 2, at_ms=T0 + 1)  # binding: 1,000 ms after its event time
    queued_trigger(h, 3, at_ms=T0 + 2, deadline_at_ms=T0 + 60_000)  # the trigger's own wins
    h.say(holder, "completed", at_ms=T0 + 5000)
    failed = h.receipts("req-2")[-1]
    assert (failed.status, failed.error) == ("failed", "deadline_exceeded")
    assert h.events(P, "persona.trigger.deadline_exceeded")[0].payload["deadline_at_ms"] == T0 + 1001
    assert h.receipts("req-3")[-1].status == "dispatched"
    assert h.dispatches()[-1].deadline_at_ms == T0 + 60_000


def test_a_retry_past_its_deadline_ends_the_run_without_another_attempt():
    h = Runs()
    run = h.start(runner(deadline_ms=1000, retry={"backoff_ms": 5000})).run_id
    h.say(run, "failed", error="flaky", at_ms=T0 + 10)
    h.tick(P, T0 + 5010)
    detail = h.run(run)
    assert (detail["status"], detail["error"], detail["attempt"]) == ("failed", "deadline_exceeded", 2)
    assert [d.attempt for d in h.dispatches(run) if d.action == "start"] == [1]


# ---------------------------------------------------------------- 004.7 breakpoints


def test_a_breakpoint_pauses_the_run_at_the_named_step_once_and_resume_continues():
    h = Runs()
    run = h.start(runner()).run_id
    h.run_control(P, run, "break", content={"step": "review"})
    h.say(run, "step_started", step_id="s1", name="build")
    assert h.run(run)["status"] == "running"
    h.say(run, "step_started", step_id="s2", name="review")
    detail = h.run(run)
    assert detail["status"] == "paused" and detail["active_pause"]["step"] == "review"
    paused = h.run_events(run, "run.paused")[-1].payload
    assert (paused["reason"], paused["step"]) == ("breakpoint", "review")
    assert h.dispatches(run)[-1].action == "pause"
    h.tick(P, T0 + 10 * 300_000)  # a run paused at a step keeps its lease
    assert h.events(P, "persona.lease.expired") == []
    h.run_control(P, run, "resume", at_ms=T0 + 10 * 300_000)
    assert h.run(run)["status"] == "running" and h.run(run)["active_pause"] is None
    h.say(run, "step_started", step_id="s3", name="review", at_ms=T0 + 10 * 300_000)  # one-shot
    assert h.run(run)["status"] == "running"


def test_binding_breakpoints_arm_every_run_and_clear_breaks_disarms_one():
    h = Runs()
    run = h.start(runner(debug={"breakpoints": ["deploy", "review"]})).run_id
    h.run_control(P, run, "clear_breaks")
    h.say(run, "step_started", step_id="deploy")
    assert h.run(run)["status"] == "running"


# ----------------------------------------------------------- 004.12-13 checkpoints


def test_a_retry_dispatch_carries_the_last_checkpoint_and_every_start_an_idempotency_key():
    h = Runs()
    run = h.start(runner(retry={"backoff_ms": 0})).run_id
    first = h.dispatches(run)[0]
    assert (first.idempotency_key, first.checkpoint) == (f"{run}:1", None)
    h.say(run, "checkpoint", payload={"completed_steps": 2})
    h.say(run, "failed", error="flaky")
    h.tick(P, T0)
    again = [d for d in h.dispatches(run) if d.action == "start"][-1]
    assert (again.attempt, again.idempotency_key, again.checkpoint) == (2, f"{run}:2", {"completed_steps": 2})


# ----------------------------------------------------------------- 003.7.1 cancel


def test_queued_work_is_cancelled_by_work_key_or_request_id_and_an_unknown_target_is_rejected():
    h = Runs()
    h.start(runner())
    queued_trigger(h, 2, at_ms=T0 + 1)
    queued_trigger(h, 3, at_ms=T0 + 2)
    by_key = wire.from_model(records.ControlCommand.model_validate(
        {"command_id": "c1", "persona": P, "action": "cancel", "actor": "ops",
         "target": {"work_key": "github:r:pr:2"}}))  # fmt: skip
    h.feed(ControlReceived(at_ms=T0 + 3, command=by_key))
    assert (h.receipts("req-2")[-1].status, h.receipts("c1")[-1].status) == ("cancelled", "completed")
    by_request = msgspec.structs.replace(by_key, command_id="c2", target=wire.CancelTarget(request_id="req-3"))
    h.feed(ControlReceived(at_ms=T0 + 4, command=by_request))
    assert h.receipts("req-3")[-1].status == "cancelled"
    unknown = msgspec.structs.replace(by_key, command_id="c3", target=wire.CancelTarget(request_id="nope"))
    h.feed(ControlReceived(at_ms=T0 + 5, command=unknown))
    assert h.receipts("c3")[-1].status == "rejected"
    assert h.status(P).queued_events == 0 and PersonaState(h.store.transaction(), P).head().queue.count == 0


# ------------------------------------------------------------------- 004.9 budget


def test_seed_004_test_17_a_budget_denial_is_recorded_in_the_receipt_and_the_outbox():
    h = Runs()
    refused = h.start(runner(budget={"max_tokens": 10}, run_limits={"max_tokens": 20}))
    assert (refused.status, refused.error) == ("budget_exhausted", "persona budget exhausted: max_tokens")
    [exhausted] = h.events(P, "persona.budget.exhausted")
    assert (exhausted.payload["reason"], exhausted.payload["attempted_tokens"]) == ("max_tokens", 20)
