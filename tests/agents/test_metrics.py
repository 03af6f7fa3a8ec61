"""``GET /metrics`` in Prometheus text format, scraped and parsed as Prometheus would; and the
seed's run metrics derived from what transitions publish (decision 37: a retry counts once)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import EngineMetrics
from streams.outputs import Output
from tables.timefmt import day_start, hour_start

from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually
from ..tables.harness import T0, Harness, binding, cost


def scrape(worker) -> dict[str, list]:
    text = worker.get("/metrics").decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.broker
def test_metrics_count_inputs_receipts_dead_letters_and_show_lag_leases_queues_and_runs(worker, kafka, persona_name):
    persona = PersonaProbe(kafka, persona_name)
    try:
        before = scrape(worker)
        persona.bind(SELF_REPORTED)
        running = persona.trigger("github", "pull_request", {"repository": "r", "number": "1"})
        assert running["status"] == "dispatched"
        assert persona.trigger("github", "pull_request", {"repository": "r", "number": "2"})["status"] == "lease_busy"
        kafka.send("triggers", persona_name, b"not json")

        def counted() -> dict[str, list] | None:
            metrics = scrape(worker)
            grew = value(
                metrics["personaflow_dead_letters"], "personaflow_dead_letters_total", reason="invalid_input"
            ) > value(before["personaflow_dead_letters"], "personaflow_dead_letters_total", reason="invalid_input")
            return metrics if grew else None

        metrics = eventually(counted, 30, "the dead letter counted")
        receipts = metrics["personaflow_receipts"]
        assert value(receipts, "personaflow_receipts_total", status="dispatched") >= 1
        assert value(receipts, "personaflow_receipts_total", status="lease_busy") >= 1
        inputs = metrics["personaflow_inputs_applied"]
        for topic in ("bindings", "triggers", "persona_inbox", "run_inbox"):
            assert value(inputs, "personaflow_inputs_applied_total", topic=topic) >= 1, topic
        assert (
            value(metrics["personaflow_outputs_published"], "personaflow_outputs_published_total", topic="outbox") > 0
        )
        assert value(metrics["personaflow_active_leases"], "personaflow_active_leases") >= 1
        assert value(metrics["personaflow_queued_items"], "personaflow_queued_items") >= 1
        assert value(metrics["personaflow_runs_in_flight"], "personaflow_runs_in_flight") >= 1
        lag = metrics["personaflow_consumer_lag"]
        assert {s.labels["topic"] for s in lag} >= {"persona.triggers", "persona.inbox", "persona.run.inbox"}
        assert all(s.value >= 0 for s in lag)
        batches = metrics["personaflow_batch_records"]
        assert value(batches, "personaflow_batch_records_count") > 0
        assert [s for s in batches if s.name == "personaflow_batch_records_bucket" and s.labels["le"] == "+Inf"]
        assert value(metrics["personaflow_batch_processing_seconds"], "personaflow_batch_processing_seconds_count") > 0
    finally:
        persona.close()


# ------------------------------------------------------------------ the seed's run metrics

P = "metered"

#: Every run metric the seed names (004.23), as personaflow exposes it (family: type).
SEED_METRICS = {
    "personaflow_queue_depth": "gauge",
    "personaflow_queue_lag_seconds": "histogram",
    "personaflow_run_latency_seconds": "histogram",
    "personaflow_step_latency_seconds": "histogram",
    "personaflow_budget_cost_usd": "counter",
    "personaflow_budget_tokens": "counter",
    "personaflow_budget_cost_corrected_usd": "counter",
    "personaflow_budget_tokens_corrected": "counter",
    "personaflow_budget_remaining_usd": "gauge",
    "personaflow_budget_remaining_tokens": "gauge",
    "personaflow_budget_projected_burn_usd": "gauge",
    "personaflow_budget_projected_burn_tokens": "gauge",
    "personaflow_retries": "counter",
    "personaflow_slo_queue_slack_ms": "histogram",
    "personaflow_slo_preemptions": "counter",
    "personaflow_lease_expiries": "counter",
    "personaflow_fenced_reports": "counter",
    "personaflow_policy_denials": "counter",
}


def observed(h: Harness) -> EngineMetrics:
    """The metrics of one pass that published everything the harness's transitions did."""
    metrics = EngineMetrics()
    metrics.observe_pass({}, [Output(o.role, o.key, o.raw, o.headers) for o in h.outputs], 0.0)
    return metrics


