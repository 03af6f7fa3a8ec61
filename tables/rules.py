"""Policy rules: what a binding's rules decide about a dispatch or a tool step (pure).

:func:`evaluate` is pure: a :class:`Subject` (what is about to happen) and the binding's
:class:`~streams.wire.Policy` give a :class:`Decision`. Every rule whose ``match`` holds
takes part; the strongest effect wins (deny > redact > allow; no rule matched: allow).
The decision's ``reasons`` are those of the winning effect's rules (a rule without a
reason gets ``"rule N: EFFECT"``), ``decisions`` lists every rule that matched, and a
redaction's ``patches`` replace the metadata values at its rules' ``redact_keys``.

Neither the preview nor the reasons ever show a metadata value: a decision is published,
and the values a policy redacts are exactly those that must not be.

:func:`scope` is what a capability token grants: the policy's effect on each tool its
rules name and on any other, decided for a run's attempt before any of its tool steps.
:mod:`tables.policy` publishes decisions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from streams.records import PolicyBoundary, PolicyEffect
from streams.redaction import REDACTED, redact
from streams.wire import Policy, PolicyMatch, PolicyScope, TriggerEnvelope

from .runstate import RunRow

#: The error of work, or a run, that a policy denied.
POLICY_DENIED = "policy_denied"
#: The pack label of a policy that names none.
BASELINE = "baseline"
#: Effect precedence: the strongest of the matching rules' effects decides.
PRIORITY: dict[str, int] = {"allow": 0, "redact": 2, "deny": 4}
#: Snippets of decisions kept in a summary.
SUMMARY_SNIPPETS = 3


@dataclass(frozen=True, slots=True)
class Subject:
    """What a decision is about: a dispatch (or inline work) or a tool step of a run."""

    boundary: PolicyBoundary
    provider: str
    kind: str
    workflow: str
    metadata: Mapping[str, str]
    estimated_usd: float
    attempt: int
    slo_tier: str | None
    run_kind: str
    tool: str | None = None
    step_id: str | None = None


class RuleDecision(msgspec.Struct, kw_only=True):
    """One rule that matched: ``policy`` is ``PACK#INDEX``."""

    policy: str
    effect: str
    reason: str | None = None
    patches: list[dict[str, str]] = []


class Decision(msgspec.Struct, kw_only=True):
    boundary: str
    pack: str
    effect: PolicyEffect
    reasons: list[str]
    decisions: list[RuleDecision]
    patches: list[dict[str, str]]
    #: Metadata keys the redaction masks (those the work carries).
    redact_keys: list[str]
    preview: str
    summary: str


def dominant(effects: Iterable[str]) -> str:
    """The strongest effect; ``allow`` for none."""
    return max(effects, key=PRIORITY.__getitem__, default="allow")


def summarize(decisions: Iterable[Decision]) -> str:
    """Each decision's reasons (its preview when it has none); the first three joined by
    ``"; "``; with no snippet, the dominant effect's label."""
    decisions = list(decisions)
    snippets: list[str] = []
    for decision in decisions:
        snippets.extend(decision.reasons or ([decision.preview] if decision.preview else []))
    return _joined(snippets) or dominant(d.effect for d in decisions)


def _joined(snippets: list[str]) -> str:
    """The first snippets of a summary, joined ("" for none)."""
    return "; ".join(snippets[:SUMMARY_SNIPPETS])


def matches(match: PolicyMatch, subject: Subject) -> bool:
    """Every condition ``match`` gives holds for ``subject``."""
    # One test per condition, cheapest first (evaluated before every dispatch).
    if match.boundary is not None and match.boundary != subject.boundary:
        return False
    if match.provider is not None and match.provider != subject.provider:
        return False
    if match.kind is not None and match.kind != subject.kind:
        return False
    if match.workflow is not None and match.workflow != subject.workflow:
        return False
    if match.slo_tier is not None and match.slo_tier != subject.slo_tier:
        return False
    if match.run_kind is not None and match.run_kind != subject.run_kind:
        return False
    if match.tool is not None and match.tool != subject.tool:
        return False
    metadata = subject.metadata
    if match.metadata and any(metadata.get(key) != value for key, value in match.metadata.items()):
        return False
    if match.metadata_present and any(key not in metadata for key in match.metadata_present):
        return False
    if match.min_estimated_usd is not None and subject.estimated_usd < match.min_estimated_usd:
        return False
    return match.min_attempt is None or subject.attempt >= match.min_attempt


def pointer(key: str) -> str:
    """The JSON pointer of a metadata key (``~`` and ``/`` escaped)."""
    return "/metadata/" + key.replace("~", "~0").replace("/", "~1")


