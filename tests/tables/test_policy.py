"""Policy decisions (seed 004.20): the pure evaluator's effect algebra, and the decisions
through the persona transition — before every dispatch, on tool steps, deny and redact."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given as examples
from hypothesis import settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams import records, wire
from streams.redaction import REDACTED
from tables import policy
from tables.rules import POLICY_DENIED, Subject, evaluate, summarize

from .harness import T0, binding, cost
from .test_execution import P, Runs, runner

SECRET = "s3cret"


def rules(*rules: dict[str, Any], pack: str | None = None) -> Any:
    """A validated policy as the pipeline carries it."""
    given: dict[str, Any] = {"rules": list(rules)}
    if pack is not None:
        given["pack"] = pack
    return wire.from_model(records.Policy.model_validate(given))


def subject(**changes: Any) -> Subject:
    fields: dict[str, Any] = {
        "boundary": "dispatch",
        "provider": "github",
        "kind": "pull_request",
        "workflow": "wf/build",
        "metadata": {"repository": "r", "env": "prod", "token": SECRET},
        "estimated_usd": 0.5,
        "attempt": 1,
        "slo_tier": "gold",
        "run_kind": "work",
    }
    fields.update(changes)
    return Subject(**fields)


def start(h: Runs, rules_: list[dict[str, Any]], metadata: dict[str, str] | None = None, **binding_: Any) -> Any:
    h.bind(runner(policy={"pack": "ops", "rules": rules_}, **binding_))
    given = {"repository": "r", "number": "1", "token": SECRET, **(metadata or {})}
    return h.trigger(P, "github", "pull_request", given, request_id="req-1")


# ------------------------------------------------------------------ effect algebra


def test_no_rules_or_none_matching_allow_summarized_by_the_preview():
    for given in (rules(), rules({"match": {"provider": "slack"}, "effect": "deny"})):
        decision = evaluate(given, subject())
        assert (decision.effect, decision.reasons, decision.decisions) == ("allow", [], [])
        assert decision.summary == decision.preview == "dispatch github/pull_request -> wf/build"
        assert decision.pack == "baseline"


def test_precedence_is_deny_over_redact_over_allow_whatever_the_rule_order():
    allow = {"match": {}, "effect": "allow", "reason": "fine"}
    redact = {"match": {}, "effect": "redact", "reason": "mask", "redact_keys": ["token"]}
    deny = {"match": {}, "effect": "deny", "reason": "blocked"}
    assert evaluate(rules(deny, redact, allow), subject()).effect == "deny"
    assert evaluate(rules(allow, redact), subject()).effect == "redact"
    assert evaluate(rules(allow), subject()).effect == "allow"
    decision = evaluate(rules(allow, redact, deny, pack="ops"), subject())
    # every match is a decision; the reasons and summary are the winning effect's
    assert [(d.policy, d.effect) for d in decision.decisions] == [
        ("ops#0", "allow"),
        ("ops#1", "redact"),
        ("ops#2", "deny"),
    ]
    assert (decision.reasons, decision.summary, decision.patches, decision.redact_keys) == (
        ["blocked"],
        "blocked",
        [],
        [],
    )


def test_several_redactions_merge_their_patches_and_the_summary_keeps_three_reasons():
    given = rules(
        *({"match": {}, "effect": "redact", "reason": f"r{i}", "redact_keys": ["token", "env"]} for i in range(4)),
        {"match": {}, "effect": "redact", "redact_keys": ["absent"]},
    )
    decision = evaluate(given, subject())
    assert decision.effect == "redact"
    assert decision.redact_keys == ["token", "env"]  # only keys the work carries
    assert decision.patches == [
        {"op": "replace", "path": "/metadata/token", "value": REDACTED},
        {"op": "replace", "path": "/metadata/env", "value": REDACTED},
    ]
    assert decision.reasons == ["r0", "r1", "r2", "r3", "rule 4: redact"]
    assert decision.summary == "r0; r1; r2"


def test_summary_uses_a_preview_without_reasons_and_the_dominant_label_without_snippets():
    decision = evaluate(rules({"match": {}, "effect": "deny"}), subject())
    assert decision.reasons == ["rule 0: deny"]
    quiet = policy.Decision(
        boundary="dispatch", pack="p", effect="redact", reasons=[], decisions=[], patches=[], redact_keys=[],
        preview="dispatch github/pull_request -> wf/build", summary="",
    )  # fmt: skip
    assert summarize([quiet]) == "dispatch github/pull_request -> wf/build"
    assert summarize([policy.Decision(**{**policy.msgspec.structs.asdict(quiet), "preview": ""})]) == "redact"
    assert summarize([]) == "allow"


@pytest.mark.parametrize(
    ("match", "hit"),
    [
        ({"provider": "github", "kind": "pull_request", "workflow": "wf/build"}, True),
        ({"provider": "gitlab"}, False),
        ({"metadata": {"env": "prod"}}, True),
        ({"metadata": {"env": "dev"}}, False),
        ({"metadata_present": ["token"]}, True),
        ({"metadata_present": ["missing"]}, False),
        ({"min_estimated_usd": 0.5}, True),
        ({"min_estimated_usd": 0.51}, False),
        ({"min_attempt": 1}, True),
        ({"min_attempt": 2}, False),
        ({"slo_tier": "gold"}, True),
        ({"slo_tier": "bronze"}, False),
        ({"run_kind": "child"}, False),
        ({"boundary": "tool"}, False),
        ({"tool": "shell"}, False),  # a dispatch names no tool
    ],
)
def test_match_vocabulary_every_condition_must_hold(match: dict[str, Any], hit: bool):
    decision = evaluate(rules({"match": match, "effect": "deny"}), subject())
    assert (decision.effect == "deny") is hit


def test_tool_boundary_matches_the_tool_and_the_preview_never_shows_metadata_values():
    given = rules({"match": {"boundary": "tool", "tool": "shell"}, "effect": "deny", "reason": "no shell"})
    decision = evaluate(given, subject(boundary="tool", tool="shell", step_id="s1"))
    assert (decision.effect, decision.summary) == ("deny", "no shell")
    assert decision.preview == "tool github/pull_request -> wf/build tool shell"
    assert SECRET not in str(policy.msgspec.to_builtins(decision))


@pytest.mark.parametrize(
    "hostile",
    [
        {"rules": [{"match": {}, "effect": "deny"}] * 65},  # more rules than allowed
        {"rules": [{"match": {}, "effect": "block"}]},  # an unknown effect
        {"rules": [{"match": {"provider": "x" * 257}, "effect": "deny"}]},  # an oversized label
        {"rules": [{"match": {"metadata": {f"k{i}": "v" for i in range(17)}}, "effect": "deny"}]},
        {"rules": [{"match": {"unknown": 1}, "effect": "deny"}]},  # an unknown condition
        {"rules": [{"effect": "deny", "reason": "r" * 513}]},  # an oversized reason
        {"rules": [{"effect": "deny", "redact_keys": ["token"]}]},  # keys to redact, but denying
        {"rules": [{"effect": "redact", "redact_keys": ["k" * 129]}]},
        {"rules": [{"match": {"min_attempt": 0}, "effect": "deny"}]},
        {"rules": [{"match": {"min_estimated_usd": float("nan")}, "effect": "deny"}]},
        {"rules": "deny"},
    ],
)
def test_hostile_policies_are_rejected_by_the_contract(hostile: dict[str, Any]):
    with pytest.raises(ValidationError):
        records.Policy.model_validate(hostile)


def test_hostile_metadata_keys_are_escaped_in_patches():
    given = rules({"match": {}, "effect": "redact", "redact_keys": ["a/b~c"]})
    decision = evaluate(given, subject(metadata={"a/b~c": SECRET}))
    assert decision.patches[0]["path"] == "/metadata/a~1b~0c"


# ------------------------------------------------------------------ through the transition


def test_seed_004_test_5_deny_decision_blocks_execution():
    """Decisions 39 and 40: a denied trigger is never dispatched: the work fails
    ``policy_denied``, the run ends ``failed`` without an attempt spent or compensation,
    the decision is on the run stream and the denial on the persona's."""
    h = Runs()
    receipt = start(h, [{"match": {}, "effect": "deny", "reason": "blocked"}])
    assert (receipt.status, receipt.error) == ("failed", POLICY_DENIED)
    assert h.dispatches() == []
    run_id = receipt.run_id
    assert h.kinds_of(run_id)[:2] == ["run.policy_decision", "run.failed"]
    decision, failed = h.run_events(run_id)[:2]
    assert (decision.payload["effect"], decision.payload["reasons"], decision.payload["boundary"]) == (
        "deny",
        ["blocked"],
        "dispatch",
    )
    assert (failed.payload["error"], failed.payload["attempt"]) == (POLICY_DENIED, 1)
    assert h.run(run_id)["ledger"] == []  # no dispatch, nothing reserved
    [denied] = h.events(P, "persona.policy.denied")
    assert (denied.payload["reason"], denied.payload["run_id"]) == ("blocked", run_id)
    assert h.events(P, "persona.compensation") == []  # a denial is not compensated
    assert h.status(P).active_lease is None


