"""Type stub of :mod:`streams.wire`, written by ``python -m streams.wirestub --write``
(``make wire-stub``) from the contract models: do not edit it by hand."""

from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

import msgspec
from pydantic import BaseModel
from typing_extensions import TypeForm

from . import records

_T = TypeVar("_T")

@overload
def twin(model: type[records.Trace]) -> type[Trace]: ...
@overload
def twin(model: type[records.RunCost]) -> type[RunCost]: ...
@overload
def twin(model: type[records.Slo]) -> type[Slo]: ...
@overload
def twin(model: type[records.Debug]) -> type[Debug]: ...
@overload
def twin(model: type[records.CancelTarget]) -> type[CancelTarget]: ...
@overload
def twin(model: type[records.StepSlo]) -> type[StepSlo]: ...
@overload
def twin(model: type[records.BudgetPolicy]) -> type[BudgetPolicy]: ...
@overload
def twin(model: type[records.PolicyMatch]) -> type[PolicyMatch]: ...
@overload
def twin(model: type[records.PolicyRule]) -> type[PolicyRule]: ...
@overload
def twin(model: type[records.Policy]) -> type[Policy]: ...
@overload
def twin(model: type[records.PolicyScope]) -> type[PolicyScope]: ...
@overload
def twin(model: type[records.RetryPolicy]) -> type[RetryPolicy]: ...
@overload
def twin(model: type[records.RunLimits]) -> type[RunLimits]: ...
@overload
def twin(model: type[records.PersonaBinding]) -> type[PersonaBinding]: ...
@overload
def twin(model: type[records.TriggerRequest]) -> type[TriggerRequest]: ...
@overload
def twin(model: type[records.ControlCommand]) -> type[ControlCommand]: ...
@overload
def twin(model: type[records.ExecutorIdentity]) -> type[ExecutorIdentity]: ...
@overload
def twin(model: type[records.RunEvent]) -> type[RunEvent]: ...
@overload
def twin(model: type[records.RunControl]) -> type[RunControl]: ...
@overload
def twin(model: type[records.TriggerEnvelope]) -> type[TriggerEnvelope]: ...
@overload
def twin(model: type[records.PersonaLease]) -> type[PersonaLease]: ...
@overload
def twin(model: type[records.Receipt]) -> type[Receipt]: ...
@overload
def twin(model: type[records.RunDispatch]) -> type[RunDispatch]: ...
@overload
def twin(model: type[records.OutboxEvent]) -> type[OutboxEvent]: ...
@overload
def twin(model: type[records.PersonaBudgetStatus]) -> type[PersonaBudgetStatus]: ...
@overload
def twin(model: type[records.PersonaAssignmentStatus]) -> type[PersonaAssignmentStatus]: ...
@overload
def twin(model: type[records.PersonaQueuedWork]) -> type[PersonaQueuedWork]: ...
@overload
def twin(model: type[records.PersonaHandoffInboxItem]) -> type[PersonaHandoffInboxItem]: ...
@overload
def twin(model: type[records.PersonaValueReceipt]) -> type[PersonaValueReceipt]: ...
@overload
def twin(model: type[records.PersonaDiagnostic]) -> type[PersonaDiagnostic]: ...
@overload
def twin(model: type[records.DeadLetter]) -> type[DeadLetter]: ...
@overload
def twin(model: type[records.AuditNotice]) -> type[AuditNotice]: ...
@overload
def twin(model: type[BaseModel], **overrides: Any) -> type[msgspec.Struct]:
    """The msgspec struct with ``model``'s fields (``overrides``: other types for some)."""

