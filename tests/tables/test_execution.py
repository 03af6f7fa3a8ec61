"""External runs through the pure persona transition: states, leases, fencing, budget
reservation and reconciliation, limits, retries, compensation, children, run control,
transcript, queries and redaction."""

from __future__ import annotations

from typing import Any

import pytest

from streams.redaction import REDACTED
from tables import runviews
from tables.children import inbox_execution_ids
from tables.runstate import TRANSCRIPT_KEPT, RunState
from tables.state import PersonaState

from .harness import T0, Harness, binding, cost

P = "builder"


def runner(**fields: Any) -> Any:
    """An external persona with no budget limits unless given."""
    return binding(name=P, execution="external", entry_workflow="wf/build", **fields)


class Runs(Harness):
    """The harness, plus an executor's view of the runs it was given."""

    def start(self, binding_: Any = None, *, number: int = 1, at_ms: int = T0, request_id: str | None = None):
        if binding_ is not None:
            self.bind(binding_)
        return self.trigger(
            P,
            "github",
            "pull_request",
            {"repository": "r", "number": str(number)},
            at_ms=at_ms,
            request_id=request_id or f"req-{number}",
        )

    def lease(self, run_id: str) -> str:
        """The lease of the run's latest dispatch, as the executor got it."""
        return [d for d in self.dispatches(run_id) if d.action == "start"][-1].lease_id

    def say(self, run_id: str, kind: str, *, at_ms: int = T0, lease_id: str | None = None, **fields: Any):
        return self.report(P, run_id, lease_id or self.lease(run_id), kind, at_ms=at_ms, **fields)

    def run(self, run_id: str) -> dict[str, Any]:
        detail = runviews.run_detail(RunState(PersonaState(self.store.transaction(), P)), run_id)
        assert detail is not None
        return detail

    def kinds_of(self, run_id: str) -> list[str]:
        return [e.kind for e in self.run_events(run_id)]

    def budget(self):
        return self.status(P).budget

    def head(self):
        return PersonaState(self.store.transaction(), P).head()


# ------------------------------------------------------------------ state machine


def test_a_run_goes_dispatched_running_paused_running_waiting_running_completed():
    h = Runs()
    run = h.start(runner()).run_id
    assert h.run(run)["status"] == "dispatched"
    h.say(run, "started")
    assert h.run(run)["status"] == "running"
    h.run_control(P, run, "pause")
    assert h.run(run)["status"] == "paused"
    h.run_control(P, run, "resume")
    h.say(run, "waiting", name="approval")
    assert h.run(run)["status"] == "waiting"
    h.say(run, "input_received", name="approval", payload={"ok": True})
    h.say(run, "completed", cost=cost(0.01, 10))
    assert h.kinds_of(run) == [
        "run.dispatched",
        "run.started",
        "run.paused",
        "run.resumed",
        "run.waiting",
        "run.input_received",
        "run.completed",
        "run.bom",
    ]
    assert [e.seq for e in h.run_events(run)] == list(range(1, 9))  # gap-free per run stream
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "completed"]


def test_invalid_transitions_are_rejected_with_a_reason_on_the_run_stream():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "started")
    rejected = h.run_control(P, run, "resume", command_id="r1")
    [receipt] = h.receipts_in(rejected, "r1")
    assert receipt.status == "rejected" and "cannot be resumed (only a paused one)" in receipt.error
    assert h.run_events(run)[-1].kind == "run.control_rejected"
    h.run_control(P, run, "pause")
    h.say(run, "started")  # start a paused run
    assert h.run_events(run)[-1].kind == "run.report_rejected"
    assert "a paused run cannot start again" in h.run_events(run)[-1].payload["reason"]
    h.say(run, "input_received")  # only a waiting run takes input
    assert "only a waiting one takes input" in h.run_events(run)[-1].payload["reason"]
    assert h.run(run)["status"] == "paused"