def test_seed_004_test_12_redact_decision_logs_and_allows():
    """Decision 39, redact: the run goes on, and the masked key never shows again, its
    dispatch included."""
    h = Runs()
    receipt = start(h, [{"match": {}, "effect": "redact", "reason": "mask", "redact_keys": ["token"]}])
    assert receipt.status == "dispatched"
    run_id = receipt.run_id
    decision = h.run_events(run_id, "run.policy_decision")[0].payload
    assert (decision["effect"], decision["reasons"]) == ("redact", ["mask"])
    assert decision["patches"] == [{"op": "replace", "path": "/metadata/token", "value": REDACTED}]
    later = h.outputs.index(next(o for o in h.outputs if o.role == "dispatch"))
    h.say(run_id, "usage", tokens=10, cost_usd=0.0005, at_ms=T0 + 1)
    h.finish(P, run_id, h.lease(run_id), cost=cost(0.0005, 10), at_ms=T0 + 2)
    assert h.receipts("req-1")[-1].status == "completed"
    assert h.run(run_id)["usage_tokens"] == 10
    assert h.dispatches(run_id)[0].envelope.metadata["token"] == REDACTED
    assert all(SECRET.encode() not in (o.raw or b"") for o in h.outputs[later:])
    assert h.run(run_id)["envelope"]["metadata"]["token"] == REDACTED


