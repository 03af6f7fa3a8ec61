"""The wire contract: every public record as a strict pydantic v2 model.

Field names are exact (see docs/behaviour.md for what each record means). Validation is strict:
unknown fields, wrong JSON types, NaN/infinity and oversized values are rejected, so a
producer finds out at once (the record goes to ``persona.dlq`` with the reason).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from .tracing import MAX_BAGGAGE, MAX_TRACEPARENT, MAX_TRACESTATE

#: A whole record (key + value) may not exceed this many bytes.
MAX_RECORD_BYTES = 1024 * 1024
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 4096

PERSONA_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
_PERSONA_NAME_RE = re.compile(PERSONA_NAME_PATTERN)

PersonaName = Annotated[str, StringConstraints(pattern=PERSONA_NAME_PATTERN)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE_CHARS)]
#: Upper bounds of amounts: generous, and low enough that no sum the pipeline keeps can
#: overflow (a float sum reaching infinity could not be stored as JSON).
MAX_USD = 1e12
MAX_COUNT = 2**40  # about a trillion: sums of these stay exact 64-bit integers
NonNegativeFloat = Annotated[float, Field(ge=0, le=MAX_USD)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
SignedUsd = Annotated[float, Field(ge=-MAX_USD, le=MAX_USD)]
StepCount = Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]
EpochMs = Annotated[int, Field(ge=0, le=253402300799999)]  # up to 9999-12-31


def is_persona_name(value: str) -> bool:
    return bool(_PERSONA_NAME_RE.match(value))


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_ENTRIES:
        raise ValueError(f"at most {MAX_METADATA_ENTRIES} entries allowed, got {len(value)}")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise ValueError(f"key {key[:40]!r}... is {len(key)} chars, at most {MAX_METADATA_KEY_CHARS} allowed")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"value of {key!r} is {len(item)} chars, at most {MAX_METADATA_VALUE_CHARS} allowed")
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


class Record(BaseModel):
    """Base of every contract record: strict, closed, finite numbers only."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# --------------------------------------------------------------------------- bindings


class BudgetPolicy(Record):
    """A persona's budget; ``null`` means no limit."""

    daily_usd: NonNegativeFloat | None = None
    hourly_usd: NonNegativeFloat | None = None
    run_usd: NonNegativeFloat | None = None
    max_tokens: NonNegativeInt | None = None


class RetryPolicy(Record):
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    backoff_ms: NonNegativeInt = 1000
    factor: Annotated[float, Field(ge=1.0, le=100.0)] = 2.0
    max_backoff_ms: NonNegativeInt = 300000


class RunLimits(Record):
    max_steps: NonNegativeInt | None = None
    max_tokens: NonNegativeInt | None = None
    max_cost_usd: NonNegativeFloat | None = None
    max_duration_ms: NonNegativeInt | None = None
    warn_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8


Priority = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
#: Milliseconds of a duration a binding or trigger sets (up to a year).
DurationMs = Annotated[int, Field(ge=0, le=366 * 86_400_000)]


class Slo(Record):
    """A service-level objective for queued work (seed 004.5): work with one is ranked
    before work without, breached work first, then by ascending slack
    (``queue_target_ms`` minus the time it has waited), then by priority."""

    tier: Label | None = None
    #: How long work may wait in the queue (30,000 when the block leaves it out).
    queue_target_ms: DurationMs | None = None
    #: Added to the work's priority for ranking.
    priority_boost: Priority = 0
    error_budget_ratio: Annotated[float, Field(ge=0.0, le=1.0)] | None = None


class Debug(Record):
    """Debugging aids: a run pauses when its executor reports ``step_started`` for one of
    these step names (or ids), once each."""

    breakpoints: Annotated[list[Label], Field(max_length=64)] = []


def validate_cron(expression: str) -> str:
    """A 5-field standard cron expression (minute hour day month weekday), UTC."""
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError(f"{expression!r} is not a valid 5-field cron expression (minute hour day month weekday)")
    return expression


CronExpression = Annotated[str, AfterValidator(validate_cron)]