def test_steps_are_tracked_and_their_outputs_bounded():
    h = Runs()
    run = h.start(runner()).run_id
    for n in range(25):
        h.say(run, "step_started", step_id=f"s{n}", name="tool")
        h.say(run, "step_completed", step_id=f"s{n}", output={"n": n})
    h.say(run, "step_started", step_id="last")
    detail = h.run(run)
    assert (detail["steps"], detail["current_step_id"]) == (26, "last")
    assert list(detail["step_outputs"]) == [f"s{n}" for n in range(5, 25)]  # the latest 20


def test_completed_then_cancel_answers_with_the_first_terminal_event():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "completed", cost=cost(0.01, 1))
    first = h.run(run)["terminal_event_id"]
    outputs = h.run_control(P, run, "cancel", command_id="late")
    [receipt] = h.receipts_in(outputs, "late")
    assert (receipt.status, receipt.event_id) == ("rejected", first)
    assert [o for o in outputs if o.role == "dlq"] == []
    assert [k for k in h.kinds_of(run) if k in ("run.completed", "run.cancelled")] == ["run.completed"]


def test_cancel_then_completed_gives_one_terminal_event_and_keeps_the_late_spend():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "usage", tokens=5, cost_usd=0.002)
    h.run_control(P, run, "cancel", reason="wrong PR")
    first = h.run(run)["terminal_event_id"]
    h.say(run, "completed", cost=cost(0.003, 9))
    late = h.run_events(run)[-1]
    assert late.kind == "run.report_rejected" and late.payload["terminal_event_id"] == first
    assert [k for k in h.kinds_of(run) if k in ("run.completed", "run.cancelled")] == ["run.cancelled"]
    assert h.budget().spent_today_usd == pytest.approx(0.003)  # the final cost, reported late, is kept
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "cancelled"]


# ------------------------------------------------------------------------ leases


def test_a_run_longer_than_three_lease_ttls_completes_while_it_heartbeats():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000)).run_id
    for n in range(1, 8):
        h.tick(P, T0 + n * 600)
        h.say(run, "heartbeat", at_ms=T0 + n * 600)
    assert h.status(P).active_lease.expires_at_ms == T0 + 7 * 600 + 1000
    h.say(run, "completed", at_ms=T0 + 4300, cost=cost(0.0, 0))
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "completed"]
    assert h.events(P, "persona.lease.expired") == []


def test_a_paused_run_keeps_its_lease():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000)).run_id
    h.run_control(P, run, "pause")
    h.tick(P, T0 + 5000)
    assert h.events(P, "persona.lease.expired") == []
    assert h.status(P, T0 + 5000).active_lease is not None
    h.run_control(P, run, "resume", at_ms=T0 + 5001)
    h.say(run, "completed", at_ms=T0 + 5500)
    assert h.receipts("req-1")[-1].status == "completed"


def test_seed_004_16_an_expired_lease_is_requeued_and_then_succeeds_with_attempt_1():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000, retry={"backoff_ms": 0})).run_id
    first = h.lease(run)
    h.tick(P, T0 + 1000)
    assert h.lease(run) != first
    h.say(run, "completed", at_ms=T0 + 1100)
    detail = h.run(run)
    assert (detail["status"], detail["attempt"], detail["dispatches"]) == ("completed", 1, 2)
    assert [a["status"] for a in detail["ledger"]] == ["expired", "completed"]


def test_a_silent_executor_exhausts_its_expiries_and_compensation_runs_once():
    h = Runs()
    b = runner(
        lease_ttl_ms=1000, retry={"max_attempts": 3, "backoff_ms": 100, "factor": 2.0}, compensation_workflow="wf/undo"
    )
    run = h.start(b).run_id
    now = T0
    for _ in range(6):
        now += 1500
        h.tick(P, now)
    detail = h.run(run)
    assert detail["status"] == "expired" and detail["expiries"] == 3 and detail["attempt"] == 1
    assert "expired 3 times" in detail["error"]
    retrying = [r for r in h.receipts("req-1") if r.status == "retrying"]
    assert [r.not_before_ms - r.at_ms for r in retrying] == [100, 200]  # backoff
    assert h.receipts("req-1")[-1].status == "failed"
    compensation = [d for d in h.dispatches() if d.kind == "compensation" and d.action == "start"]
    assert len(compensation) == 1 and compensation[0].entry_workflow == "wf/undo"
    assert compensation[0].parent_run_id == run