def test_seed_004_test_3_a_decision_record_carries_the_summary_and_its_evidence():
    """The record of a decision (our form of the seed's persisted decisions): boundary,
    effect, reasons, every matched rule, patches, a preview, the summary, origins."""
    h = Runs()
    receipt = start(h, [{"match": {}, "effect": "redact", "reason": "mask", "redact_keys": ["token"]}])
    record = h.run_events(receipt.run_id, "run.policy_decision")[0].payload
    assert set(record) >= {"boundary", "run_id", "effect", "reasons", "decisions", "patches", "preview", "summary",
                           "timestamp", "origins", "pack", "attempt"}  # fmt: skip
    assert record["decisions"] == [
        {"policy": "ops#0", "effect": "redact", "reason": "mask", "patches": record["patches"]}
    ]
    assert (record["summary"], record["timestamp"], record["origins"]) == ("mask", T0, [f"binding:{P}"])


def test_seed_004_test_4_where_the_summary_is_placed_decision_and_denial():
    """The summary is the decision's ``summary`` and the denial's ``reason`` (the metric's label)."""
    h = Runs()
    reasons = [{"match": {}, "effect": "deny", "reason": f"no {i}"} for i in range(4)]
    receipt = start(h, reasons)
    record = h.run_events(receipt.run_id, "run.policy_decision")[0].payload
    assert record["summary"] == "no 0; no 1; no 2"
    assert h.events(P, "persona.policy.denied")[0].payload["reason"] == record["summary"]


def test_inline_work_denied_never_runs_and_its_decision_is_on_the_persona_stream():
    """Decision 40: inline work has no run stream; denied, it never gets a run id."""
    h = Runs()
    h.bind(binding(name=P, policy={"rules": [{"match": {"metadata": {"env": "prod"}}, "effect": "deny"}]}))
    denied = h.trigger(P, "github", "push", {"env": "prod"}, cost=cost(0.01, 5), request_id="a")
    assert (denied.status, denied.error, denied.run_id) == ("failed", POLICY_DENIED, None)
    assert h.events(P, "persona.run.started") == []
    [decision] = h.events(P, "persona.policy.decision")
    assert (decision.payload["effect"], decision.payload["run_id"]) == ("deny", None)
    assert h.trigger(P, "github", "push", {"env": "dev"}, cost=cost(0.01, 5), request_id="b").status == "completed"
    assert [e.payload["effect"] for e in h.events(P, "persona.policy.decision")] == ["deny", "allow"]