class Trace(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """W3C trace context. An invalid ``traceparent`` counts as absent: the record gets the
    fallback trace of its id (a producer's tracing bug never costs it its work)."""

    traceparent: str
    tracestate: str | None = None
    baggage: str | None = None

class RunCost(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """What one run cost and saved."""

    cost_usd: float
    tokens: int
    avoided_cost_usd: float = 0.0
    deterministic_steps: int = 0
    llm_steps: int = 0
    frontier_escalations: int = 0
    metadata: Any = None

class Slo(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A service-level objective for queued work (seed 004.5): work with one is ranked
    before work without, breached work first, then by ascending slack
    (``queue_target_ms`` minus the time it has waited), then by priority."""

    tier: str | None = None
    queue_target_ms: int | None = None
    priority_boost: int = 0
    error_budget_ratio: float | None = None

class Debug(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Debugging aids: a run pauses when its executor reports ``step_started`` for one of
    these step names (or ids), once each."""

    breakpoints: list[str] = []

class CancelTarget(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Queued work to cancel: by its work key or by its request id (one of them)."""

    work_key: str | None = None
    request_id: str | None = None

class StepSlo(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A dispatched run's SLO: its target, how long it waited, its slack (seed 004.5)."""

    tier: str | None = None
    queue_target_ms: int
    observed_queue_ms: int
    slack_ms: int
    priority_boost: int = 0
    error_budget_ratio: float | None = None

class BudgetPolicy(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A persona's budget; ``null`` means no limit."""

    daily_usd: float | None = None
    hourly_usd: float | None = None
    run_usd: float | None = None
    max_tokens: int | None = None

class PolicyMatch(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """What a policy rule applies to: every condition given must hold (an empty match
    applies to everything). Conditions read the work as its run carries it."""

    boundary: records.PolicyBoundary | None = None
    provider: str | None = None
    kind: str | None = None
    workflow: str | None = None
    metadata: dict[str, str] = {}
    metadata_present: list[str] = []
    min_estimated_usd: float | None = None
    min_attempt: int | None = None
    slo_tier: str | None = None
    tool: str | None = None
    run_kind: Literal["work", "child", "compensation"] | None = None

class PolicyRule(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One rule: where it matches, its effect (``redact``: mask ``redact_keys``)."""

    match: PolicyMatch = msgspec.field(default_factory=PolicyMatch)
    effect: records.PolicyEffect
    reason: str | None = None
    redact_keys: list[str] = []

class Policy(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A persona's policy: rules evaluated before every dispatch and on tool steps; the
    strongest effect of the rules that match wins (deny > redact > allow; none: allow)."""

    pack: str | None = None
    rules: list[PolicyRule] = []

class PolicyScope(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """What a persona's policy lets a dispatched run do with tools (a capability token's
    ``scope.policy``): the effect on each tool a rule names, and on any other tool."""

    pack: str
    tools: dict[str, records.PolicyEffect] = {}
    other_tools: records.PolicyEffect = "allow"

class RetryPolicy(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    max_attempts: int = 3
    backoff_ms: int = 1000
    factor: float = 2.0
    max_backoff_ms: int = 300000

class RunLimits(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    max_steps: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_duration_ms: int | None = None
    warn_ratio: float = 0.8

class PersonaBinding(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Configuration of one persona; published on the compacted ``persona.bindings``."""

    name: str
    template_ref: str | None = None
    entry_workflow: str
    schedules: list[str] = []
    triggers: list[str] = []
    budget: BudgetPolicy = msgspec.field(default_factory=BudgetPolicy)
    execution: Literal["inline", "external"] = "inline"
    lease_ttl_ms: int = 300000
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    run_limits: RunLimits = msgspec.field(default_factory=RunLimits)
    estimated_run_usd: float | None = None
    compensation_workflow: str | None = None
    schedule_catchup: Literal["skip", "latest"] = "latest"
    redact_metadata_keys: list[str] = []
    on_lease_expiry: Literal["requeue", "expire"] = "requeue"
    executor_options: dict[str, str] = {}
    slo: Slo | None = None
    deadline_ms: int | None = None
    debug: Debug | None = None
    max_inflight_tokens: int | None = None
    max_inflight_cost_usd: float | None = None
    backpressure_ms: int = 1000
    policy: Policy | None = None

class TriggerRequest(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A trigger envelope from a producer (webhook bridge, cron, handoff)."""

    request_id: str
    persona: str
    provider: str
    kind: str
    metadata: dict[str, str] = {}
    raw: Any = None
    cost: RunCost | None = None
    priority: int = 0
    received_at_ms: int | None = None
    slo: Slo | None = None
    deadline_at_ms: int | None = None
    debug: Debug | None = None
    trace: Trace | None = None

class ControlCommand(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """An ops command for one persona."""

    command_id: str
    persona: str
    action: records.ControlAction
    actor: str
    reason: str | None = None
    cost: RunCost | None = None
    at_ms: int | None = None
    target: CancelTarget | None = None
    trace: Trace | None = None

class ExecutorIdentity(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Who runs a run's attempt: the executor says so on ``started`` (the run's BOM lists it)."""

    id: str
    version: str | None = None

class RunEvent(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A lifecycle report from an executor about one run."""

    event_id: str
    run_id: str
    lease_id: str
    kind: records.RunEventKind
    persona: str | None = None
    step_id: str | None = None
    name: str | None = None
    tool: str | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    output: Any = None
    error: str | None = None
    retryable: bool | None = None
    target_persona: str | None = None
    task: str | None = None
    payload: Any = None
    cost: RunCost | None = None
    at_ms: int | None = None
    child_key: str | None = None
    entry_workflow: str | None = None
    spawn_mode: records.SpawnMode = "child"
    background: bool = False
    inherit_inbox: bool = False
    trace: Trace | None = None
    capability: str | None = None
    executor: ExecutorIdentity | None = None
    model: str | None = None

class RunControl(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A control message for a running execution."""

    command_id: str
    run_id: str
    action: records.RunControlAction
    actor: str
    reason: str | None = None
    content: Any = None
    at_ms: int | None = None
    trace: Trace | None = None

class TriggerEnvelope(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """The normalized trigger (docs/behaviour.md, section 3)."""

    provider: str
    kind: str
    subject_key: str
    source_event_id: str | None = None
    received_at_ms: int
    metadata: dict[str, str] = {}
    raw: Any = None

class PersonaLease(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    id: str
    holder: str
    work_key: str
    acquired_at_ms: int
    expires_at_ms: int

class Receipt(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One per decision about a request, with its correlation ids."""

    status: records.ReceiptStatus
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
    attempt: int | None = None
    not_before_ms: int | None = None
    event_id: str | None = None
    trace: Trace | None = None

class RunDispatch(msgspec.Struct, kw_only=True, frozen=True, gc=False):
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
    kind: Literal["work", "child", "compensation"] = "work"
    spawn_mode: records.SpawnMode | None = None
    background: bool = False
    options: dict[str, str] = {}
    idempotency_key: str = ""
    checkpoint: Any = None
    slo: StepSlo | None = None
    deadline_at_ms: int | None = None
    trace: Trace | None = None
    issued_at_ms: int | None = None
    policy_scope: PolicyScope | None = None
    capability: str | None = None

class OutboxEvent(msgspec.Struct, kw_only=True, frozen=True, gc=False):
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
    trace: Trace | None = None
    prev_digest: str | None = None
    digest: str | None = None

class PersonaBudgetStatus(msgspec.Struct, kw_only=True, frozen=True, gc=False):
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

class PersonaAssignmentStatus(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    work_key: str
    lease_id: str
    holder: str
    acquired_at: str
    expires_at: str

class PersonaQueuedWork(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    work_key: str
    provider: str
    kind: str
    queued_at: str
    reason: str
    source_event_id: str | None = None
    metadata: dict[str, str] = {}

class PersonaHandoffInboxItem(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    work_key: str
    handoff_id: str | None = None
    handoff_kind: str | None = None
    source_persona: str | None = None
    task: str | None = None
    queued_at: str
    reason: str

class PersonaValueReceipt(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    kind: records.ValueEventKind
    run_id: str | None = None
    occurred_at: str
    paid_cost_usd: float
    avoided_cost_usd: float
    deterministic_steps: int
    llm_steps: int
    metadata: Any = None

class PersonaDiagnostic(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Something about a persona an operator may need to act on (``code``, e.g.
    ``executor.silent``; docs/behaviour.md section 5, *Queries*)."""

    code: str
    severity: Literal["info", "warning", "error"]
    message: str

class DeadLetter(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A record the pipeline could not accept, with a reason a person can act on."""

    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    value_b64: str
    error: str
    at_ms: int
    value_truncated: bool = False

class AuditNotice(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """What the audit consumer tells everyone else, on ``persona.audit``: a signed
    checkpoint of the stream heads it stored (``audit.checkpoint``; a copy outside the
    store, so that deleting the newest events and checkpoints from the store still shows),
    or a stream whose hash chain broke as it was recorded (``audit.chain_broken``)."""

    kind: Literal["audit.checkpoint", "audit.chain_broken"]
    group: str
    at_ms: int
    stream: str | None = None
    seq: int | None = None
    event_id: str | None = None
    detail: str | None = None
    number: int | None = None
    previous: str | None = None
    key_id: str | None = None
    signature: str | None = None
    heads: dict[str, list[Any]] | None = None

class PersonaStatus(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A persona's status, computed at the last transition's event time."""

    name: str
    template_ref: str | None = None
    state: records.LifecycleState
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
    value_receipts: list[msgspec.Raw] = []
    disabled_events: int
    paused_event_policy: str = "queue_then_drain_on_resume"
    diagnostics: list[PersonaDiagnostic] = []

encoder: msgspec.json.Encoder
encode: Callable[[Any], bytes]

def decoder(kind: TypeForm[_T]) -> msgspec.json.Decoder[_T]: ...
@overload
def from_model(model: records.Trace) -> Trace: ...
@overload
def from_model(model: records.RunCost) -> RunCost: ...
@overload
def from_model(model: records.Slo) -> Slo: ...
@overload
def from_model(model: records.Debug) -> Debug: ...
@overload
def from_model(model: records.CancelTarget) -> CancelTarget: ...
@overload
def from_model(model: records.StepSlo) -> StepSlo: ...
@overload
def from_model(model: records.BudgetPolicy) -> BudgetPolicy: ...
@overload
def from_model(model: records.PolicyMatch) -> PolicyMatch: ...
@overload
def from_model(model: records.PolicyRule) -> PolicyRule: ...
@overload
def from_model(model: records.Policy) -> Policy: ...
@overload
def from_model(model: records.PolicyScope) -> PolicyScope: ...
@overload
def from_model(model: records.RetryPolicy) -> RetryPolicy: ...
@overload
def from_model(model: records.RunLimits) -> RunLimits: ...
@overload
def from_model(model: records.PersonaBinding) -> PersonaBinding: ...
@overload
def from_model(model: records.TriggerRequest) -> TriggerRequest: ...
@overload
def from_model(model: records.ControlCommand) -> ControlCommand: ...
@overload
def from_model(model: records.ExecutorIdentity) -> ExecutorIdentity: ...
@overload
def from_model(model: records.RunEvent) -> RunEvent: ...
@overload
def from_model(model: records.RunControl) -> RunControl: ...
@overload
def from_model(model: records.TriggerEnvelope) -> TriggerEnvelope: ...
@overload
def from_model(model: records.PersonaLease) -> PersonaLease: ...
@overload
def from_model(model: records.Receipt) -> Receipt: ...
@overload
def from_model(model: records.RunDispatch) -> RunDispatch: ...
@overload
def from_model(model: records.OutboxEvent) -> OutboxEvent: ...
@overload
def from_model(model: records.PersonaBudgetStatus) -> PersonaBudgetStatus: ...
@overload
def from_model(model: records.PersonaAssignmentStatus) -> PersonaAssignmentStatus: ...
@overload
def from_model(model: records.PersonaQueuedWork) -> PersonaQueuedWork: ...
@overload
def from_model(model: records.PersonaHandoffInboxItem) -> PersonaHandoffInboxItem: ...
@overload
def from_model(model: records.PersonaValueReceipt) -> PersonaValueReceipt: ...
@overload
def from_model(model: records.PersonaDiagnostic) -> PersonaDiagnostic: ...
@overload
def from_model(model: records.DeadLetter) -> DeadLetter: ...
@overload
def from_model(model: records.AuditNotice) -> AuditNotice: ...
@overload
def from_model(model: BaseModel) -> msgspec.Struct:
    """A validated contract model as its twin."""

def to_builtins(value: Any) -> Any:
    """Plain JSON-like data (dicts, lists) of a twin, e.g. for an outbox payload."""