def test_binding_can_expire_the_run_instead_of_requeueing_it():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000, on_lease_expiry="expire")).run_id
    h.tick(P, T0 + 1000)
    assert h.run(run)["status"] == "expired"
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "failed"]


# ----------------------------------------------------------------------- fencing


def test_a_report_with_a_stale_lease_is_fenced_on_the_run_stream():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "completed", lease_id="persona_lease_old")
    [rejected] = h.run_events(run, "run.report_rejected")
    assert rejected.payload["reason"].startswith("stale lease") and rejected.payload["lease_id"] == "persona_lease_old"
    assert h.run(run)["status"] == "dispatched"


def test_a_report_for_an_unknown_run_of_the_persona_is_dead_lettered():
    h = Runs()
    h.start(runner())
    outputs = h.report(P, "nope", "l", "heartbeat")
    [letter] = [o for o in outputs if o.role == "dlq"]
    assert ("reason", "unknown_run") in letter.headers


def test_redelivered_reports_are_dropped_forever_not_only_recent_ones():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "usage", event_id="u-0", tokens=1, cost_usd=0.001)
    for n in range(1, 200):
        h.say(run, "heartbeat", event_id=f"hb-{n}")
    assert h.say(run, "usage", event_id="u-0", tokens=1, cost_usd=0.001) == []
    assert h.run(run)["usage_tokens"] == 1


# ------------------------------------------------------------------------ budget


def test_dispatch_reserves_and_gates_count_reservations_until_the_run_reconciles():
    h = Runs()
    h.bind(runner(estimated_run_usd=0.4, budget={"daily_usd": 1.0}))
    first = h.start(number=1).run_id
    assert h.budget().remaining_today_usd == pytest.approx(0.6)
    h.say(first, "spawn", child_key="tests", entry_workflow="wf/test")
    assert h.budget().remaining_today_usd == pytest.approx(0.2)
    blocked = h.start(number=2)
    assert blocked.status == "budget_exhausted" and "daily_usd" in blocked.error
    child = h.run(first)["children"][0]
    h.say(child, "completed", cost=cost(0.05, 1))
    waiting = h.start(number=3)
    assert waiting.status == "lease_busy" and waiting.queued  # the budget fits again; the lease is busy
    h.say(first, "completed", cost=cost(0.1, 1))
    assert h.receipts("req-3")[-1].status == "dispatched"
    assert h.budget().spent_today_usd == pytest.approx(0.15)
    assert h.head().budget.reserved_usd == pytest.approx(0.4)  # the new run's reservation


def test_usage_accrues_as_reported_and_the_final_cost_settles_the_ledger():
    h = Runs()
    run = h.start(runner(estimated_run_usd=0.05)).run_id
    h.say(run, "usage", tokens=10, cost_usd=0.01)
    h.say(run, "usage", tokens=20, cost_usd=0.02)
    assert h.budget().spent_today_usd == pytest.approx(0.03)
    h.say(run, "completed", cost=cost(0.025, 28))
    [attempt] = h.run(run)["ledger"]
    assert (attempt["reserved_usd"], attempt["actual_usd"], attempt["actual_tokens"], attempt["status"]) == (
        0.05,
        0.025,
        28,
        "completed",
    )
    assert h.budget().spent_today_usd == pytest.approx(0.025)
    reconciled = h.events(P, "persona.budget.reconciled")[-1].payload
    assert (reconciled["reserved_usd"], reconciled["actual_usd"]) == (0.05, 0.025)
    assert h.head().budget.reserved_usd == 0.0