def sample(metrics: EngineMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_retry_counts_once_and_a_re_queue_after_a_lease_expiry_counts_as_an_expiry():
    """Decision 37 (Q004-6: the seed counted a retry when scheduled and again when its attempt ran)."""
    h = Harness()
    h.bind(binding(name=P, execution="external", entry_workflow="wf/m", lease_ttl_ms=1000,
                   retry={"max_attempts": 3, "backoff_ms": 100, "factor": 1.0}))  # fmt: skip
    run_id = h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, request_id="r1").run_id

    def lease() -> str:
        starts = [o.value for o in h.outputs if o.role == "dispatch" and o.value.action == "start"]
        return starts[-1].lease_id

    h.report(P, run_id, lease(), "step_started", step_id="s1", at_ms=T0 + 100)
    h.report(P, run_id, lease(), "step_completed", step_id="s1", at_ms=T0 + 600)
    h.report(P, run_id, lease(), "failed", error="flaky", retryable=True, at_ms=T0 + 700)  # a retry
    h.tick(P, T0 + 800)  # attempt 2 is dispatched
    h.tick(P, T0 + 1800)  # its lease runs out: re-queued, no attempt spent (not a retry)
    h.tick(P, T0 + 1900)  # dispatched again, still attempt 2 (the seed counted each such dispatch)
    h.report(P, run_id, lease(), "completed", cost=cost(0.01, 10), at_ms=T0 + 2000)
    assert [d.value.attempt for d in h.outputs if d.role == "dispatch" and d.value.action == "start"] == [1, 2, 2]
    metrics = observed(h)
    assert sample(metrics, "personaflow_retries_total", persona=P) == 1
    assert sample(metrics, "personaflow_lease_expiries_total", persona=P) == 1
    assert sample(metrics, "personaflow_run_latency_seconds_count", persona=P, outcome="completed") == 1
    assert sample(metrics, "personaflow_run_latency_seconds_sum", persona=P, outcome="completed") == 2.0
    assert sample(metrics, "personaflow_step_latency_seconds_sum", persona=P) == 0.5
    assert sample(metrics, "personaflow_queue_lag_seconds_count", persona=P) == 1  # first dispatches only
    assert sample(metrics, "personaflow_budget_tokens_total", persona=P) == 10


def test_a_final_cost_below_the_usage_is_counted_as_a_correction_not_a_negative_increment():
    h = Harness()
    h.bind(binding(name=P, execution="external", entry_workflow="wf/m"))
    run_id = h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, request_id="r1").run_id
    [start] = [o.value for o in h.outputs if o.role == "dispatch"]
    h.report(P, run_id, start.lease_id, "usage", cost_usd=0.05, tokens=50)
    h.report(P, run_id, start.lease_id, "completed", cost=cost(0.02, 20))
    metrics = observed(h)
    assert sample(metrics, "personaflow_budget_cost_usd_total", persona=P) == 0.05
    assert sample(metrics, "personaflow_budget_cost_corrected_usd_total", persona=P) == pytest.approx(0.03)
    assert sample(metrics, "personaflow_budget_tokens_corrected_total", persona=P) == 30


def test_records_of_other_kinds_are_not_decoded_and_a_policy_denial_counts_by_reason():
    metrics = EngineMetrics()
    headers = [("persona", P.encode()), ("kind", b"persona.policy.denied"), ("event_id", b"persona:metered/1")]
    denied = json.dumps({"occurred_at_ms": T0, "run_id": None, "payload": {"reason": "no prod deploys"}}).encode()
    ignored = Output("outbox", P, b"not json at all", [("persona", P.encode()), ("kind", b"persona.trigger.queued")])
    metrics.observe_pass({}, [Output("outbox", P, denied, headers), ignored], 0.0)
    assert sample(metrics, "personaflow_policy_denials_total", persona=P, reason="no prod deploys") == 1


# ------------------------------------------------------------------- over a broker


def now_ms() -> int:
    return int(time.time() * 1000)


def send_trigger(probe: PersonaProbe, key: str, at_ms: int | None = None, **fields: Any) -> str:
    request_id = f"{probe.name}-{key}"
    request = {"request_id": request_id, "persona": probe.name, "provider": "linear", "kind": "issue",
               "metadata": {"issue_key": key}, "received_at_ms": at_ms, **fields}  # fmt: skip
    probe.kafka.send("triggers", probe.name, request)
    return request_id


def families(worker) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(worker.get("/metrics").decode())}


