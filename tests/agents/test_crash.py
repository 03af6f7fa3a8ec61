"""SIGKILL a worker while triggers are in flight; restart it; nothing is lost or doubled.

The short form (1,000 triggers, 20 personas, one kill) runs in ``make test``; ``make chaos``
runs the long form (6,000 triggers, 40 personas, four kills). Triggers go out in waves and
each kill lands right after the first receipt of a wave, while the rest is in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from engine.kafka import new_producer
from personaflow.client import read_all
from tables.replay import verify
from tables.timefmt import DAY_MS

from ..support.personas import PersonaProbe

FINAL = {"completed", "duplicate", "budget_exhausted", "dead_lettered", "rejected", "failed"}


def make_scenario(prefix: str, personas: int, triggers: int, seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    rng = random.Random(seed)
    names = [f"{prefix}-p{i:02d}" for i in range(personas)]
    at = (int(time.time() * 1000) // DAY_MS + 1) * DAY_MS + 9 * 3_600_000  # tomorrow 09:00Z: one budget day
    requests = []
    for n in range(triggers):
        persona = rng.choice(names)
        number = rng.randrange(40)  # repeated work keys: duplicates
        request = {
            "request_id": f"{persona}-r{n}",
            "persona": persona,
            "provider": "github",
            "kind": "pull_request",
            "metadata": {"repository": "acme/app", "number": str(number)},
            "cost": {"cost_usd": rng.choice([0.001, 0.002, 0.005, 0.01]), "tokens": rng.randrange(1, 50)},
            "priority": rng.randrange(3),
            "received_at_ms": at + n,
        }
        requests.append(request)
        if rng.random() < 0.05:  # a producer retry: the same request again
            requests.append(dict(request))
    return names, requests


async def flood(kafka, requests: list[dict[str, Any]], controls: list[dict[str, Any]], per_second: float = 0) -> None:
    """Publish the requests (at most ``per_second`` of them a second, if given), then the controls."""
    client = kafka.client
    producer = new_producer(client.settings, client.bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = []
        started = time.monotonic()
        for n, r in enumerate(requests):
            pending.append(
                await producer.send(client.names.triggers, json.dumps(r).encode(), key=r["persona"].encode())
            )
            if per_second and n % 50 == 49:
                await asyncio.sleep(max(0.0, started + (n + 1) / per_second - time.monotonic()))
        pending += [
            await producer.send(client.names.control, json.dumps(c).encode(), key=c["persona"].encode())
            for c in controls
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class Background:
    """Runs one coroutine to completion on a thread of its own (the test thread kills meanwhile)."""

    def __init__(self, work) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work) -> None:
        try:
            asyncio.run(work)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout_s: float = 120) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error


def run_crash_scenario(worker, kafka, persona_name: str, personas: int, triggers: int, kills: int, seed: int) -> None:
    names, requests = make_scenario(persona_name[:60], personas, triggers, seed)
    probe = PersonaProbe(kafka, names[0], timeout_s=180)
    try:
        for i, name in enumerate(names):  # a few low daily budgets so exhaustion happens too
            kafka.send(
                "bindings",
                name,
                {"name": name, "entry_workflow": "wf", "budget": {"daily_usd": 0.05 if i % 7 == 0 else 100.0}},
                timestamp_ms=requests[0]["received_at_ms"] - 1,
            )
        probe.statuses.until(lambda seen: {r.key for r in seen} >= set(names), 120, "every persona bound")
        paused = names[1:4]
        for name in paused:
            probe.control_for(name, "pause", requests[0]["received_at_ms"])
        resumes = [
            {
                "command_id": f"{name}-resume",
                "persona": name,
                "action": "resume",
                "actor": "chaos",
                "at_ms": requests[-1]["received_at_ms"] + 1,
            }
            for name in paused
        ]

        # Waves: each kill lands while a wave is being processed (never after it is done).
        wanted = {r["request_id"] for r in requests}
        waves = [
            requests[i * len(requests) // (kills + 1) : (i + 1) * len(requests) // (kills + 1)]
            for i in range(kills + 1)
        ]
        for wave in waves[:-1]:
            # The wave goes out over about a second; the kill lands after its first receipt,
            # while the rest is still being published and processed.
            ids = {r["request_id"] for r in wave}
            producer = Background(flood(kafka, wave, [], per_second=len(wave)))
            probe.receipts.until(
                lambda seen: any((r.value or {}).get("request_id") in ids for r in seen),
                180,
                "the wave's first receipt before the kill",
            )
            decided = len({(r.value or {}).get("request_id") for r in probe.receipts.seen} & ids)
            worker.restart(kill=True)
            producer.join()
            assert decided < len(ids), "the kill must land while the wave is still in flight"
        kafka.run(flood(kafka, waves[-1], resumes))

        def finished(seen: list) -> bool:
            last: dict[str, dict] = {}
            for record in seen:
                value = record.value or {}
                if value.get("request_id") in wanted:
                    last[value["request_id"]] = value
            return len(last) == len(wanted) and all(v["status"] in FINAL and not v["queued"] for v in last.values())

        probe.receipts.until(finished, 300, "a final receipt for every request")
        check_invariants(kafka, probe, names, requests)
    finally:
        probe.close()


def check_invariants(kafka, probe: PersonaProbe, names: list[str], requests: list[dict[str, Any]]) -> None:
    client = kafka.client
    receipts = [r.value for r in kafka.run(read_all(client, "receipts")) if r.value]
    outbox = [r.value for r in kafka.run(read_all(client, "outbox")) if r.value]
    mine = set(names)

    # No request has two different receipts for the same decision (one receipt_id per decision).
    by_receipt: dict[str, list] = defaultdict(list)
    for receipt in receipts:
        if receipt["persona"] in mine:
            by_receipt[receipt["receipt_id"]].append(receipt)
    assert all(all(r == group[0] for r in group) for group in by_receipt.values())

    # No event id with two different payloads; every stream's seq gap-free from 1.
    by_event: dict[str, list] = defaultdict(list)
    seqs: dict[str, set[int]] = defaultdict(set)
    for event in outbox:
        if event["persona"] in mine:
            by_event[event["event_id"]].append(event)
            seqs[event["stream"]].add(event["seq"])
    assert all(all(e == group[0] for e in group) for group in by_event.values())
    assert all(seq == set(range(1, max(seq) + 1)) for seq in seqs.values())

    # Each persona's spend equals the cost of its completed runs.
    cost_of = {r["request_id"]: r["cost"]["cost_usd"] for r in requests}
    completed: dict[str, set[str]] = defaultdict(set)
    for receipt in receipts:
        if receipt["persona"] in mine and receipt["status"] == "completed":
            completed[receipt["persona"]].add(receipt["request_id"])
    statuses = {r.key: r.value for r in kafka.run(read_all(client, "status")) if r.key in mine}
    for name in names:
        expected = sum(cost_of[request_id] for request_id in completed[name])
        assert statuses[name]["budget"]["spent_today_usd"] == pytest.approx(expected, abs=1e-9), name
        assert statuses[name]["queued_events"] == 0

    # And the whole pipeline replays to exactly what was published, once it has caught
    # up with everything in the inbox (readiness probes sent during restarts included).
    inbox = kafka.run(read_all(client, "persona_inbox"))
    asked = {(r.key, r.value["request"]["request_id"]) for r in inbox if (r.value or {}).get("type") == "trigger"}

    def unanswered() -> set[tuple[str, str]]:
        return asked - {(r.key, (r.value or {}).get("request_id")) for r in probe.receipts.seen} - answered(receipts)

    try:
        probe.receipts.until(lambda _: not unanswered(), 120, "a receipt for every trigger in the inbox")
    except TimeoutError:
        raise AssertionError(f"triggers in the inbox never answered: {sorted(unanswered())[:10]}") from None
    receipts = [r.value for r in kafka.run(read_all(client, "receipts")) if r.value]
    outbox = [r.value for r in kafka.run(read_all(client, "outbox")) if r.value]
    run_inbox = kafka.run(read_all(client, "run_inbox"))
    positions = [(r.partition, r.offset, r.raw) for r in inbox]
    for result in verify(positions, [(r.partition, r.offset, r.raw) for r in run_inbox], receipts, outbox):
        assert result.ok, result.problems[:10]


def answered(receipts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["persona"], r["request_id"]) for r in receipts}


@pytest.mark.broker
def test_sigkill_with_1000_triggers_in_flight_loses_and_doubles_nothing(worker, kafka, persona_name):
    run_crash_scenario(worker, kafka, persona_name, personas=20, triggers=1000, kills=1, seed=7)


@pytest.mark.chaos
def test_repeated_sigkills_under_load_lose_and_double_nothing(worker, kafka, persona_name):
    rounds = int(os.environ.get("CHAOS_KILLS", "4"))
    run_crash_scenario(
        worker,
        kafka,
        persona_name,
        personas=40,
        triggers=int(os.environ.get("CHAOS_TRIGGERS", "6000")),
        kills=rounds,
        seed=int(os.environ.get("CHAOS_SEED", "11")),
    )


# ------------------------------------------------------------------ external runs


TERMINAL_RUN_EVENTS = {"run.completed", "run.failed", "run.cancelled", "run.expired"}


@pytest.mark.broker
def test_sigkill_twice_with_100_external_runs_in_flight_ends_every_run_once(worker, executor, kafka, persona_name):
    """The reference executor keeps working while the worker is killed twice."""
    names = [f"{persona_name[:60]}-x{i:02d}" for i in range(20)]
    binding = {
        "entry_workflow": "wf/ext",
        "execution": "external",
        "lease_ttl_ms": 4000,
        "estimated_run_usd": 0.002,
        "budget": {"daily_usd": 100.0},
        "retry": {"max_attempts": 3, "backoff_ms": 200},
        "executor_options": {
            "steps": "3",
            "duration_ms": "900",
            "tokens_per_step": "10",
            "cost_per_step_usd": "0.001",
            "fail_probability": "0.2",
            "heartbeat_ms": "300",
        },
    }
    probe = PersonaProbe(kafka, names[0], timeout_s=180)
    try:
        for name in names:
            kafka.send("bindings", name, {**binding, "name": name})
        probe.statuses.until(lambda seen: {r.key for r in seen} >= set(names), 120, "every persona bound")
        requests = [
            {
                "request_id": f"{name}-w{n}",
                "persona": name,
                "provider": "linear",
                "kind": "issue",
                "metadata": {"issue_key": f"W-{n}"},
            }
            for n in range(5)
            for name in names
        ]
        wanted = {r["request_id"] for r in requests}

        def finals(seen: list) -> set[str]:
            return {
                (r.value or {}).get("request_id")
                for r in seen
                if (r.value or {}).get("request_id") in wanted and r.value["status"] in ("completed", "failed")
            }

        kafka.run(flood(kafka, requests, []))
        for after in (15, 50):
            probe.receipts.until(lambda seen: len(finals(seen)) >= after, 180, f"{after} runs finished")
            assert len(finals(probe.receipts.seen)) < len(wanted), "the kill must land while runs are in flight"
            worker.restart(kill=True)
        probe.receipts.until(lambda seen: finals(seen) == wanted, 300, "every run finished")
        check_external_runs(kafka, worker, probe, names, wanted)
    finally:
        probe.close()


def check_external_runs(kafka, worker, probe: PersonaProbe, names: list[str], wanted: set[str]) -> None:
    client = kafka.client
    mine = set(names)
    receipts = [r.value for r in kafka.run(read_all(client, "receipts")) if r.value and r.value["persona"] in mine]
    outbox = [r.value for r in kafka.run(read_all(client, "outbox")) if r.value and r.value["persona"] in mine]

    # Every request: one final decision (a receipt id may be published twice, identically).
    final_ids: dict[str, set[str]] = defaultdict(set)
    for receipt in receipts:
        if receipt["status"] in ("completed", "failed", "cancelled"):
            final_ids[receipt["request_id"]].add(receipt["receipt_id"])
    assert set(final_ids) == wanted and all(len(ids) == 1 for ids in final_ids.values())

    # Every run ends exactly once: one terminal event id per run stream.
    run_ids = {r["run_id"] for r in receipts if r.get("run_id")}
    terminal: dict[str, set[str]] = defaultdict(set)
    for event in outbox:
        if event["kind"] in TERMINAL_RUN_EVENTS:
            terminal[event["stream"]].add(event["event_id"])
    assert all(len(terminal[f"run:{run_id}"]) == 1 for run_id in run_ids), "a run ended twice or never"

    # Spend = the ledgers' actual costs; no lease left behind.
    statuses = {r.key: r.value for r in kafka.run(read_all(client, "status")) if r.key in mine}
    now_ms = int(time.time() * 1000)
    for name in names:
        listed = json.loads(worker.get(f"/personas/{name}/runs?limit=100"))["runs"]
        ledger = 0.0
        for run in listed:
            detail = json.loads(worker.get(f"/runs/{run['run_id']}"))
            assert detail["terminal"], detail["run_id"]
            ledger += sum(row["actual_usd"] for row in detail["ledger"])
        budget = statuses[name]["budget"]
        assert budget["spent_today_usd"] == pytest.approx(ledger, abs=1e-9), name
        lease = statuses[name]["active_lease"]
        assert lease is None or lease["expires_at_ms"] > now_ms, name
    expired = [e for e in outbox if e["kind"] == "persona.lease.expired"]
    print(
        f"external runs: {len(run_ids)} runs, {len(expired)} lease expiries,"
        f" {sum(1 for r in receipts if r['status'] == 'retrying')} retries"
    )

    inbox = kafka.run(read_all(client, "persona_inbox"))
    run_inbox = kafka.run(read_all(client, "run_inbox"))
    all_receipts = [r.value for r in kafka.run(read_all(client, "receipts")) if r.value]
    all_outbox = [r.value for r in kafka.run(read_all(client, "outbox")) if r.value]
    for result in verify(
        [(r.partition, r.offset, r.raw) for r in inbox],
        [(r.partition, r.offset, r.raw) for r in run_inbox],
        all_receipts,
        all_outbox,
    ):
        assert result.ok, result.problems[:10]