def test_no_spend_is_lost_cancelled_failed_expired_or_late():
    h = Runs()
    b = runner(lease_ttl_ms=1000, retry={"max_attempts": 1}, budget={})
    run = h.start(b, number=1).run_id
    h.say(run, "usage", tokens=1, cost_usd=0.001)
    h.run_control(P, run, "cancel")  # cancelled: usage so far
    run = h.start(number=2, at_ms=T0 + 1).run_id
    h.say(run, "failed", error="x", cost=cost(0.002, 2), at_ms=T0 + 2)  # failed: final cost
    run = h.start(number=3, at_ms=T0 + 3).run_id
    h.say(run, "usage", tokens=3, cost_usd=0.003, at_ms=T0 + 4)
    h.tick(P, T0 + 2000)  # expired
    h.say(run, "usage", tokens=4, cost_usd=0.004, at_ms=T0 + 2001)  # late, on the expired lease
    head = h.head()
    assert head.budget.spent_total_usd == pytest.approx(0.010)
    state = RunState(PersonaState(h.store.transaction(), P))
    ledgers = [state.run(state.indexed(n)) for n in range(head.runs)]
    assert sum(a.actual_usd for r in ledgers for a in r.ledger) == pytest.approx(head.budget.spent_total_usd)


def test_seed_004_13_reservation_granted_denied_and_unlimited():
    h = Runs()
    h.bind(runner(estimated_run_usd=1.0, budget={"daily_usd": 10.0, "max_tokens": 100}, run_limits={"max_tokens": 10}))
    granted = h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, request_id="g")
    assert granted.status == "dispatched"
    reserved = h.events(P, "persona.budget.reserved")[-1].payload
    assert (reserved["reserved_usd"], reserved["reserved_tokens"]) == (1.0, 10)
    h2 = Runs()
    h2.bind(runner(estimated_run_usd=20.0, budget={"daily_usd": 10.0}))
    denied = h2.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, request_id="d")
    assert denied.status == "budget_exhausted" and "daily_usd" in denied.error
    h3 = Runs()
    h3.bind(runner())  # no estimate, no limits: nothing reserved, nothing tracked
    assert h3.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}).status == "dispatched"
    assert h3.events(P, "persona.budget.reserved") == []


def test_seed_004_14_a_zero_reservation_sees_the_budget_already_used():
    h = Runs()
    run = h.start(runner(budget={"daily_usd": 5.0})).run_id
    h.say(run, "completed", cost=cost(2.5, 20))
    nxt = h.start(number=2, at_ms=T0 + 1)
    assert nxt.status == "dispatched"
    budget = h.budget()
    assert (budget.spent_today_usd, budget.remaining_today_usd, budget.tokens_today) == (2.5, 2.5, 20)


# ------------------------------------------------------------------------ limits


def test_seed_001_a_warning_once_when_limits_near_their_threshold():
    h = Runs()
    run = h.start(runner(run_limits={"max_steps": 5, "warn_ratio": 0.6})).run_id
    for n in range(4):
        h.say(run, "step_started", step_id=f"s{n}")
    warnings = h.run_events(run, "run.limit_warning")
    assert len(warnings) == 1 and warnings[0].payload == {"limit": "max_steps", "value": 3, "max": 5, "warn_ratio": 0.6}
    assert h.run(run)["status"] == "running"


def test_max_tokens_gives_one_warning_then_limit_exceeded():
    h = Runs()
    run = h.start(runner(run_limits={"max_tokens": 100})).run_id
    h.say(run, "usage", tokens=85)
    h.say(run, "usage", tokens=5)
    assert len(h.run_events(run, "run.limit_warning")) == 1
    h.say(run, "usage", tokens=20)
    detail = h.run(run)
    assert (detail["status"], detail["error"]) == ("failed", "limit_exceeded:max_tokens")
    assert h.dispatches(run)[-1].action == "cancel" and h.dispatches(run)[-1].reason == "limit_exceeded:max_tokens"
    assert h.receipts("req-1")[-1].status == "failed"


def test_duration_is_checked_by_ticks():
    h = Runs()
    run = h.start(runner(lease_ttl_ms=60_000, run_limits={"max_duration_ms": 10_000})).run_id
    assert h.head().timers["runs"] == T0 + 8000
    h.tick(P, T0 + 8000)
    assert [e.kind for e in h.run_events(run, "run.limit_")] == ["run.limit_warning"]
    h.tick(P, T0 + 10_001)
    assert h.run(run)["error"] == "limit_exceeded:max_duration_ms"