def test_inline_work_redacted_masks_the_key_in_its_value_events():
    h = Runs()
    rule = {"match": {}, "effect": "redact", "redact_keys": ["token"]}
    h.bind(binding(name=P, policy={"rules": [rule]}))
    done = h.trigger(P, "github", "push", {"token": SECRET}, cost=cost(0.01, 5), request_id="a")
    assert done.status == "completed"
    kinds = [o.value.kind if o.role == "outbox" else None for o in h.outputs]
    after = h.outputs[kinds.index("persona.policy.decision") :]
    assert "persona.value.run_started" in kinds and "persona.run.completed" in kinds
    assert all(SECRET.encode() not in (o.raw or b"") for o in after)


def test_without_a_policy_nothing_is_decided_or_published():
    h = Runs()
    receipt = h.start(runner())
    assert h.run_events(receipt.run_id, "run.policy_decision") == []
    assert h.events(P, "persona.policy") == []


def test_a_retry_is_decided_again_and_min_attempt_denies_it():
    """Decision 39: every dispatch is decided, a retry's too."""
    h = Runs()
    receipt = start(
        h,
        [{"match": {"min_attempt": 2}, "effect": "deny", "reason": "one try"}],
        retry={"max_attempts": 3, "backoff_ms": 1000, "factor": 2.0},
    )
    run_id = receipt.run_id
    h.finish(P, run_id, h.lease(run_id), "failed", error="flaky", at_ms=T0 + 10)
    h.tick(P, T0 + 1010)
    last = h.receipts("req-1")[-1]
    assert (last.status, last.error) == ("failed", POLICY_DENIED)
    assert len([d for d in h.dispatches(run_id) if d.action == "start"]) == 1
    effects = [e.payload["effect"] for e in h.run_events(run_id, "run.policy_decision")]
    assert effects == ["allow", "deny"]


def test_a_denied_tool_step_cancels_the_executor_and_fails_the_run():
    """Decision 40: the executor is told to cancel; the run fails for good."""
    h = Runs()
    receipt = start(h, [{"match": {"tool": "shell"}, "effect": "deny", "reason": "no shell"}])
    run_id = receipt.run_id
    h.say(run_id, "step_started", step_id="s1", tool="browser", at_ms=T0 + 1)
    assert h.run(run_id)["status"] == "running"
    h.say(run_id, "step_started", step_id="s2", tool="shell", at_ms=T0 + 2)
    assert h.run(run_id)["status"] == "failed"
    assert h.dispatches(run_id)[-1].action == "cancel"
    assert h.receipts("req-1")[-1].error == POLICY_DENIED
    tool_decisions = [e.payload for e in h.run_events(run_id, "run.policy_decision")][1:]
    assert [(d["boundary"], d["tool"], d["step_id"], d["effect"]) for d in tool_decisions] == [
        ("tool", "browser", "s1", "allow"),
        ("tool", "shell", "s2", "deny"),
    ]
    assert h.events(P, "persona.policy.denied")[0].payload["tool"] == "shell"
    # a report after the denial is fenced: the run is over
    h.say(run_id, "completed", at_ms=T0 + 3)
    assert h.kinds_of(run_id)[-1] == "run.report_rejected"


def test_decision_39_work_waiting_for_the_budget_is_decided_once_when_it_goes():
    """Decision 39: the policy comes after the budget gate: a run the budget makes wait is
    not decided on every look, only when it is dispatched."""
    h = Runs()
    receipt = start(
        h,
        [{"match": {}, "effect": "allow", "reason": "ok"}],
        estimated_run_usd=0.5,
        budget={"hourly_usd": 0.6},
        retry={"max_attempts": 3, "backoff_ms": 10, "factor": 1.0},
    )
    run_id = receipt.run_id
    h.finish(P, run_id, h.lease(run_id), "failed", error="flaky", cost=cost(0.5, 0), at_ms=T0 + 10)
    for at in (T0 + 20, T0 + 30, T0 + 40):
        h.tick(P, at)  # the retry waits: the hour's budget cannot take another 0.5
    assert h.receipts("req-1")[-1].status == "budget_exhausted"
    assert len(h.run_events(run_id, "run.policy_decision")) == 1
    h.tick(P, T0 + 3_600_000)  # the hour turns: dispatched, and decided
    assert h.receipts("req-1")[-1].status == "dispatched"
    assert len(h.run_events(run_id, "run.policy_decision")) == 2


