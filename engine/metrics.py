"""Prometheus metrics of the runtime (prometheus-client), counted per pass, not per record.

Receipts and dead letters are counted from the headers of the records published
(``status`` on receipts, ``reason`` on dead letters), so handlers need no metrics code.
Gauges that describe state (lag, leases, queues, runs) are computed when scraped.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.outputs import Output

PASS_RECORD_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000)
PASS_SECOND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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

    def observe_pass(self, inputs: dict[str, int], outputs: Iterable[Output], seconds: float) -> None:
        total = 0
        for topic, count in inputs.items():
            self.inputs.labels(topic).inc(count)
            total += count
        roles: Tally[str] = Tally()
        statuses: Tally[str] = Tally()
        reasons: Tally[str] = Tally()
        for output in outputs:
            roles[output.role] += 1
            if output.role == "receipts":
                statuses[output.header("status") or "unknown"] += 1
            elif output.role == "dlq":
                reasons[output.header("reason") or "invalid_input"] += 1
        for role, count in roles.items():
            self.outputs.labels(role).inc(count)
        for status, count in statuses.items():
            self.receipts.labels(status).inc(count)
        for reason, count in reasons.items():
            self.dead_letters.labels(reason).inc(count)
        self.pass_records.observe(total)
        self.pass_seconds.observe(seconds)

    def add_gauges(
        self, name: str, help: str, labels: list[str], values: Callable[[], Iterable[tuple[tuple[str, ...], float]]]
    ) -> None:
        """A gauge computed at scrape time."""
        self.registry.register(_GaugeCollector(name, help, labels, values))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _GaugeCollector(Collector):
    def __init__(
        self, name: str, help: str, labels: list[str], values: Callable[[], Iterable[tuple[tuple[str, ...], float]]]
    ) -> None:
        self.name, self.help, self.labels, self.values = name, help, labels, values

    def describe(self):  # type: ignore[no-untyped-def]
        return [GaugeMetricFamily(self.name, self.help, labels=self.labels)]

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        for label_values, value in self.values():
            family.add_metric(list(label_values), value)
        yield family