# ----------------------------------------------------------------------- retries


def test_a_failed_attempt_is_retried_with_backoff_then_succeeds():
    h = Runs()
    run = h.start(runner(retry={"max_attempts": 3, "backoff_ms": 1000, "factor": 2.0})).run_id
    h.say(run, "failed", error="flaky", at_ms=T0 + 10)
    retrying = h.receipts("req-1")[-1]
    assert (retrying.status, retrying.attempt, retrying.not_before_ms, retrying.error) == (
        "retrying",
        2,
        T0 + 1010,
        "flaky",
    )
    assert h.status(P, T0 + 10).active_lease is None  # released meanwhile
    assert h.head().timers["runs"] == T0 + 1010
    h.tick(P, T0 + 1010)
    again = h.receipts("req-1")[-1]
    assert (again.status, again.attempt) == ("dispatched", 2)
    assert h.dispatches(run)[-1].attempt == 2
    h.say(run, "completed", at_ms=T0 + 1100)
    assert [r.status for r in h.receipts("req-1")] == ["dispatched", "retrying", "dispatched", "completed"]


def test_seed_004_9_compensation_is_scheduled_once_after_the_final_failure():
    h = Runs()
    run = h.start(runner(retry={"max_attempts": 1}, compensation_workflow="wf/undo")).run_id
    h.say(run, "failed", error="boom")
    detail = h.run(run)
    assert detail["status"] == "failed" and detail["compensation_run_id"]
    assert "run.compensation_scheduled" in h.kinds_of(run)
    [dispatch] = [d for d in h.dispatches() if d.kind == "compensation"]
    assert (dispatch.entry_workflow, dispatch.parent_run_id, dispatch.envelope.subject_key) == (
        "wf/undo",
        run,
        "github:r:pr:1",
    )
    comp = detail["compensation_run_id"]
    h.say(comp, "failed", error="undo failed too", retryable=False)
    assert len([d for d in h.dispatches() if d.kind == "compensation"]) == 1  # no compensation of a compensation


def test_seed_004_10_compensation_executes_and_records_its_ledger():
    h = Runs()
    run = h.start(runner(retry={"max_attempts": 1}, estimated_run_usd=1.5, compensation_workflow="wf/undo")).run_id
    h.say(run, "failed", error="primary")
    comp = h.run(run)["compensation_run_id"]
    h.say(comp, "usage", tokens=5, cost_usd=0.25)
    h.say(comp, "completed")
    assert [(a["status"], a["reserved_usd"]) for a in h.run(run)["ledger"]] == [("failed", 1.5)]
    [ledger] = h.run(comp)["ledger"]
    assert (
        ledger["status"],
        ledger["attempt"],
        ledger["reserved_usd"],
        ledger["actual_usd"],
        ledger["actual_tokens"],
    ) == ("completed", 1, 1.5, 0.25, 5)


def test_seed_004_8_a_checkpoint_from_the_executor_is_kept_with_the_run():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "checkpoint", payload={"state": 42})
    h.say(run, "completed")
    assert h.run(run)["checkpoint"] == {"state": 42} and h.run(run)["status"] == "completed"


# ---------------------------------------------------------------------- children


@pytest.mark.parametrize(
    ("spawn_mode", "inherit", "parent", "expected"),
    [
        (None, False, None, ["own"]),  # no spawn mode
        ("inline", False, "exec_parent", ["own"]),  # inline
        ("child", False, "exec_parent", ["own"]),  # child, isolated
        ("child", True, "exec_parent_inherit", ["own", "exec_parent_inherit"]),  # child, inherits
        ("child", True, None, ["own"]),  # inherits but has no parent
        ("child", False, "exec_background_parent", ["own"]),  # background, isolated
        ("child", True, "exec_background_parent", ["own", "exec_background_parent"]),  # background, inherits
    ],
)
def test_seed_001_inbox_execution_ids(spawn_mode, inherit, parent, expected):
    assert inbox_execution_ids("own", spawn_mode, inherit, parent) == expected