def test_a_queued_run_denied_after_waiting_for_the_budget_leaves_the_queue_empty():
    """Found by the state machine: a run that waited for the budget and is denied when it
    goes leaves no entry behind, and the queue's counts stay true."""
    h = Runs()
    receipt = start(
        h,
        [{"match": {"min_attempt": 2}, "effect": "deny", "reason": "one try"}],
        estimated_run_usd=0.5,
        budget={"hourly_usd": 0.6},
        retry={"max_attempts": 3, "backoff_ms": 10, "factor": 1.0},
        slo={"queue_target_ms": 1000},
    )
    run_id = receipt.run_id
    h.finish(P, run_id, h.lease(run_id), "failed", error="flaky", cost=cost(0.5, 0), at_ms=T0 + 10)
    h.tick(P, T0 + 20)
    assert h.receipts("req-1")[-1].status == "budget_exhausted"
    h.tick(P, T0 + 3_600_000)
    assert (h.receipts("req-1")[-1].status, h.receipts("req-1")[-1].error) == ("failed", POLICY_DENIED)
    index = h.head().queue
    assert (index.count, index.runs, index.waiting, index.held, index.slo) == (0, 0, 0, 0, 0)


# ------------------------------------------------------------------ a capability token's scope


def test_a_dispatch_carries_the_scope_its_policy_allows_for_the_runs_tools():
    h = Runs()
    tools = [
        {"match": {"tool": "shell"}, "effect": "deny", "reason": "no shell"},
        {"match": {"tool": "search", "workflow": "wf/other"}, "effect": "deny"},
        {"match": {"tool": "search"}, "effect": "allow"},
        {"match": {"boundary": "tool", "min_estimated_usd": 5}, "effect": "redact", "redact_keys": ["token"]},
    ]
    run = start(h, tools).run_id
    (dispatch,) = h.dispatches(run)
    # the cost condition counts as met: the scope is never wider than the tool step's decision
    assert dispatch.policy_scope == records.PolicyScope(
        pack="ops", tools={"search": "redact", "shell": "deny"}, other_tools="redact"
    )
    h2 = Runs()
    (plain,) = h2.dispatches(h2.start(runner()).run_id)
    assert plain.policy_scope is None


def _reference_matches(match: Any, s: Subject) -> bool:
    """The rule of ``matches`` as stated: every condition given holds."""
    pairs = [(match.boundary, s.boundary), (match.provider, s.provider), (match.kind, s.kind),
             (match.workflow, s.workflow), (match.slo_tier, s.slo_tier), (match.run_kind, s.run_kind),
             (match.tool, s.tool)]  # fmt: skip
    return (
        all(wanted is None or wanted == actual for wanted, actual in pairs)
        and all(s.metadata.get(k) == v for k, v in match.metadata.items())
        and all(k in s.metadata for k in match.metadata_present)
        and (match.min_estimated_usd is None or s.estimated_usd >= match.min_estimated_usd)
        and (match.min_attempt is None or s.attempt >= match.min_attempt)
    )


_word = st.sampled_from(["a", "b"])
_conditions = st.fixed_dictionaries(
    {},
    optional={
        "boundary": st.sampled_from(["dispatch", "tool"]),
        "provider": _word,
        "kind": _word,
        "tool": _word,
        "metadata": st.dictionaries(_word, _word, max_size=2),
        "metadata_present": st.lists(_word, max_size=2),
        "min_estimated_usd": st.sampled_from([0.0, 0.5, 1.0]),
        "min_attempt": st.integers(1, 3),
    },
)
_rule = st.fixed_dictionaries(
    {"match": _conditions, "effect": st.sampled_from(["allow", "deny"])},
    optional={"reason": st.sampled_from(["r1", "r2", "r3", "r4"])},
)


@settings(max_examples=300, deadline=None)
@examples(
    st.lists(_rule, max_size=6),
    st.sampled_from(["dispatch", "tool"]),
    _word,
    _word,
    st.one_of(st.none(), _word),
    st.dictionaries(_word, _word, max_size=2),
    st.sampled_from([0.0, 0.7, 2.0]),
    st.integers(1, 3),
)
def test_matching_and_the_summary_follow_their_stated_rules(given_rules, boundary, provider, kind, tool, meta, usd, n):
    policy_ = rules(*given_rules)
    s = subject(boundary=boundary, provider=provider, kind=kind, tool=tool, metadata=meta, estimated_usd=usd, attempt=n)
    decision = evaluate(policy_, s)
    expected = [i for i, rule in enumerate(policy_.rules) if _reference_matches(rule.match, s)]
    assert [d.policy for d in decision.decisions] == [f"baseline#{i}" for i in expected]
    assert decision.summary == summarize([decision])