PolicyEffect = Literal["allow", "redact", "deny"]
PolicyBoundary = Literal["dispatch", "tool"]
#: At most this many rules in a policy, and conditions of one kind in a rule's match.
MAX_POLICY_RULES = 64
MAX_POLICY_CONDITIONS = 16
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_CHARS)]
Reason = Annotated[str, StringConstraints(max_length=512)]


class PolicyMatch(Record):
    """What a policy rule applies to: every condition given must hold (an empty match
    applies to everything). Conditions read the work as its run carries it."""

    #: ``dispatch``: before a run is dispatched (or inline work runs); ``tool``: an
    #: executor's ``step_started`` report that names a tool. Absent: both.
    boundary: PolicyBoundary | None = None
    provider: Label | None = None
    kind: Label | None = None
    workflow: Label | None = None
    #: Metadata keys whose values must equal these.
    metadata: Annotated[dict[MetadataKey, Text], Field(max_length=MAX_POLICY_CONDITIONS)] = {}
    #: Metadata keys that must be present (any value).
    metadata_present: Annotated[list[MetadataKey], Field(max_length=MAX_POLICY_CONDITIONS)] = []
    #: The dispatch's reservation (inline work: the trigger's cost) is at least this.
    min_estimated_usd: NonNegativeFloat | None = None
    #: The run's attempt (1 for the first dispatch, inline work 1) is at least this.
    min_attempt: Annotated[int, Field(ge=1, le=1000)] | None = None
    slo_tier: Label | None = None
    #: The tool a step names (only the ``tool`` boundary has one).
    tool: Label | None = None
    run_kind: Literal["work", "child", "compensation"] | None = None


class PolicyRule(Record):
    """One rule: where it matches, its effect (``redact``: mask ``redact_keys``)."""

    match: PolicyMatch = PolicyMatch()
    effect: PolicyEffect
    reason: Reason | None = None
    redact_keys: Annotated[list[MetadataKey], Field(max_length=MAX_POLICY_CONDITIONS)] = []

    @model_validator(mode="after")
    def _keys_only_to_redact(self) -> PolicyRule:
        if self.redact_keys and self.effect != "redact":
            raise ValueError(f"'redact_keys' is only valid with effect 'redact', not {self.effect!r}")
        return self


class Policy(Record):
    """A persona's policy: rules evaluated before every dispatch and on tool steps; the
    strongest effect of the rules that match wins (deny > redact > allow; none: allow)."""

    pack: Label | None = None
    rules: Annotated[list[PolicyRule], Field(max_length=MAX_POLICY_RULES)] = []


class PolicyScope(Record):
    """What a persona's policy lets a dispatched run do with tools (a capability token's
    ``scope.policy``): the effect on each tool a rule names, and on any other tool."""

    pack: str
    tools: dict[str, PolicyEffect] = {}
    other_tools: PolicyEffect = "allow"