def test_a_spawned_child_runs_under_the_parents_lease_and_keeps_it_alive():
    h = Runs()
    parent = h.start(runner(lease_ttl_ms=1000)).run_id
    h.say(parent, "started")
    h.say(parent, "spawn", child_key="lint", entry_workflow="wf/lint", spawn_mode="child", inherit_inbox=True)
    [child] = h.run(parent)["children"]
    dispatch = h.dispatches(child)[0]
    assert (dispatch.kind, dispatch.parent_run_id, dispatch.entry_workflow) == ("child", parent, "wf/lint")
    h.say(child, "heartbeat", at_ms=T0 + 900)  # a child's reports renew the persona's lease
    assert h.status(P, T0 + 900).active_lease.expires_at_ms == T0 + 1900
    h.say(child, "completed", at_ms=T0 + 950)
    assert h.dispatches(parent)[-1].action == "child_completed"
    assert h.run(child)["status"] == "completed" and h.run(parent)["status"] == "running"


def test_seed_004_11_a_failed_parent_cancels_its_children_but_not_background_ones():
    h = Runs()
    parent = h.start(runner(retry={"max_attempts": 1})).run_id
    h.say(parent, "spawn", child_key="fg", entry_workflow="wf/a")
    h.say(parent, "spawn", child_key="bg", entry_workflow="wf/b", background=True)
    fg, bg = h.run(parent)["children"]
    h.say(parent, "failed", error="boom")
    assert h.run(fg)["status"] == "cancelled" and h.run(bg)["status"] == "dispatched"
    assert h.dispatches(fg)[-1].action == "cancel"


def test_control_reaches_inheriting_descendants_and_cancel_spares_background_children():
    h = Runs()
    parent = h.start(runner()).run_id
    h.say(parent, "spawn", child_key="a", entry_workflow="wf/a", inherit_inbox=True)
    h.say(parent, "spawn", child_key="b", entry_workflow="wf/b", inherit_inbox=False)
    h.say(parent, "spawn", child_key="c", entry_workflow="wf/c", inherit_inbox=True, background=True)
    a, b, c = h.run(parent)["children"]
    h.say(a, "spawn", child_key="a1", entry_workflow="wf/a1", inherit_inbox=True)
    [a1] = h.run(a)["children"]
    h.run_control(P, parent, "guidance", content="prefer small diffs")
    reached = {d.run_id for d in h.dispatches() if d.action == "guidance"}
    assert reached == {parent, a, a1, c}
    h.run_control(P, parent, "cancel")
    assert {r: h.run(r)["status"] for r in (a, b, c, a1)} == {
        a: "cancelled",
        b: "cancelled",
        c: "dispatched",
        a1: "cancelled",
    }


def test_a_spawn_beyond_the_budget_is_refused_and_the_parent_told():
    h = Runs()
    parent = h.start(runner(estimated_run_usd=0.6, budget={"daily_usd": 1.0})).run_id
    h.say(parent, "spawn", child_key="x", entry_workflow="wf/x")
    assert h.run(parent)["children"] == []
    assert h.dispatches(parent)[-1].action == "spawn_rejected"
    assert h.run_events(parent)[-1].payload["reason"] == "budget:daily_usd"


def test_a_handoff_becomes_a_trigger_for_the_target_persona_with_its_origin():
    h = Runs()
    run = h.start(runner()).run_id
    outputs = h.say(
        run, "handoff", event_id="h1", target_persona="reviewer", task="review the PR", name="review", payload={"pr": 1}
    )
    [forward] = [o for o in outputs if o.role == "persona_inbox"]
    request = forward.value.request
    assert forward.key == "reviewer" and (request.provider, request.kind, request.raw) == (
        "handoff",
        "review",
        {"pr": 1},
    )
    assert request.metadata["source_persona"] == P and request.metadata["parent_run_id"] == run


# ------------------------------------------------------------- control, transcript


