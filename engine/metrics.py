"""Prometheus metrics of the runtime (prometheus-client), counted per pass, not per record.

Everything counted is derived from the records a pass published, so transitions stay pure
and handlers need no metrics code:

* receipts and dead letters from their headers (``status``, ``reason``);
* the run metrics (named after the seed's: queue lag, run and step latency, spend, retries,
  SLO slack, preemptions, lease expiries, fenced reports, policy denials) from the outbox
  events of persona and run streams: the ``kind`` header picks the few kinds that matter and
  only those are decoded, into structs that hold just the fields read. Times are the
  events' own (``occurred_at_ms``, the persona's event-time clock), not the worker's.

Gauges that describe state (lag, leases, queues, runs, budgets) are computed when scraped.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.outputs import Output

PASS_RECORD_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000)
PASS_SECOND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Waiting in the queue: from none at all to an hour.
QUEUE_SECOND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: External runs last from seconds to hours.
RUN_SECOND_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
STEP_SECOND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Slack is negative once an SLO is breached: buckets on both sides of zero (so the
#: histogram has no ``_sum``: prometheus-client leaves it out when buckets are negative).
SLACK_MS_BUCKETS = (
    -300_000, -60_000, -10_000, -5_000, -1_000, -500, 0, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
)  # fmt: skip
#: Steps started and not ended yet that a worker remembers (a step is measured between the
#: run stream's ``run.step_started`` and its end, both published by this worker).
OPEN_STEPS_KEPT = 10_000
#: Policy reasons come from bindings: cut to keep a label bounded in size.
REASON_CHARS = 64

P = TypeVar("P")


class _Event(msgspec.Struct, Generic[P]):
    """An outbox event with only what a run metric reads (other fields are skipped)."""

    occurred_at_ms: int
    payload: P
    run_id: str | None = None


class _Slo(msgspec.Struct):
    slack_ms: int
    preempted: bool = False


class _Dispatched(msgspec.Struct):
    dispatch: int = 1
    queued_at_ms: int | None = None
    slo: _Slo | None = None


class _Ended(msgspec.Struct):
    dispatched_at_ms: int | None = None


class _StepReport(msgspec.Struct):
    step_id: str = ""


class _RetryScheduled(msgspec.Struct):
    lease_expired: bool = False


class _Recorded(msgspec.Struct):
    cost_usd: float = 0.0
    tokens: int = 0


class _Denied(msgspec.Struct):
    reason: str | None = None


_DISPATCHED = msgspec.json.Decoder(_Event[_Dispatched])
_ENDED = msgspec.json.Decoder(_Event[_Ended])
_STEP = msgspec.json.Decoder(_Event[_StepReport])
_RETRY = msgspec.json.Decoder(_Event[_RetryScheduled])
_RECORDED = msgspec.json.Decoder(_Event[_Recorded])
_DENIED = msgspec.json.Decoder(_Event[_Denied])

GaugeValues = Iterable[tuple[tuple[str, ...], float]]
#: Reads one published outbox event: (persona, the record's value, its kind header).
Handler = Callable[[str, bytes, str | bytes], None]


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inputs = Counter(
            "personaflow_inputs_applied", "Input records handled, per input topic", ["topic"], registry=r
        )
        self.outputs = Counter(
            "personaflow_outputs_published", "Records published, per topic role", ["topic"], registry=r
        )
        self.receipts = Counter("personaflow_receipts", "Receipts published, per status", ["status"], registry=r)
        self.dead_letters = Counter(
            "personaflow_dead_letters", "Dead letters published, per reason", ["reason"], registry=r
        )
        self.changelog_records = Counter(
            "personaflow_changelog_records", "State records written to the changelog (rows and positions)", registry=r
        )
        self.processing_errors = Counter(
            "personaflow_processing_errors", "Handler errors (each record involved was dead-lettered)", registry=r
        )
        self.pass_records = Histogram(
            "personaflow_batch_records", "Input records handled per loop pass", buckets=PASS_RECORD_BUCKETS, registry=r
        )
        self.pass_seconds = Histogram(
            "personaflow_batch_processing_seconds",
            "Time to process and commit one loop pass",
            buckets=PASS_SECOND_BUCKETS,
            registry=r,
        )
        self.recovery_seconds = Histogram(
            "personaflow_recovery_seconds", "Time to recover assigned partitions", registry=r
        )
        # The seed's run metrics, per persona (from the outbox events each pass publishes).
        self.queue_lag = Histogram(
            "personaflow_queue_lag_seconds",
            "From the time a run's work was queued (a trigger admitted, a compensation or child"
            " scheduled) to the run's first dispatch to executors (run.dispatched), event time",
            ["persona"],
            buckets=QUEUE_SECOND_BUCKETS,
            registry=r,
        )
        self.run_latency = Histogram(
            "personaflow_run_latency_seconds",
            "External runs: from the first dispatch to the terminal event (run.completed, .failed,"
            " .cancelled, .expired; retries included), event time, per outcome",
            ["persona", "outcome"],
            buckets=RUN_SECOND_BUCKETS,
            registry=r,
        )
        self.step_latency = Histogram(
            "personaflow_step_latency_seconds",
            "Executor steps: from run.step_started to run.step_completed or run.step_failed of the"
            " same step, event time (a step whose start another worker published is not measured)",
            ["persona"],
            buckets=STEP_SECOND_BUCKETS,
            registry=r,
        )
        self.budget_cost = Counter(
            "personaflow_budget_cost_usd",
            "Spend recorded (persona.budget.recorded with a positive amount: inline runs, usage, final"
            " costs, manual spend)",
            ["persona"],
            registry=r,
        )
        self.budget_tokens = Counter(
            "personaflow_budget_tokens",
            "Tokens recorded (persona.budget.recorded with a positive amount)",
            ["persona"],
            registry=r,
        )
        self.budget_cost_corrected = Counter(
            "personaflow_budget_cost_corrected_usd",
            "Spend taken back (persona.budget.recorded with a negative amount: a final cost below the"
            " usage reported); spend = cost_usd - cost_corrected_usd",
            ["persona"],
            registry=r,
        )
        self.budget_tokens_corrected = Counter(
            "personaflow_budget_tokens_corrected",
            "Tokens taken back (persona.budget.recorded with a negative amount)",
            ["persona"],
            registry=r,
        )
        self.retries = Counter(
            "personaflow_retries",
            "Retries scheduled: failed attempts that get another, counted once each (run.retry_scheduled;"
            " re-queues after a lease expiry count as lease expiries)",
            ["persona"],
            registry=r,
        )
        self.slo_slack = Histogram(
            "personaflow_slo_queue_slack_ms",
            "Queue slack of work with an SLO when dispatched (queue_target_ms minus the time waited,"
            " negative once breached), milliseconds",
            ["persona"],
            buckets=SLACK_MS_BUCKETS,
            registry=r,
        )
        self.preemptions = Counter(
            "personaflow_slo_preemptions",
            "Dispatches of breached SLO work ahead of work queued before it",
            ["persona"],
            registry=r,
        )
        self.lease_expiries = Counter(
            "personaflow_lease_expiries",
            "Dispatch leases that ran out (run.lease_expired)",
            ["persona"],
            registry=r,
        )
        self.fenced_reports = Counter(
            "personaflow_fenced_reports",
            "Executor reports rejected on the run stream (run.report_rejected: a stale lease, a run not"
            " executing or ended, refused at admission, or not allowed by the run machine)",
            ["persona"],
            registry=r,
        )
        self.policy_denials = Counter(
            "personaflow_policy_denials",
            "Work and tool steps denied by a binding's policy (persona.policy.denied), per reason (the"
            " decision's summary)",
            ["persona", "reason"],
            registry=r,
        )
        #: (run id, step id) -> the step's start (event time), oldest first, bounded.
        self._open_steps: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: Labelled children by (metric, label values): ``labels()`` costs more than a dict look-up.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        #: Persona names by their header bytes.
        self._names: dict[bytes, str] = {}
        handlers: dict[str, Handler] = {
            "run.dispatched": self._dispatched,
            "run.completed": self._ended,
            "run.failed": self._ended,
            "run.cancelled": self._ended,
            "run.expired": self._ended,
            "run.step_started": self._step_started,
            "run.step_completed": self._step_ended,
            "run.step_failed": self._step_ended,
            "run.retry_scheduled": self._retry_scheduled,
            "run.lease_expired": lambda persona, _value, _kind: self._child(self.lease_expiries, persona).inc(),
            "run.report_rejected": lambda persona, _value, _kind: self._child(self.fenced_reports, persona).inc(),
            "persona.budget.recorded": self._recorded,
            "persona.policy.denied": self._denied,
        }
        # Header values are bytes as transitions write them, text otherwise: both are keys.
        self._by_kind: dict[str | bytes, Handler] = {}
        for kind, handler in handlers.items():
            self._by_kind[kind] = self._by_kind[kind.encode()] = handler

    def observe_pass(self, inputs: dict[str, int], outputs: Iterable[Output], seconds: float) -> None:
        total = 0
        for topic, count in inputs.items():
            self.inputs.labels(topic).inc(count)
            total += count
        roles: Tally[str] = Tally()
        statuses: Tally[str] = Tally()
        reasons: Tally[str] = Tally()
        by_kind = self._by_kind
        for output in outputs:
            role = output.role
            roles[role] += 1
            if role == "outbox":
                headers = output.headers
                # Transitions write (persona, kind, event_id) in this order: one dict look-up
                # per record, and nothing more for the kinds no metric reads (most of them).
                if len(headers) > 2 and headers[1][0] == "kind" and headers[0][0] == "persona":
                    kind, persona = headers[1][1], headers[0][1]
                else:
                    kind, persona = output.header("kind") or "", output.header("persona") or ""
                handler = by_kind.get(kind)
                if handler is not None and isinstance(output.value, bytes):
                    try:
                        handler(self._name(persona), output.value, kind)
                    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                        pass  # published already: a metric must never stop the loop (transitions write these)
            elif role == "receipts":
                statuses[output.header("status") or "unknown"] += 1
            elif role == "dlq":
                reasons[output.header("reason") or "invalid_input"] += 1
        for role, count in roles.items():
            self.outputs.labels(role).inc(count)
        for status, count in statuses.items():
            self.receipts.labels(status).inc(count)
        for reason, count in reasons.items():
            self.dead_letters.labels(reason).inc(count)
        self.pass_records.observe(total)
        self.pass_seconds.observe(seconds)

    # ------------------------------------------------------------ run metrics

    def _dispatched(self, persona: str, value: bytes, kind: str | bytes) -> None:
        event = _DISPATCHED.decode(value)
        payload = event.payload
        if payload.dispatch == 1 and payload.queued_at_ms is not None:
            self._child(self.queue_lag, persona).observe(max(event.occurred_at_ms - payload.queued_at_ms, 0) / 1000)
        slo = payload.slo
        if slo is not None:
            self._child(self.slo_slack, persona).observe(slo.slack_ms)
            if slo.preempted:
                self._child(self.preemptions, persona).inc()

    def _ended(self, persona: str, value: bytes, kind: str | bytes) -> None:
        event = _ENDED.decode(value)
        start = event.payload.dispatched_at_ms
        if start is not None:  # never dispatched (a deadline, a cancel while queued): no latency
            outcome = (kind.decode() if isinstance(kind, bytes) else kind).removeprefix("run.")
            self._child(self.run_latency, persona, outcome).observe(max(event.occurred_at_ms - start, 0) / 1000)

    def _step_started(self, persona: str, value: bytes, kind: str | bytes) -> None:
        event = _STEP.decode(value)
        steps = self._open_steps
        steps[(event.run_id or "", event.payload.step_id)] = event.occurred_at_ms
        if len(steps) > OPEN_STEPS_KEPT:
            steps.popitem(last=False)

    def _step_ended(self, persona: str, value: bytes, kind: str | bytes) -> None:
        event = _STEP.decode(value)
        start = self._open_steps.pop((event.run_id or "", event.payload.step_id), None)
        if start is not None:
            self._child(self.step_latency, persona).observe(max(event.occurred_at_ms - start, 0) / 1000)

    def _retry_scheduled(self, persona: str, value: bytes, kind: str | bytes) -> None:
        # Once per retry: when it is scheduled, not again when its attempt is dispatched.
        if not _RETRY.decode(value).payload.lease_expired:
            self._child(self.retries, persona).inc()

    def _recorded(self, persona: str, value: bytes, kind: str | bytes) -> None:
        payload = _RECORDED.decode(value).payload
        if payload.cost_usd > 0:
            self._child(self.budget_cost, persona).inc(payload.cost_usd)
        elif payload.cost_usd < 0:
            self._child(self.budget_cost_corrected, persona).inc(-payload.cost_usd)
        if payload.tokens > 0:
            self._child(self.budget_tokens, persona).inc(payload.tokens)
        elif payload.tokens < 0:
            self._child(self.budget_tokens_corrected, persona).inc(-payload.tokens)

    def _denied(self, persona: str, value: bytes, kind: str | bytes) -> None:
        reason = _DENIED.decode(value).payload.reason or "unspecified"
        self._child(self.policy_denials, persona, reason[:REASON_CHARS]).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _name(self, persona: str | bytes) -> str:
        if isinstance(persona, str):
            return persona
        name = self._names.get(persona)
        if name is None:
            name = self._names[persona] = persona.decode()
        return name

    # ------------------------------------------------------------ scrape time

    def add_gauges(self, name: str, help: str, labels: list[str], values: Callable[[], GaugeValues]) -> None:
        """A gauge computed at scrape time."""
        self.registry.register(_GaugeCollector([(name, help, labels)], lambda: {name: values()}))

    def add_gauge_group(
        self, gauges: Sequence[tuple[str, str, list[str]]], values: Callable[[], Mapping[str, GaugeValues]]
    ) -> None:
        """Gauges computed together at scrape time (one read of the state for all of them):
        ``gauges`` are (name, help, labels); ``values`` maps names to their samples."""
        self.registry.register(_GaugeCollector(list(gauges), values))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _GaugeCollector(Collector):
    def __init__(
        self, gauges: list[tuple[str, str, list[str]]], values: Callable[[], Mapping[str, GaugeValues]]
    ) -> None:
        self.gauges, self.values = gauges, values

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, help, labels=labels) for name, help, labels in self.gauges]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        values = self.values()
        for name, help, labels in self.gauges:
            family = GaugeMetricFamily(name, help, labels=labels)
            for label_values, value in values.get(name, ()):
                family.add_metric(list(label_values), value)
            yield family
