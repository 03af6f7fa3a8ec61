"""Policies over a real broker, through the public topics only: a denied trigger is never
dispatched and its decision is on the outbox; a redaction masks a metadata key in every
later output about the work, the dispatch included."""

from __future__ import annotations

import json

import pytest

from ..support.personas import SELF_REPORTED, PersonaProbe

pytestmark = pytest.mark.broker

SECRET = "s3cret-value"


@pytest.fixture
def persona(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    yield probe
    probe.close()


def policy(*rules):
    return {**SELF_REPORTED, "policy": {"pack": "ops", "rules": list(rules)}}


def test_a_denied_trigger_is_never_dispatched_and_its_decision_is_on_the_outbox(persona):
    """Decisions 39 and 40."""
    persona.bind(policy({"match": {"metadata": {"env": "prod"}}, "effect": "deny", "reason": "no prod deploys"}))
    denied = persona.trigger("github", "push", {"env": "prod", "sha": "a1"})
    assert (denied["status"], denied["error"]) == ("failed", "policy_denied")
    run_id = denied["run_id"]
    [decision] = persona.wait_run_events(run_id, "run.policy_decision")
    payload = decision["payload"]
    assert (payload["effect"], payload["reasons"], payload["boundary"], payload["pack"]) == (
        "deny",
        ["no prod deploys"],
        "dispatch",
        "ops",
    )
    [denial] = persona.wait_events("persona.policy.denied")
    assert (denial["payload"]["reason"], denial["payload"]["run_id"]) == ("no prod deploys", run_id)
    assert [e["kind"] for e in persona.run_events(run_id)][:2] == ["run.policy_decision", "run.failed"]
    # the receipt and a dispatch would have been one transaction's: none was written
    persona.dispatches.catch_up()
    assert persona.dispatches_of(run_id) == []
    allowed = persona.trigger("github", "push", {"env": "dev", "sha": "a2"})
    assert allowed["status"] == "dispatched"
    assert persona.dispatch_for(allowed["run_id"])["envelope"]["metadata"]["env"] == "dev"


def test_a_redact_rule_masks_the_key_in_every_later_output_of_the_work(persona):
    persona.bind(policy({"match": {}, "effect": "redact", "redact_keys": ["token"], "reason": "mask"}))
    receipt = persona.trigger("github", "push", {"token": SECRET, "sha": "b1"})
    assert receipt["status"] == "dispatched"
    run_id = receipt["run_id"]
    dispatch = persona.dispatch_for(run_id)
    assert dispatch["envelope"]["metadata"]["token"] == "[redacted]"
    lease = dispatch["lease_id"]
    persona.report(run_id, lease, "started")
    persona.report(run_id, lease, "step_started", step_id="s1", tool="browser")
    persona.report(run_id, lease, "completed", output={"ok": True}, cost={"cost_usd": 0.01, "tokens": 10})
    assert persona.final_receipt(receipt["request_id"])["status"] == "completed"
    decisions = persona.wait_run_events(run_id, "run.policy_decision", 2)
    assert [(d["payload"]["boundary"], d["payload"]["effect"]) for d in decisions] == [
        ("dispatch", "redact"),
        ("tool", "redact"),
    ]
    persona.outbox.catch_up()
    mine = [r for r in persona.outbox.seen if r.key == persona.name]
    first = next(i for i, r in enumerate(mine) if r.value.get("kind") == "run.policy_decision")
    later = mine[first:]
    assert any(r.value["kind"] == "run.completed" for r in later)
    assert all(SECRET not in json.dumps(r.value) for r in later)
    assert all(SECRET not in json.dumps(r.value) for r in persona.receipts.seen if r.key == persona.name)
    assert all(SECRET not in json.dumps(d) for d in persona.dispatches_of(run_id))
    assert SECRET not in json.dumps(persona.status(lambda s: s["active_lease"] is None))