def test_run_control_is_recorded_forwarded_and_answered():
    h = Runs()
    run = h.start(runner()).run_id
    for action in ("checkpoint", "compact", "guidance", "evidence", "a2a"):
        outputs = h.run_control(P, run, action, command_id=f"c-{action}", content={"say": action})
        [receipt] = h.receipts_in(outputs, f"c-{action}")
        assert receipt.status == "completed" and receipt.event_id == h.run_events(run)[-1].event_id
        assert h.dispatches(run)[-1].action == action and h.dispatches(run)[-1].content == {"say": action}
    assert [e["kind"] for e in runviews.transcript(RunState(PersonaState(h.store.transaction(), P)), run)["items"]] == [
        "guidance",
        "evidence",
        "a2a",
    ]
    again = h.run_control(P, run, "guidance", command_id="c-guidance", content="x")
    assert h.receipts_in(again, "c-guidance")[0].status == "completed"  # a redelivered command: the same answer
    assert len([d for d in h.dispatches(run) if d.action == "guidance"]) == 1


def test_seed_002_transcript_projection_is_bounded_and_paged():
    h = Runs()
    run = h.start(runner()).run_id
    h.run_control(P, run, "guidance", content="hello")
    h.say(run, "message", name="assistant", payload="note")
    h.run_control(P, run, "guidance", content="again")
    state = RunState(PersonaState(h.store.transaction(), P))
    page = runviews.transcript(state, run, 0, 2)
    assert (page["total_items"], page["next_start"], page["has_more"]) == (3, 2, True)
    assert page["items"][0]["content"] == "hello" and page["items"][1]["kind"] == "message"
    assert runviews.transcript(state, run, 2, 2)["next_start"] is None
    assert runviews.transcript(state, run, 5, 2)["items"] == []
    with pytest.raises(runviews.LimitTooLarge, match="maximum 100"):
        runviews.transcript(state, run, 0, runviews.MAX_TRANSCRIPT_ITEMS + 1)


def test_the_transcript_drops_old_entries_past_its_bound_and_says_so():
    h = Runs()
    run = h.start(runner()).run_id
    for n in range(TRANSCRIPT_KEPT + 5):
        h.say(run, "message", payload=n)
    page = runviews.transcript(RunState(PersonaState(h.store.transaction(), P)), run, 0, 3)
    assert (page["dropped"], page["items"][0]["index"], page["items"][0]["content"]) == (5, 5, 5)


def test_seed_002_event_cursor_paging():
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "started")
    h.say(run, "heartbeat")
    state = RunState(PersonaState(h.store.transaction(), P))
    page = runviews.run_events(state, run, 1, 2)
    assert [e["kind"] for e in page["events"]] == ["run.dispatched", "run.started"] and page["has_more"]
    page = runviews.run_events(state, run, page["next_cursor"], 2)
    assert [e["kind"] for e in page["events"]] == ["run.heartbeat"] and not page["has_more"]
    empty = runviews.run_events(state, run, 1, 0)
    assert (empty["events"], empty["next_cursor"], empty["has_more"]) == ([], 1, True)
    beyond = runviews.run_events(state, run, 99, 5)
    assert (beyond["events"], beyond["has_more"]) == ([], False)
    assert runviews.run_events(state, run, 1, runviews.MAX_EVENT_BATCH)["events"]
    with pytest.raises(runviews.LimitTooLarge):
        runviews.run_events(state, run, 1, runviews.MAX_EVENT_BATCH + 1)


def test_a_personas_runs_are_listed_newest_first_in_pages():
    h = Runs()
    h.bind(runner())
    ids = []
    for n in range(5):
        receipt = h.trigger(P, "github", "pull_request", {"repository": "r", "number": str(n)}, at_ms=T0 + n)
        ids.append(receipt.run_id)
        h.say(receipt.run_id, "completed", at_ms=T0 + n)
    state = PersonaState(h.store.transaction(), P)
    page = runviews.persona_runs(state, None, 2)
    assert [r["run_id"] for r in page["runs"]] == ids[:-3:-1] and page["has_more"]
    rest = runviews.persona_runs(state, page["next_cursor"], 10)
    assert [r["run_id"] for r in rest["runs"]] == ids[2::-1] and not rest["has_more"]
    with pytest.raises(runviews.LimitTooLarge):
        runviews.persona_runs(state, None, runviews.MAX_RUN_PAGE + 1)


