"""Handoff settlement through the pure persona transition: a handoff stays unsettled on
the sender until the target's final decision comes back as ``persona.handoff.acknowledged``."""

from __future__ import annotations

from typing import Any

from tables.state import HANDOFFS_OUT
from tables.unsettled import partition_unsettled

from .harness import T0, Harness, binding, cost

SENDER, TARGET = "planner", "reviewer"


class Handoffs(Harness):
    """Two personas; the sender's run hands work to the target, inbox records delivered."""

    def setup(self, target: dict[str, Any] | None = None, *, bind_target: bool = True) -> str:
        self.bind(binding(name=SENDER, execution="external", entry_workflow="wf/plan"))
        if bind_target:
            self.bind(binding(name=TARGET, entry_workflow="wf/review", **(target or {})))
        receipt = self.trigger(SENDER, "github", "pull_request", {"repository": "r", "number": "1"})
        return receipt.run_id

    def lease(self, run_id: str) -> str:
        return [d for d in self.dispatches(run_id) if d.action == "start"][-1].lease_id

    def hand_off(self, run_id: str, event_id: str = "h1", at_ms: int = T0) -> list[Any]:
        outputs = self.report(
            SENDER,
            run_id,
            self.lease(run_id),
            "handoff",
            event_id=event_id,
            target_persona=TARGET,
            task="review the PR",
            name="review",
            at_ms=at_ms,
        )
        return self.deliver(outputs)

    def deliver(self, outputs: list[Any]) -> list[Any]:
        """Feed every record sent to a persona inbox, and what that sends, until none is left."""
        delivered: list[Any] = []
        pending = [o for o in outputs if o.role == "persona_inbox"]
        while pending:
            record = pending.pop(0).value
            produced = self.feed(record)
            delivered.extend(produced)
            pending.extend(o for o in produced if o.role == "persona_inbox")
        return delivered

    def acknowledged(self) -> list[dict[str, Any]]:
        return [e.payload for e in self.events(SENDER, "persona.handoff.acknowledged")]

    def unsettled(self):
        return partition_unsettled(self.store, T0 + 10_000)


def test_a_handoff_completed_by_the_target_is_acknowledged_with_its_run():
    h = Handoffs()
    run = h.setup()
    h.hand_off(run)  # the target runs inline: a cost-free trigger completes at once
    [ack] = h.acknowledged()
    final = h.receipts(f"handoff:{run}:h1")[-1]
    assert (ack["decision"], ack["target_run_id"], ack["source_run_id"], ack["target_persona"]) == (
        "completed",
        final.run_id,
        run,
        TARGET,
    )
    assert h.run_events(run, "run.handoff_acknowledged")[0].payload["decision"] == "completed"
    assert list(h.store.items(HANDOFFS_OUT)) == [] and h.unsettled().partial_handoffs == []


def test_a_handoff_to_a_paused_target_stays_unsettled_until_its_run_finishes():
    h = Handoffs()
    run = h.setup()
    h.control(TARGET, "pause")
    h.hand_off(run)
    assert h.acknowledged() == []
    [partial] = h.unsettled().partial_handoffs
    assert (partial["id"], partial["from"], partial["to"], partial["payload_summary"], partial["age_ms"]) == (
        f"handoff://{SENDER}/h1",
        SENDER,
        TARGET,
        "review the PR",
        10_000,
    )
    h.deliver(h.control(TARGET, "resume", at_ms=T0 + 5))
    assert [a["decision"] for a in h.acknowledged()] == ["completed"]
    assert h.unsettled().partial_handoffs == []


def test_a_handoff_to_a_disabled_target_is_acknowledged_as_dead_lettered():
    h = Handoffs()
    run = h.setup()
    h.control(TARGET, "disable")
    h.hand_off(run)
    [ack] = h.acknowledged()
    assert (ack["decision"], ack["target_run_id"], ack["error"]) == ("dead_lettered", None, "persona is disabled")


def test_a_handoff_to_an_unknown_persona_is_acknowledged_as_rejected():
    h = Handoffs()
    run = h.setup(bind_target=False)
    h.hand_off(run)
    [ack] = h.acknowledged()
    assert ack["decision"] == "rejected" and "unknown persona 'reviewer'" in ack["error"]


def test_a_handoff_refused_by_the_targets_budget_is_acknowledged_as_budget_exhausted():
    h = Handoffs()
    run = h.setup({"execution": "external", "estimated_run_usd": 1.0, "budget": {"daily_usd": 0.5}})
    h.hand_off(run)
    [ack] = h.acknowledged()
    assert ack["decision"] == "budget_exhausted"


def test_an_external_target_run_settles_only_when_it_ends_and_after_its_retries():
    h = Handoffs()
    run = h.setup({"execution": "external", "retry": {"backoff_ms": 0}})
    h.hand_off(run)
    target_run = h.receipts(f"handoff:{run}:h1")[-1].run_id
    lease = h.lease(target_run)
    h.deliver(h.finish(TARGET, target_run, lease, "failed", error="flaky"))
    h.tick(TARGET, T0)
    assert h.acknowledged() == []  # retrying, then dispatched again: not final
    h.deliver(h.finish(TARGET, target_run, h.lease(target_run), cost=cost(0.01, 5)))
    [ack] = h.acknowledged()
    assert (ack["decision"], ack["target_run_id"]) == ("completed", target_run)


def test_a_repeated_settlement_notice_is_acknowledged_once():
    h = Handoffs()
    run = h.setup()
    outputs = h.report(
        SENDER, run, h.lease(run), "handoff", event_id="h1", target_persona=TARGET, task="t", name="review"
    )
    [forward] = [o for o in outputs if o.role == "persona_inbox"]
    notices = [o for o in h.feed(forward.value) if o.role == "persona_inbox"]
    h.deliver(notices)
    h.deliver(notices)
    assert len(h.acknowledged()) == 1
