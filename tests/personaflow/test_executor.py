"""The reference executor (``personaflow executor``) as a process over a real broker: it
loses no work. A new group reads the dispatch log from its beginning, so dispatches
published before the group first joined start at once (not after a lease's time to
live); offsets are committed only for what it acted on, so a restarted executor reads
its unfinished runs again and restarts them under their current lease; its event ids
are unique across restarts, so personaflow accepts the restarted executor's reports.

Each test has a pipeline of its own (topic prefix, worker, executor group), so neither the
session's executor nor any other test sees its dispatches.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from engine.kafka import BrokerAddress, new_consumer
from personaflow.embedded import free_port
from personaflow.process import ExecutorProcess
from streams.settings import Settings

from ..support.cluster import SyncWorker, own_pipeline
from ..support.personas import PersonaProbe
from ..support.sync import SyncClient
from ..support.wait import eventually

pytestmark = pytest.mark.broker

#: A lease far longer than any wait here: a run that waits for its lease to expire fails the test.
LEASE_TTL_MS = 120_000


@pytest.fixture
def pipeline(settings: Settings, broker: BrokerAddress, data_dir: Path) -> Iterator[tuple[Settings, SyncClient, Path]]:
    """Settings, a client and a log directory of a pipeline of its own, with its worker running
    (on a web port of its own: the session worker may hold the session's)."""
    with own_pipeline(settings, broker, "exe", web_port=free_port()) as (own, kafka):
        logs = data_dir / f"logs-{own.app_id}"
        worker = SyncWorker(own, kafka, logs)
        worker.start()
        try:
            yield own, kafka, logs
        finally:
            worker.stop()


def new_group(settings: Settings) -> str:
    """An executor consumer group nobody used before."""
    return f"{settings.app_id}-executor-{uuid.uuid4().hex[:6]}"


def committed(kafka: SyncClient, settings: Settings, broker: BrokerAddress, group: str, tp: TopicPartition) -> int:
    """The offset ``group`` committed on ``tp`` (-1 if none)."""

    async def read() -> int:
        consumer = new_consumer(settings, broker.bootstrap, group_id=group)
        await consumer.start()
        try:
            offset = await consumer.committed(tp)
            return -1 if offset is None else int(offset)
        finally:
            await consumer.stop()

    return kafka.run(read())


def external(**fields: Any) -> dict[str, Any]:
    return {"execution": "external", "lease_ttl_ms": LEASE_TTL_MS, **fields}


def test_dispatches_published_before_a_new_group_joins_start_within_seconds(
    pipeline: tuple[Settings, SyncClient, Path], persona_name: str
) -> None:
    own, kafka, logs = pipeline
    # A persona's runs take its lease one after another: one dispatch each from several personas.
    names = [f"{persona_name[:60]}-{n}" for n in range(4)]
    probe = PersonaProbe(kafka, names[0], timeout_s=30)
    executor = ExecutorProcess(own, logs, group=new_group(own))
    try:
        for name in names:
            kafka.send("bindings", name, {"entry_workflow": "wf/early", **external(), "name": name})
        probe.statuses.until(lambda seen: {r.key for r in seen} >= set(names), 60, "every persona bound")
        requests = {name: f"{name}-early" for name in names}
        for name, request_id in requests.items():
            kafka.send(
                "triggers",
                name,
                {"request_id": request_id, "persona": name, "provider": "linear", "kind": "issue", "metadata": {}},
            )

        def receipts(status: str) -> dict[str, dict[str, Any]]:
            return {
                r.value["request_id"]: r.value
                for r in probe.receipts.seen
                if (r.value or {}).get("request_id") in requests.values() and r.value["status"] == status
            }

        probe.receipts.until(lambda seen: len(receipts("dispatched")) == len(names), 60, "every run dispatched")
        run_ids = {receipt["run_id"] for receipt in receipts("dispatched").values()}

        executor.spawn()  # the group joins only now, after every dispatch was published
        kafka.run(executor.wait_ready())
        joined = time.monotonic()
        probe.receipts.until(lambda seen: len(receipts("completed")) == len(names), 30, "every run completed")
        took_s = time.monotonic() - joined
        assert took_s < 20, f"runs completed {took_s:.1f}s after the executor joined"

        probe.dispatches.catch_up()
        for run_id in run_ids:
            assert [d["action"] for d in probe.dispatches_of(run_id)] == ["start"], f"run {run_id} dispatched again"
        probe.outbox.catch_up()
        assert not [r for r in probe.outbox.seen if r.key in names and r.value["kind"] == "persona.lease.expired"], (
            "a lease expired"
        )
    finally:
        executor.stop()
        probe.close()


def test_a_sigkilled_executor_restarts_its_run_under_the_same_lease_and_its_reports_are_accepted(
    pipeline: tuple[Settings, SyncClient, Path], broker: BrokerAddress, persona_name: str
) -> None:
    own, kafka, logs = pipeline
    persona = PersonaProbe(kafka, persona_name, timeout_s=60)
    group = new_group(own)
    executor = ExecutorProcess(own, logs, group=group)
    steps = 6
    try:
        executor.spawn()
        kafka.run(executor.wait_ready())
        persona.bind(external(executor_options={"steps": str(steps), "duration_ms": str(steps * 700)}))

        # A short run first: once it completed, its dispatch's offset is committed (a finished
        # run is not read again after the crash).
        short = persona.trigger("linear", "issue", {"issue_key": "DONE-1", "executor.steps": "1"})
        assert isinstance(short, dict)
        assert persona.final_receipt(short["request_id"])["status"] == "completed"
        persona.dispatch_for(short["run_id"])
        [start] = [r for r in persona.dispatches.seen if r.key == short["run_id"]]
        tp = TopicPartition(start.topic, start.partition)
        eventually(
            lambda: committed(kafka, own, broker, group, tp) > start.offset, 30, "the short run's offset committed"
        )

        receipt = persona.trigger("linear", "issue", {"issue_key": "KILL-1"})
        assert isinstance(receipt, dict) and receipt["status"] == "dispatched"
        run_id, lease_id = receipt["run_id"], receipt["lease"]["id"]
        persona.wait_run_events(run_id, "run.step_completed", 2)

        executor.stop(kill=True)  # SIGKILL: no clean stop, nothing committed on the way out
        killed = time.monotonic()
        executor.spawn()  # the same group
        kafka.run(executor.wait_ready())

        final = persona.final_receipt(receipt["request_id"])
        took_s = time.monotonic() - killed
        assert final["status"] == "completed", final
        assert took_s < LEASE_TTL_MS / 1000 / 2, f"the run completed {took_s:.1f}s after the kill"
        persona.dispatches.catch_up()
        assert [d["action"] for d in persona.dispatches_of(run_id)] == ["start"]
        assert persona.dispatch_for(run_id)["lease_id"] == lease_id
        assert persona.events("persona.lease.expired") == []

        # The restarted executor ran the run again from its start, and personaflow took every
        # one of its reports (none dropped as a redelivery of the killed executor's ids): its
        # ``started`` is answered (a running run cannot start again), its steps all count.
        events = persona.run_events(run_id)
        rejected = [e["payload"] for e in events if e["kind"] == "run.report_rejected"]
        assert [r["kind"] for r in rejected] == ["started"], rejected
        assert "cannot start again" in rejected[0]["reason"]
        step_ids = [e["payload"]["step_id"] for e in events if e["kind"] == "run.step_started"]
        before_kill = len(step_ids) - steps
        assert before_kill >= 2 and step_ids == [f"s{n}" for n in range(1, before_kill + 1)] + [
            f"s{n}" for n in range(1, steps + 1)
        ], step_ids
        [completed] = [e for e in events if e["kind"] == "run.completed"]
        assert (completed["payload"]["attempt"], completed["payload"]["output"]) == (1, {"steps": steps})
        # The finished run's start was not read again: nothing was reported about it since.
        assert [e["kind"] for e in persona.run_events(short["run_id"]) if e["kind"] == "run.report_rejected"] == []
    finally:
        executor.stop()
        persona.close()


def test_a_retried_run_resumes_from_its_last_checkpoint_and_skips_the_steps_it_completed(
    pipeline: tuple[Settings, SyncClient, Path], persona_name: str
) -> None:
    own, kafka, logs = pipeline
    persona = PersonaProbe(kafka, persona_name, timeout_s=60)
    executor = ExecutorProcess(own, logs, group=new_group(own))
    steps, tokens = 4, 10
    try:
        executor.spawn()
        kafka.run(executor.wait_ready())
        options = {"steps": str(steps), "tokens_per_step": str(tokens), "fail_on_attempt": "1", "checkpoint": "true"}
        persona.bind(external(retry={"max_attempts": 2, "backoff_ms": 100}, executor_options=options))
        receipt = persona.trigger("linear", "issue", {"issue_key": "RESUME-1"})
        assert isinstance(receipt, dict) and receipt["status"] == "dispatched", receipt
        run_id = receipt["run_id"]
        final = persona.final_receipt(receipt["request_id"])
        assert final["status"] == "completed", final

        # The retry's start carries its attempt's idempotency key and the checkpoint the first
        # attempt reported last (before its simulated failure, at step steps // 2).
        persona.dispatches.until(
            lambda seen: len([r for r in seen if r.key == run_id and r.value["action"] == "start"]) >= 2,
            30,
            "the retry's start dispatch",
        )
        first, retry = [d for d in persona.dispatches_of(run_id) if d["action"] == "start"]
        assert (first["attempt"], first["idempotency_key"], first["checkpoint"]) == (1, f"{run_id}:1", None)
        assert (retry["attempt"], retry["idempotency_key"]) == (2, f"{run_id}:2")
        checkpoint = retry["checkpoint"]
        assert isinstance(checkpoint, dict) and set(checkpoint) == {"completed_steps"}, checkpoint
        done = checkpoint["completed_steps"]
        assert 1 <= done < steps, checkpoint

        # The run stream, split by the attempt each ``run.started`` opened: the retry started
        # no step the first attempt had completed, spent nothing on them, and its checkpoints
        # count the steps of the run across both attempts.
        by_attempt: dict[int, list[dict[str, Any]]] = {}
        attempt = 0
        for event in persona.run_events(run_id):
            if event["kind"] == "run.started":
                attempt = event["payload"]["attempt"]
            by_attempt.setdefault(attempt, []).append(event)

        def of(attempt: int, kind: str) -> list[Any]:
            return [e["payload"] for e in by_attempt.get(attempt, []) if e["kind"] == kind]

        assert [p["step_id"] for p in of(1, "run.step_started")] == [f"s{n}" for n in range(1, done + 1)]
        assert [p["payload"] for p in of(1, "run.checkpoint")] == [{"completed_steps": n} for n in range(1, done + 1)]
        assert [p["step_id"] for p in of(2, "run.step_started")] == [f"s{n}" for n in range(done + 1, steps + 1)]
        assert [p["payload"] for p in of(2, "run.checkpoint")] == [
            {"completed_steps": n} for n in range(done + 1, steps + 1)
        ]
        assert [p["tokens"] for p in of(2, "run.usage")] == [tokens] * (steps - done)
        assert [p["output"] for p in of(2, "run.completed")] == [{"steps": steps}]
        assert of(2, "run.report_rejected") == []
    finally:
        executor.stop()
        persona.close()