# --------------------------------------------------------------------- redaction


def test_redacted_metadata_never_leaves_the_pipeline_except_in_the_dispatch():
    h = Runs()
    h.bind(runner(redact_metadata_keys=["token"]))
    h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1", "token": "s3cret"}, request_id="a")
    queued = h.trigger(
        P, "github", "pull_request", {"repository": "r", "number": "2", "token": "s3cret"}, request_id="b"
    )
    assert queued.queued
    published = b"".join(o.raw or b"" for o in h.outputs if o.role in ("outbox", "receipts", "status", "dlq"))
    assert b"s3cret" not in published and REDACTED.encode() in published
    assert b"s3cret" not in h.status(P).model_dump_json().encode()
    assert h.dispatches()[0].envelope.metadata["token"] == "s3cret"
    run = h.receipts("a")[0].run_id
    assert h.run(run)["envelope"]["metadata"]["token"] == REDACTED


# ------------------------------------------------------------------- decisions


def test_reports_of_other_runs_never_expire_the_lease_by_their_time():
    """Decision 14: a report of another run (here a background child), carrying a time past
    the lease holder's expiry, does not expire it; the holder's renewal still on its way
    keeps it; a tick does. A fenced report (its run is over) does not even move the clock."""
    h = Runs()
    first = h.start(runner(lease_ttl_ms=1000)).run_id
    h.say(first, "completed", at_ms=T0 + 10)
    second = h.start(number=2, at_ms=T0 + 100).run_id
    h.say(first, "heartbeat", at_ms=T0 + 5000)  # fenced: the run is over
    assert h.head().clock_ms == T0 + 100
    h.say(second, "spawn", child_key="bg", entry_workflow="wf/bg", background=True, at_ms=T0 + 200)
    [child] = h.run(second)["children"]
    h.say(child, "heartbeat", at_ms=T0 + 5000)  # accepted: the clock moves, the lease stays
    assert h.head().clock_ms == T0 + 5000
    assert h.events(P, "persona.lease.expired") == []
    h.say(second, "heartbeat", at_ms=T0 + 900)  # handled at the persona clock, T0 + 5000
    assert h.status(P, T0 + 5000).active_lease.expires_at_ms == T0 + 6000
    h.tick(P, T0 + 6000)
    assert len(h.events(P, "persona.lease.expired")) == 1


def test_steps_count_across_attempts():
    """Decision 15: ``steps`` (and ``max_steps``) bound the run, not one attempt."""
    h = Runs()
    run = h.start(runner(retry={"backoff_ms": 0})).run_id
    h.say(run, "step_started", step_id="a")
    h.say(run, "step_started", step_id="b")
    h.say(run, "failed", error="flaky")
    h.tick(P, T0)
    h.say(run, "step_started", step_id="a")
    detail = h.run(run)
    assert (detail["attempt"], detail["steps"], detail["current_step_id"]) == (2, 3, "a")


def test_a_fenced_report_records_its_spend_on_its_own_dispatch():
    """Decision 16: a report under an old lease changes nothing but the spend it reports."""
    h = Runs()
    run = h.start(runner(lease_ttl_ms=1000, retry={"backoff_ms": 0})).run_id
    old = h.lease(run)
    h.tick(P, T0 + 1000)  # expired and dispatched again
    h.say(run, "usage", lease_id=old, at_ms=T0 + 1100, tokens=7, cost_usd=0.25)
    detail = h.run(run)
    assert h.kinds_of(run)[-1] == "run.report_rejected"
    assert [(a["status"], a["actual_usd"]) for a in detail["ledger"]] == [("expired", 0.25), ("running", 0.0)]
    assert h.budget().spent_today_usd == pytest.approx(0.25)
