"""Capability tokens in the pure layer (a report presenting another run's or attempt's
token is fenced) and the run's bill of materials (``run.bom``)."""

from __future__ import annotations

from streams import capability, wire
from tables.bom import LIST_CAP, digest

from .harness import T0, cost
from .test_execution import Runs, runner


def token(run_id: str, attempt: int = 1) -> str:
    """A token with these claims; the pipeline reads claims only, so any signature does."""
    claims = capability.Claims(
        kid="k",
        sub=run_id,
        attempt=attempt,
        persona="builder",
        lease="l",
        aud=capability.AUDIENCE,
        scope={"workflow": "wf/build"},
        iat=T0,
        exp=T0 + capability.TTL_MS,
    )
    return capability.assemble(capability.signing_input(claims), b"\0" * 64)


def test_a_dispatch_carries_its_issue_time_and_no_token_before_the_worker_signs_it() -> None:
    h = Runs()
    run = h.start(runner(), at_ms=T0).run_id
    (dispatch,) = h.dispatches(run)
    assert dispatch.issued_at_ms == T0 and dispatch.capability is None
    assert capability.expiry(T0, dispatch.deadline_ms) == min(T0 + capability.TTL_MS, dispatch.deadline_ms)


def test_a_report_presenting_its_own_runs_token_is_accepted() -> None:
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "started", capability=token(run))
    assert h.run(run)["status"] == "running"
    assert "run.report_rejected" not in h.kinds_of(run)


def test_a_report_presenting_another_runs_or_attempts_token_is_fenced() -> None:
    h = Runs()
    run = h.start(runner()).run_id
    other = "run-of-another-persona"
    h.say(run, "started")
    for presented, why in ((token(other), f"run {other} attempt 1"), (token(run, 2), f"run {run} attempt 2")):
        h.say(run, "completed", capability=presented, cost=cost(0.01, 5))
        rejected = h.run_events(run, "run.report_rejected")[-1].payload
        assert rejected["kind"] == "completed" and why in rejected["reason"]
        assert h.run(run)["status"] == "running"  # nothing else changed
    h.say(run, "usage", capability="not-a-token", tokens=1)
    assert "unreadable capability token" in h.run_events(run, "run.report_rejected")[-1].payload["reason"]
    h.say(run, "completed", capability=token(run), cost=cost(0.01, 5))
    assert h.run(run)["status"] == "completed"


def test_a_finished_run_has_one_bom_with_what_its_executor_reported() -> None:
    h = Runs()
    run = h.start(runner(retry={"max_attempts": 2, "backoff_ms": 1})).run_id
    first = h.lease(run)
    h.say(run, "started", executor=wire.ExecutorIdentity(id="exec-a", version="1.2"), model="model-x")
    h.say(run, "step_started", step_id="s1", tool="search")
    h.say(run, "checkpoint", payload={"state": 42})
    h.say(run, "usage", tokens=7, cost_usd=0.02, model="model-x")
    h.say(run, "failed", error="boom", retryable=True)
    h.tick("builder", T0 + 10_000)
    second = h.lease(run)
    assert second != first
    h.say(run, "started", lease_id=second, executor=wire.ExecutorIdentity(id="exec-b"), model="model-y")
    h.say(run, "completed", lease_id=second, cost=cost(0.5, 100))
    kinds = h.kinds_of(run)
    assert kinds[-2:] == ["run.completed", "run.bom"] and kinds.count("run.bom") == 1
    bom = h.run_events(run, "run.bom")[0].payload
    assert bom["workflow"] == "wf/build" and bom["status"] == "completed"
    assert [(a["lease_id"], a["status"], a["executor"]) for a in bom["attempts"]] == [
        (first, "retry_scheduled", {"id": "exec-a", "version": "1.2"}),
        (second, "completed", {"id": "exec-b"}),
    ]
    assert [(a["tokens"], a["cost_usd"]) for a in bom["attempts"]] == [(7, 0.02), (100, 0.5)]
    assert bom["models"] == ["model-x", "model-y"] and bom["tools"] == ["search"]
    assert bom["checkpoints"] == [{"seq": bom["checkpoints"][0]["seq"], "sha256": digest({"state": 42})}]
    assert bom["policy_decisions"] == [] and bom["children"] == [] and bom["truncated"] == {}


def test_a_bom_keeps_its_lists_bounded() -> None:
    h = Runs()
    run = h.start(runner()).run_id
    h.say(run, "started")
    for i in range(LIST_CAP + 5):
        h.say(run, "checkpoint", payload={"i": i})
        h.say(run, "step_started", step_id=f"s{i}", tool=f"tool-{i}")
    h.say(run, "completed", cost=cost(0.0, 0))
    bom = h.run_events(run, "run.bom")[0].payload
    assert len(bom["checkpoints"]) == LIST_CAP and len(bom["tools"]) == LIST_CAP
    assert bom["truncated"] == {"checkpoints": LIST_CAP + 5, "tools": LIST_CAP + 5}
