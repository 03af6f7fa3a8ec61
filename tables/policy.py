"""Policy decisions, published: a binding's rules (:mod:`tables.rules`) decide each
dispatch and each tool step, and :func:`judge` publishes the decision:
``run.policy_decision`` on the run's stream (work without a run, inline work:
``persona.policy.decision`` on the persona's), and for a denial also
``persona.policy.denied`` (the denials metric counts those, by summary).
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import runlog
from .rules import Decision, Subject, evaluate
from .runstate import RunRow
from .step import Step


def judge(
    step: Step,
    subject: Subject,
    run: RunRow | None = None,
    *,
    run_id: str | None = None,
    work_key: str | None = None,
) -> Decision | None:
    """The binding's decision about ``subject``, published (None: the binding has no policy).
    ``run``: the run it is about (its stream gets the decision); else inline work (``run_id``
    its run's id, None when denied: the run never exists)."""
    policy = step.binding.policy
    if policy is None:
        return None
    decision = evaluate(policy, subject)
    payload = record(decision, subject, step.now, step.persona)
    if run is not None:
        run_id, work_key = run.run_id, run.work_key
        payload["run_id"] = run_id
        runlog.emit(step, run, "run.policy_decision", payload)
    else:
        if decision.effect == "deny":
            run_id = None
        payload["run_id"] = run_id
        step.emit("persona.policy.decision", {**payload, "work_key": work_key}, run_id)
    if decision.effect == "deny":
        step.emit(
            "persona.policy.denied",
            {
                "run_id": run_id,
                "work_key": work_key,
                "boundary": decision.boundary,
                "pack": decision.pack,
                "reason": decision.summary,
                "step_id": subject.step_id,
                "tool": subject.tool,
            },
            run_id,
        )
    return decision


def record(decision: Decision, subject: Subject, now: int, persona: str) -> dict[str, Any]:
    """The published record of a decision (the rule set's origin is the persona's binding)."""
    payload: dict[str, Any] = msgspec.to_builtins(decision)
    payload.pop("redact_keys")
    payload.update(
        step_id=subject.step_id,
        tool=subject.tool,
        attempt=subject.attempt,
        timestamp=now,
        origins=[f"binding:{persona}"],
    )
    return payload