class PersonaBinding(Record):
    """Configuration of one persona; published on the compacted ``persona.bindings``."""

    name: PersonaName
    template_ref: Label | None = None
    entry_workflow: Label
    schedules: Annotated[list[CronExpression], Field(max_length=64)] = []
    triggers: Annotated[list[Label], Field(max_length=256)] = []
    budget: BudgetPolicy = BudgetPolicy()
    execution: Literal["inline", "external"] = "inline"
    lease_ttl_ms: Annotated[int, Field(ge=1, le=7 * 86_400_000)] = 300000
    retry: RetryPolicy = RetryPolicy()
    run_limits: RunLimits = RunLimits()
    estimated_run_usd: NonNegativeFloat | None = None
    compensation_workflow: Label | None = None
    schedule_catchup: Literal["skip", "latest"] = "latest"
    redact_metadata_keys: Annotated[list[Label], Field(max_length=256)] = []
    #: When an external run's lease expires: ``requeue`` the work after the retry backoff
    #: (no attempt is spent; the ``retry.max_attempts``-th expiry of a run ends it
    #: ``expired``, so work no executor takes cannot circulate forever) or end the run
    #: ``expired`` at once.
    on_lease_expiry: Literal["requeue", "expire"] = "requeue"
    #: Options for executors, sent with every dispatch of the persona's runs (a trigger's
    #: metadata may add to them: keys ``executor.<option>``).
    executor_options: Annotated[dict[Label, Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = {}
    #: Scheduling (contract section 6): the SLO of the persona's work (a trigger's wins),
    #: a deadline relative to the trigger's event time, breakpoints.
    slo: Slo | None = None
    deadline_ms: DurationMs | None = None
    debug: Debug | None = None
    #: In-flight backpressure: a dispatch that would take what the persona's runs in flight
    #: have reserved past one of these waits ``backpressure_ms`` (or until they settle).
    max_inflight_tokens: NonNegativeInt | None = None
    max_inflight_cost_usd: NonNegativeFloat | None = None
    backpressure_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 1000
    #: Governance: rules deciding each dispatch and tool step (allow, redact, deny).
    policy: Policy | None = None


# --------------------------------------------------------------------------- inputs


class RunCost(Record):
    """What one run cost and saved."""

    cost_usd: NonNegativeFloat
    tokens: NonNegativeInt
    avoided_cost_usd: SignedUsd = 0.0
    deterministic_steps: StepCount = 0
    llm_steps: StepCount = 0
    frontier_escalations: StepCount = 0
    metadata: Any = None


class Trace(Record):
    """W3C trace context. An invalid ``traceparent`` counts as absent: the record gets the
    fallback trace of its id (a producer's tracing bug never costs it its work)."""

    traceparent: Annotated[str, StringConstraints(max_length=MAX_TRACEPARENT)]
    tracestate: Annotated[str, StringConstraints(max_length=MAX_TRACESTATE)] | None = None
    baggage: Annotated[str, StringConstraints(max_length=MAX_BAGGAGE)] | None = None


class TriggerRequest(Record):
    """A trigger envelope from a producer (webhook bridge, cron, handoff)."""

    request_id: Id
    persona: PersonaName
    provider: Label
    kind: Label
    metadata: Metadata = {}
    raw: Any = None
    cost: RunCost | None = None
    priority: Priority = 0
    received_at_ms: EpochMs | None = None
    #: Scheduling (contract section 6); each wins over the binding's.
    slo: Slo | None = None
    deadline_at_ms: EpochMs | None = None
    debug: Debug | None = None
    #: The producer's trace context (or the record's ``traceparent`` header).
    trace: Trace | None = None


ControlAction = Literal["pause", "resume", "disable", "enable", "drain", "record_spend", "cancel"]


class CancelTarget(Record):
    """Queued work to cancel: by its work key or by its request id (one of them)."""

    work_key: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    request_id: Id | None = None

    @model_validator(mode="after")
    def _one(self) -> CancelTarget:
        if (self.work_key is None) == (self.request_id is None):
            raise ValueError("give exactly one of 'work_key' and 'request_id'")
        return self


class ControlCommand(Record):
    """An ops command for one persona."""

    command_id: Id
    persona: PersonaName
    action: ControlAction
    actor: Label
    reason: Text | None = None
    cost: RunCost | None = None
    at_ms: EpochMs | None = None
    #: ``cancel``: the queued work to remove.
    target: CancelTarget | None = None
    trace: Trace | None = None

    @model_validator(mode="after")
    def _cost_only_for_spend(self) -> ControlCommand:
        if self.action == "record_spend" and self.cost is None:
            raise ValueError("action 'record_spend' needs a 'cost' object")
        if self.action != "record_spend" and self.cost is not None:
            raise ValueError(f"'cost' is only valid with action 'record_spend', not {self.action!r}")
        if self.action == "cancel" and self.target is None:
            raise ValueError("action 'cancel' needs a 'target' object: {work_key} or {request_id}")
        if self.action != "cancel" and self.target is not None:
            raise ValueError(f"'target' is only valid with action 'cancel', not {self.action!r}")
        return self


RunEventKind = Literal[
    "started",
    "heartbeat",
    "step_started",
    "step_completed",
    "step_failed",
    "usage",
    "checkpoint",
    "artifact",
    "handoff",
    "spawn",
    "waiting",
    "input_received",
    "message",
    "completed",
    "failed",
]

SpawnMode = Literal["inline", "child"]


#: The longest capability token a report may present: a scope naming 64 tools of 256
#: characters, in base64, fits.
MAX_CAPABILITY_CHARS = 32768


class ExecutorIdentity(Record):
    """Who runs a run's attempt: the executor says so on ``started`` (the run's BOM lists it)."""

    id: Label
    version: Label | None = None


class RunEvent(Record):
    """A lifecycle report from an executor about one run."""

    event_id: Id
    run_id: Id
    lease_id: Id
    kind: RunEventKind
    #: The dispatch's ``persona``, echoed: the report then goes straight to the persona's
    #: inbox (one hop) instead of through the run directory (two). A report naming a persona
    #: that does not own the run is dead-lettered there (``unknown_run``).
    persona: PersonaName | None = None
    step_id: Label | None = None
    name: Label | None = None
    #: ``step_started``: the tool the step calls (the binding's policy decides it).
    tool: Label | None = None
    tokens: NonNegativeInt | None = None
    cost_usd: NonNegativeFloat | None = None
    output: Any = None
    error: Text | None = None
    retryable: bool | None = None
    target_persona: PersonaName | None = None
    task: Text | None = None
    payload: Any = None
    cost: RunCost | None = None
    at_ms: EpochMs | None = None
    #: ``spawn``: the child's key (unique within the parent's attempt) and how it runs.
    child_key: Label | None = None
    entry_workflow: Label | None = None
    spawn_mode: SpawnMode = "child"
    background: bool = False
    inherit_inbox: bool = False
    #: The executor's span this report comes from (or the record's ``traceparent`` header).
    trace: Trace | None = None
    #: The dispatch's capability token, presented: one for another run or attempt is fenced.
    capability: Annotated[str, StringConstraints(max_length=MAX_CAPABILITY_CHARS)] | None = None
    #: ``started``: who runs the attempt. Any report: the model it is about (``tool``: the tool).
    executor: ExecutorIdentity | None = None
    model: Label | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> RunEvent:
        if self.kind.startswith("step_") and self.step_id is None:
            raise ValueError(f"kind {self.kind!r} needs 'step_id'")
        if self.kind == "handoff" and (self.target_persona is None or self.task is None):
            raise ValueError("kind 'handoff' needs 'target_persona' and 'task'")
        if self.kind == "spawn" and (self.child_key is None or self.entry_workflow is None):
            raise ValueError("kind 'spawn' needs 'child_key' and 'entry_workflow'")
        if self.kind == "failed" and self.error is None:
            raise ValueError("kind 'failed' needs 'error'")
        return self


RunControlAction = Literal[
    "pause", "resume", "cancel", "checkpoint", "compact", "guidance", "evidence", "a2a", "break", "clear_breaks"
]


class RunControl(Record):
    """A control message for a running execution."""

    command_id: Id
    run_id: Id
    action: RunControlAction
    actor: Label
    reason: Text | None = None
    content: Any = None
    at_ms: EpochMs | None = None
    trace: Trace | None = None

    @model_validator(mode="after")
    def _break_names_a_step(self) -> RunControl:
        if self.action == "break":
            step = self.content.get("step") if isinstance(self.content, dict) else None
            if not isinstance(step, str) or not 1 <= len(step) <= 256:
                raise ValueError("action 'break' needs content {\"step\": NAME} (1 to 256 characters)")
        return self


# --------------------------------------------------------------------------- outputs


class TriggerEnvelope(Record):
    """The normalized trigger (docs/behaviour.md, section 3)."""

    provider: str
    kind: str
    subject_key: str
    source_event_id: str | None = None
    received_at_ms: int
    metadata: dict[str, str] = {}
    raw: Any = None


class PersonaLease(Record):
    id: str
    holder: str
    work_key: str
    acquired_at_ms: int
    expires_at_ms: int


ReceiptStatus = Literal[
    "completed",
    "queued",
    "dead_lettered",
    "budget_exhausted",
    "duplicate",
    "lease_busy",
    "dispatched",
    "retrying",
    "failed",
    "cancelled",
    "rejected",
]


class Receipt(Record):
    """One per decision about a request, with its correlation ids."""

    status: ReceiptStatus
    persona: str
    run_id: str | None = None
    work_key: str | None = None
    lease: PersonaLease | None = None
    queued: bool = False
    error: str | None = None
    budget_receipt_id: str | None = None
    request_id: str
    receipt_id: str
    at_ms: int
    #: External work: the attempt this decision is about (``dispatched``, ``retrying``, ...).
    attempt: int | None = None
    #: ``retrying``: when the next attempt may start.
    not_before_ms: int | None = None
    #: The outbox event that answers the request, where there is one (run control).
    event_id: str | None = None
    #: The span of the transition that decided it.
    trace: Trace | None = None


class StepSlo(Record):
    """A dispatched run's SLO: its target, how long it waited, its slack (seed 004.5)."""

    tier: str | None = None
    queue_target_ms: int
    observed_queue_ms: int
    slack_ms: int
    priority_boost: int = 0
    error_budget_ratio: float | None = None


class RunDispatch(Record):
    """An instruction to executors about one run."""

    run_id: str
    persona: str
    lease_id: str
    attempt: int
    entry_workflow: str
    envelope: TriggerEnvelope
    deadline_ms: int
    limits: RunLimits
    parent_run_id: str | None = None
    action: str = "start"
    command_id: str | None = None
    reason: str | None = None
    content: Any = None
    #: ``work`` (a trigger's run), ``child`` (spawned by ``parent_run_id``) or
    #: ``compensation`` (after ``parent_run_id`` failed for good).
    kind: Literal["work", "child", "compensation"] = "work"
    spawn_mode: SpawnMode | None = None
    background: bool = False
    #: The binding's ``executor_options``.
    options: dict[str, str] = {}
    #: ``"{run_id}:{attempt}"``: an executor uses it to do each attempt's side effects once.
    idempotency_key: str = ""
    #: ``start`` of a later attempt (or a re-dispatch): the last checkpoint the run reported.
    checkpoint: Any = None
    #: The run's SLO as it stood when it was dispatched (seed ``StepSlo``).
    slo: StepSlo | None = None
    #: When the work must be done by (the trigger's ``deadline_at_ms``, or the binding's
    #: ``deadline_ms`` after the trigger's event time).
    deadline_at_ms: int | None = None
    #: The dispatch's span, with the trigger's ``tracestate`` and ``baggage``: the executor's
    #: spans are its children, and its reports carry them as ``traceparent`` headers.
    trace: Trace | None = None
    #: When the transition that sent it ran (the capability token's issue time).
    issued_at_ms: int | None = None
    #: With a binding ``policy``: its effect on the run's tool steps (the token's scope).
    policy_scope: PolicyScope | None = None
    #: A signed capability token for this run and attempt (``streams.capability``), added
    #: by the worker after the transition (None: a worker without a signing key).
    capability: str | None = None


class OutboxEvent(Record):
    """One state transition, for audit consumers. ``seq`` is gap-free per ``stream``."""

    event_id: str
    stream: str
    seq: int
    kind: str
    persona: str
    run_id: str | None = None
    occurred_at_ms: int
    payload: dict[str, Any]
    cause: dict[str, Any]
    #: The span of the transition that produced it.
    trace: Trace | None = None
    #: The hash chain of the stream (``streams.chain``): the previous event's digest (64
    #: zeros for the first), and sha256 of it and this event's canonical JSON. None: an
    #: event from before the chain.
    prev_digest: str | None = None
    digest: str | None = None


class PersonaBudgetStatus(Record):
    daily_usd: float | None = None
    hourly_usd: float | None = None
    run_usd: float | None = None
    max_tokens: int | None = None
    spent_today_usd: float = 0.0
    spent_this_hour_usd: float = 0.0
    spent_last_run_usd: float = 0.0
    tokens_today: int = 0
    remaining_today_usd: float | None = None
    remaining_hour_usd: float | None = None
    exhausted: bool = False
    reason: str | None = None
    last_receipt_id: str | None = None


class PersonaAssignmentStatus(Record):
    work_key: str
    lease_id: str
    holder: str
    acquired_at: str
    expires_at: str


class PersonaQueuedWork(Record):
    work_key: str
    provider: str
    kind: str
    queued_at: str
    reason: str
    source_event_id: str | None = None
    metadata: dict[str, str] = {}


class PersonaHandoffInboxItem(Record):
    work_key: str
    handoff_id: str | None = None
    handoff_kind: str | None = None
    source_persona: str | None = None
    task: str | None = None
    queued_at: str
    reason: str


ValueEventKind = Literal[
    "run_started",
    "run_completed",
    "accepted_outcome",
    "frontier_escalation",
    "deterministic_execution",
    "promotion_savings",
    "approval_wait",
]


class PersonaValueReceipt(Record):
    kind: ValueEventKind
    run_id: str | None = None
    occurred_at: str
    paid_cost_usd: float
    avoided_cost_usd: float
    deterministic_steps: int
    llm_steps: int
    metadata: Any = None


LifecycleState = Literal["inactive", "starting", "idle", "running", "paused", "draining", "failed", "disabled"]


class PersonaDiagnostic(Record):
    """Something about a persona an operator may need to act on (``code``, e.g.
    ``executor.silent``; docs/behaviour.md section 5, *Queries*)."""

    code: str
    severity: Literal["info", "warning", "error"]
    message: str


class PersonaStatus(Record):
    """A persona's status, computed at the last transition's event time."""

    name: str
    template_ref: str | None = None
    state: LifecycleState
    entry_workflow: str
    role: str
    current_assignment: PersonaAssignmentStatus | None = None
    last_run: str | None = None
    next_scheduled_run: str | None = None
    active_lease: PersonaLease | None = None
    budget: PersonaBudgetStatus
    last_error: str | None = None
    queued_events: int
    queued_work: list[PersonaQueuedWork] = []
    handoff_inbox: list[PersonaHandoffInboxItem] = []
    value_receipts: list[PersonaValueReceipt] = []
    disabled_events: int
    paused_event_policy: str = "queue_then_drain_on_resume"
    #: What the persona's counters say may need attention (computed in O(1) with the status).
    diagnostics: list[PersonaDiagnostic] = []


class DeadLetter(Record):
    """A record the pipeline could not accept, with a reason a person can act on."""

    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    value_b64: str
    error: str
    at_ms: int
    value_truncated: bool = False

    @field_validator("error")
    @classmethod
    def _error_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a dead letter needs an error message")
        return value


class AuditNotice(Record):
    """What the audit consumer tells everyone else, on ``persona.audit``: a signed
    checkpoint of the stream heads it stored (``audit.checkpoint``; a copy outside the
    store, so that deleting the newest events and checkpoints from the store still shows),
    or a stream whose hash chain broke as it was recorded (``audit.chain_broken``)."""

    kind: Literal["audit.checkpoint", "audit.chain_broken"]
    #: The audit consumer group that found it.
    group: str
    at_ms: int
    #: ``audit.chain_broken``: the stream, the seq and event id of the first broken link.
    stream: str | None = None
    seq: int | None = None
    event_id: str | None = None
    detail: str | None = None
    #: ``audit.checkpoint``: as stored (``heads``: stream -> [seq, digest]).
    number: int | None = None
    previous: str | None = None
    key_id: str | None = None
    signature: str | None = None
    heads: dict[str, list[Any]] | None = None


#: Records producers in other languages write or read; exported as JSON Schema.
PUBLIC_RECORDS: tuple[type[Record], ...] = (
    PersonaBinding,
    TriggerRequest,
    ControlCommand,
    RunEvent,
    RunControl,
    RunDispatch,
    Receipt,
    OutboxEvent,
    PersonaStatus,
    DeadLetter,
    AuditNotice,
)