def preview(subject: Subject) -> str:
    """What was decided, in a line (names only, never a metadata value)."""
    text = f"{subject.boundary} {subject.provider}/{subject.kind} -> {subject.workflow}"
    return text if subject.tool is None else f"{text} tool {subject.tool}"


def evaluate(policy: Policy, subject: Subject) -> Decision:
    """The decision of ``policy``'s rules about ``subject`` (pure)."""
    pack = policy.pack or BASELINE
    matched: list[RuleDecision] = []
    keys: dict[str, None] = {}  # ordered, without repeats
    for index, rule in enumerate(policy.rules):
        if not matches(rule.match, subject):
            continue
        patches = []
        if rule.effect == "redact":
            for key in rule.redact_keys:
                if key in subject.metadata:
                    patches.append({"op": "replace", "path": pointer(key), "value": REDACTED})
                    keys[key] = None
        matched.append(
            RuleDecision(
                policy=f"{pack}#{index}", effect=rule.effect, reason=rule.reason or f"rule {index}: {rule.effect}",
                patches=patches,
            )
        )  # fmt: skip
    effect: PolicyEffect = dominant(d.effect for d in matched)  # type: ignore[assignment]
    reasons = list(dict.fromkeys(d.reason for d in matched if d.effect == effect and d.reason))
    redacting = effect == "redact"
    patches = list({p["path"]: p for d in matched for p in d.patches}.values()) if redacting else []
    decision = Decision(
        boundary=subject.boundary,
        pack=pack,
        effect=effect,
        reasons=reasons,
        decisions=matched,
        patches=patches,
        redact_keys=list(keys) if redacting else [],
        preview=(shown := preview(subject)),
        # summarize([decision]) without the list: its reasons, else its preview (never empty)
        summary=_joined(reasons or [shown]),
    )
    return decision


def masked(envelope: TriggerEnvelope, keys: Iterable[str]) -> TriggerEnvelope:
    """``envelope`` with the values at ``keys`` of every ``metadata`` mapping in it redacted
    (as a binding's ``redact_metadata_keys`` are): what a run carries after a redaction,
    and so what every later output about it shows, its dispatches included."""
    wanted = frozenset(keys)
    if not wanted:
        return envelope
    return msgspec.convert(redact(envelope, wanted), TriggerEnvelope)


# ------------------------------------------------------------------ subjects


def of_work(
    envelope: TriggerEnvelope,
    workflow: str,
    estimated_usd: float,
    slo_tier: str | None,
    *,
    attempt: int = 1,
    run_kind: str = "work",
    boundary: PolicyBoundary = "dispatch",
    tool: str | None = None,
    step_id: str | None = None,
) -> Subject:
    """The dispatch of work, or (``boundary="tool"``) a step of it that calls ``tool``."""
    return Subject(
        boundary=boundary,
        provider=envelope.provider,
        kind=envelope.kind,
        workflow=workflow,
        metadata=envelope.metadata,
        estimated_usd=estimated_usd,
        attempt=attempt,
        slo_tier=slo_tier,
        run_kind=run_kind,
        tool=tool,
        step_id=step_id,
    )


def of_run(run: RunRow, estimated_usd: float) -> Subject:
    """A run's dispatch."""
    return _of(run, estimated_usd, "dispatch", None, None)


def of_tool(run: RunRow, estimated_usd: float, tool: str | None, step_id: str | None = None) -> Subject:
    """A run's step that calls ``tool`` (None: any tool no rule names)."""
    return _of(run, estimated_usd, "tool", tool, step_id)


def _of(run: RunRow, usd: float, boundary: PolicyBoundary, tool: str | None, step_id: str | None) -> Subject:
    slo = run.scheduling.slo
    return of_work(
        run.envelope,
        run.entry_workflow,
        usd,
        slo.tier if slo is not None else None,
        attempt=run.attempt,
        run_kind=run.kind,
        boundary=boundary,
        tool=tool,
        step_id=step_id,
    )


def scope(policy: Policy | None, run: RunRow) -> PolicyScope | None:
    """What ``policy`` lets ``run``'s attempt do with tools, for its capability token: the
    effect on each tool a rule names and on any other tool (None: no rules).

    A tool adapter does not know the run's reservation, so every cost condition counts as
    met: the scope is never wider than what the policy decides at the tool step itself."""
    if policy is None or not policy.rules:
        return None
    named = sorted({rule.match.tool for rule in policy.rules if rule.match.tool is not None})
    return PolicyScope(
        pack=policy.pack or BASELINE,
        tools={tool: evaluate(policy, of_tool(run, math.inf, tool)).effect for tool in named},
        other_tools=evaluate(policy, of_tool(run, math.inf, None)).effect,
    )