def of(found: dict[str, Any], name: str, sample_name: str | None = None, **labels: str) -> float:
    return value(found[name].samples, sample_name or name, **labels)


@pytest.mark.broker
def test_the_seeds_run_metrics_after_inline_external_retried_exhausted_preempted_and_expired_runs(
    worker, kafka, persona_name
):
    p = PersonaProbe(kafka, persona_name)
    q = PersonaProbe(kafka, f"{persona_name}-q")
    name = p.name
    try:
        # q: a run nobody reports on; its lease expires (300 ms) and, at the first expiry, ends it
        q.bind({**SELF_REPORTED, "lease_ttl_ms": 300, "retry": {"max_attempts": 1}})
        expiring = q.trigger("linear", "issue", {"issue_key": "Q-1"})
        assert expiring["status"] == "dispatched"

        # p: every event time is given (T + ms), so each latency is known; the last ones are
        # ahead of the wall clock, so no tick can move the persona's clock past them
        t = now_ms()
        p.bind({**SELF_REPORTED, "budget": {"daily_usd": 1.0, "hourly_usd": 0.9, "max_tokens": 10_000},
                "estimated_run_usd": 0.1, "retry": {"max_attempts": 2, "backoff_ms": 100}})  # fmt: skip
        inline = p.trigger("linear", "issue", {"issue_key": "M-inline"}, cost={"cost_usd": 0.2, "tokens": 100}, at_ms=t)
        assert inline["status"] == "completed"
        big = p.trigger("linear", "issue", {"issue_key": "M-big"}, cost={"cost_usd": 5.0, "tokens": 1}, at_ms=t)
        assert big["status"] == "budget_exhausted"
        a = p.trigger("linear", "issue", {"issue_key": "M-a"}, at_ms=t + 10)
        assert a["status"] == "dispatched"
        a_run, a_lease = a["run_id"], a["lease"]["id"]

        # in flight: A's reservation (0.1) counts in the projected burn and against the remaining
        def reserved() -> dict[str, Any] | None:
            found = families(worker)
            burn = of(found, "personaflow_budget_projected_burn_usd", persona=name, window="daily")
            return found if burn == pytest.approx(0.3) else None

        mid = eventually(reserved, 30, "the reservation in the projected burn")
        assert of(mid, "personaflow_budget_remaining_usd", persona=name, window="daily") == pytest.approx(0.7)
        x = send_trigger(p, "M-x", t + 20)  # no SLO, queued first
        y = send_trigger(p, "M-y", t + 30, slo={"tier": "gold", "queue_target_ms": 100})
        assert p.receipts_for(x)[0]["status"] == p.receipts_for(y)[0]["status"] == "lease_busy"
        eventually(lambda: of(families(worker), "personaflow_queue_depth", persona=name) == 2, 30, "queue depth 2")

        p.report(a_run, a_lease, "step_started", step_id="s1", at_ms=t + 100)
        p.report(a_run, a_lease, "step_completed", step_id="s1", at_ms=t + 600)
        p.report(a_run, a_lease, "usage", cost_usd=0.05, tokens=50, at_ms=t + 650)
        p.report(a_run, "persona_lease_stale", "heartbeat")  # fenced
        p.report(a_run, a_lease, "failed", error="flaky", retryable=True, at_ms=t + 700)
        # the lease is free: Y (SLO breached: slack 100 - 670) goes ahead of X, queued before it
        y_dispatch = p.receipts_for(y, 2)[1]
        assert y_dispatch["status"] == "dispatched"
        eventually(lambda: json.loads(worker.get(f"/runs/{a_run}"))["status"] == "ready", 30, "A's retry due")
        p.report(y_dispatch["run_id"], y_dispatch["lease"]["id"], "completed",
                 cost={"cost_usd": 0.1, "tokens": 10}, at_ms=t + 60_000)  # fmt: skip
        a_retry = p.receipts_for(a["request_id"], 3)[2]  # A's retry ranks before X (its work is older)
        assert (a_retry["status"], a_retry["attempt"]) == ("dispatched", 2)
        p.report(a_run, a_retry["lease"]["id"], "completed", cost={"cost_usd": 0.1, "tokens": 100}, at_ms=t + 60_100)
        x_dispatch = p.receipts_for(x, 2)[1]
        p.report(x_dispatch["run_id"], x_dispatch["lease"]["id"], "completed",
                 cost={"cost_usd": 0.05, "tokens": 5}, at_ms=t + 60_200)  # fmt: skip
        assert p.final_receipt(x)["status"] == "completed"
        assert q.final_receipt(expiring["request_id"])["status"] == "failed"

        def settled() -> dict[str, Any] | None:
            found = families(worker)
            done = (
                of(found, "personaflow_run_latency_seconds", "personaflow_run_latency_seconds_count",
                   persona=name, outcome="completed") == 3
                and of(found, "personaflow_lease_expiries", "personaflow_lease_expiries_total", persona=q.name) == 1
            )  # fmt: skip
            return found if done else None

        found = eventually(settled, 30, "the mix counted")
        for family, kind in SEED_METRICS.items():
            assert found[family].type == kind, family
        mine = {"persona": name}
        lag = found["personaflow_queue_lag_seconds"]
        # first dispatches: A at once, Y after 670 ms, X after 60,080 ms
        assert value(lag.samples, "personaflow_queue_lag_seconds_count", **mine) == 3
        assert value(lag.samples, "personaflow_queue_lag_seconds_sum", **mine) == pytest.approx(60.75)
        latency = found["personaflow_run_latency_seconds"]
        completed = {**mine, "outcome": "completed"}  # Y 59.3 s, A 60.09 s (retry included), X 0.1 s
        assert value(latency.samples, "personaflow_run_latency_seconds_sum", **completed) == pytest.approx(119.49)
        expired = {"persona": q.name, "outcome": "expired"}
        assert value(latency.samples, "personaflow_run_latency_seconds_count", **expired) == 1
        assert value(latency.samples, "personaflow_run_latency_seconds_sum", **expired) >= 0.3
        steps = found["personaflow_step_latency_seconds"]
        assert value(steps.samples, "personaflow_step_latency_seconds_count", **mine) == 1
        assert value(steps.samples, "personaflow_step_latency_seconds_sum", **mine) == pytest.approx(0.5)
        # spend: inline 0.2 + A's usage 0.05 + Y 0.1 + A's retry 0.1 + X 0.05; nothing taken back
        spent = of(found, "personaflow_budget_cost_usd", "personaflow_budget_cost_usd_total", **mine)
        assert spent == pytest.approx(0.5)
        assert of(found, "personaflow_budget_tokens", "personaflow_budget_tokens_total", **mine) == 265
        assert not [s for s in found["personaflow_budget_cost_corrected_usd"].samples if s.labels == mine]
        assert of(found, "personaflow_retries", "personaflow_retries_total", **mine) == 1  # decision 37
        slack = found["personaflow_slo_queue_slack_ms"]
        # one dispatch with an SLO, its slack -570 ms (no _sum: a histogram with negative buckets has none)
        assert value(slack.samples, "personaflow_slo_queue_slack_ms_count", **mine) == 1
        buckets = {
            s.labels["le"]: s.value for s in slack.samples if s.name.endswith("_bucket") and s.labels["persona"] == name
        }
        assert (buckets["-1000.0"], buckets["-500.0"]) == (0, 1)
        assert of(found, "personaflow_slo_preemptions", "personaflow_slo_preemptions_total", **mine) == 1
        assert of(found, "personaflow_fenced_reports", "personaflow_fenced_reports_total", **mine) == 1
        assert of(found, "personaflow_lease_expiries", "personaflow_lease_expiries_total", **mine) == 0
        # its bindings have no policy (other tests of the session may deny)
        assert not [s for s in found["personaflow_policy_denials"].samples if s.labels["persona"] == name]
        assert of(found, "personaflow_queue_depth", **mine) == 0
        # the windows as the persona's clock (t + 60.2 s, ahead of the wall clock) sees them
        clock = max(now_ms(), t + 60_200)
        if day_start(clock) == day_start(t):
            assert of(found, "personaflow_budget_remaining_usd", **mine, window="daily") == pytest.approx(0.5)
            assert of(found, "personaflow_budget_projected_burn_usd", **mine, window="daily") == pytest.approx(0.5)
            assert of(found, "personaflow_budget_remaining_tokens", **mine) == 10_000 - 265
            assert of(found, "personaflow_budget_projected_burn_tokens", **mine) == 265
        if hour_start(clock) == hour_start(t):
            assert of(found, "personaflow_budget_remaining_usd", **mine, window="hourly") == pytest.approx(0.4)
        receipts = found["personaflow_receipts"].samples
        assert value(receipts, "personaflow_receipts_total", status="budget_exhausted") >= 1
        assert value(receipts, "personaflow_receipts_total", status="retrying") >= 1
    finally:
        p.close()
        q.close()
