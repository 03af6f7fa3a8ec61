"""Benchmarks (``make bench``): throughput and memory, written to ``bench-results/``.

Nothing here asserts a speed. Each benchmark measures 1,000 triggers for one persona
after 1,000 and after 50,000 earlier completed runs (three rounds each, median
reported), first for the pure transition and then end to end through the broker and
a worker (wall-clock rate plus CPU per trigger of the worker and the broker, which are
less noisy on a shared machine), and records the numbers.

``make test`` runs the same code in a short form (tiny sizes, results in a temporary
file) so the benchmarks cannot rot between ``make bench`` runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streams.inbox import BindingChanged, TriggerReceived
from engine.kafka import new_producer
from streams.wire import PersonaBinding, TriggerRequest
from tables import persona as transition
from tables.store import MemoryStore

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"
FULL = {"measured": int(os.environ.get("BENCH_TRIGGERS", "1000")),
        "rounds": int(os.environ.get("BENCH_ROUNDS", "3")),
        "histories": [int(n) for n in os.environ.get("BENCH_HISTORIES", "1000,50000").split(",")]}
SHORT = {"measured": 30, "rounds": 1, "histories": [10, 100]}


def record_result(name: str, result: dict[str, Any], path: Path = RESULTS / "results.json") -> None:
    path.parent.mkdir(exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[name] = {**result, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                  "platform": platform.platform()}}
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(f"\n{name}: {json.dumps(result, indent=2)}")


def request(persona: str, n: int, at_ms: int) -> dict[str, Any]:
    return {"request_id": f"{persona}-{n}", "persona": persona, "provider": "webhook", "kind": "push",
            "metadata": {"dedupe_key": f"{persona}-{n}"}, "cost": {"cost_usd": 0.0001, "tokens": 1},
            "received_at_ms": at_ms}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (0.0 when it is not a local process)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_pure_transition(measured: int, rounds: int, histories: list[int]) -> dict[str, Any]:
    """The transition alone (memory store), ``measured`` triggers after each history size."""
    store = MemoryStore()
    at = 1_800_000_000_000
    binding = PersonaBinding(name="bench", entry_workflow="wf")
    txn = store.transaction()
    transition.apply(txn, BindingChanged(at_ms=at, persona="bench", binding=binding), 0)
    store.apply(txn)
    offset, done, phases = 1, 0, []

    def feed(n: int) -> None:
        nonlocal offset
        txn = store.transaction()
        req = msgspec.convert(request("bench", n, at + n), TriggerRequest)
        transition.apply(txn, TriggerReceived(at_ms=at + n, request=req), offset)
        store.apply(txn)
        offset += 1

    for history in histories:
        while done < history:
            feed(done)
            done += 1
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            for n in range(done, done + measured):
                feed(n)
            rates.append(measured / (time.perf_counter() - start))
            done += measured
        rows = sum(len(t) for t in store.tables.values())
        phases.append({"history": history, "triggers": measured, "rounds_per_second": [round(r, 1) for r in rates],
                       "per_second": round(statistics.median(rates), 1), "table_rows": rows})
    ratio = phases[-1]["per_second"] / phases[0]["per_second"]
    return {"phases": phases, "throughput_ratio_long_vs_short_history": round(ratio, 3)}


def bench_pipeline(worker, kafka, broker, persona: str, measured: int, rounds: int,
                   histories: list[int]) -> dict[str, Any]:
    """End to end: triggers on the broker -> ingress -> persona agent -> receipts."""
    at = 1_800_000_000_000
    receipts = kafka.tail("receipts")
    kafka.send("bindings", persona, {"name": persona, "entry_workflow": "wf"}, timestamp_ms=at - 1)
    client = kafka.client

    async def produce(first: int, count: int) -> None:
        producer = new_producer(client.settings, client.bootstrap, linger_ms=5)
        await producer.start()
        try:
            pending = [await producer.send(client.names.triggers, json.dumps(request(persona, n, at + n)).encode(),
                                           key=persona.encode()) for n in range(first, first + count)]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    answered: set[str] = set()  # request ids: a receipt repeated for a redelivered record counts once
    counted = {"upto": 0}

    def receipts_reached(total: int) -> bool:
        seen = receipts.seen
        for record in seen[counted["upto"]:]:
            if record.key == persona:
                answered.add(record.value["request_id"])
        counted["upto"] = len(seen)
        return len(answered) >= total

    done, phases = 0, []
    for history in histories:
        if history > done:
            kafka.run(produce(done, history - done))
            receipts.until(lambda _: receipts_reached(history), 3600, f"{history} history receipts")
            done = history
            receipts.seen.clear()
            counted["upto"] = 0
        rates, worker_cpu, broker_cpu = [], [], []
        for _ in range(rounds):  # each round adds ``measured`` more completed runs to the history
            start = time.perf_counter()
            cpu_before = cpu_s(worker.process.pid), cpu_s(broker.pid)
            kafka.run(produce(done, measured))
            receipts.until(lambda _: receipts_reached(done + measured), 3600, "measured receipts")
            rates.append(measured / (time.perf_counter() - start))
            worker_cpu.append((cpu_s(worker.process.pid) - cpu_before[0]) * 1000 / measured)
            broker_cpu.append((cpu_s(broker.pid) - cpu_before[1]) * 1000 / measured)
            receipts.seen.clear()
            counted["upto"] = 0
            done += measured
        phases.append({"history": history, "triggers": measured, "rounds_per_second": [round(r, 1) for r in rates],
                       "per_second": round(statistics.median(rates), 1),
                       "worker_cpu_ms_per_trigger": round(statistics.median(worker_cpu), 3),
                       "broker_cpu_ms_per_trigger": round(statistics.median(broker_cpu), 3) if broker.pid else None,
                       "worker_rss_mb": round(rss_mb(worker.process.pid), 1)})
    ratio = phases[-1]["per_second"] / phases[0]["per_second"]
    first_cpu = phases[0]["worker_cpu_ms_per_trigger"]
    cpu_ratio = phases[-1]["worker_cpu_ms_per_trigger"] / first_cpu if first_cpu else float("nan")
    return {"phases": phases, "throughput_ratio_long_vs_short_history": round(ratio, 3),
            "worker_cpu_ratio_long_vs_short_history": round(cpu_ratio, 3),
            "broker": "embedded Tansu" if worker.settings.bootstrap_servers is None else "kafka"}


@pytest.mark.bench
def test_bench_pure_transition_throughput_is_flat_in_history():
    record_result("pure_transition", bench_pure_transition(**FULL))


@pytest.mark.bench
def test_bench_pipeline_throughput_is_flat_in_history(worker, kafka, broker, persona_name):
    record_result("pipeline_end_to_end", bench_pipeline(worker, kafka, broker, "bench-" + persona_name[-6:], **FULL))


def test_the_benchmarks_measure_every_phase_in_short_form(worker, kafka, broker, persona_name, tmp_path):
    results = tmp_path / "results.json"
    record_result("pure_transition", bench_pure_transition(**SHORT), results)
    record_result("pipeline_end_to_end", bench_pipeline(worker, kafka, broker, "short-" + persona_name[-6:], **SHORT),
                  results)
    recorded = json.loads(results.read_text())
    for name in ("pure_transition", "pipeline_end_to_end"):
        phases = recorded[name]["phases"]
        assert [p["history"] for p in phases] == SHORT["histories"]
        assert all(p["triggers"] == SHORT["measured"] and p["per_second"] > 0 for p in phases)
    assert all(p["worker_cpu_ms_per_trigger"] >= 0 and p["worker_rss_mb"] > 0
               for p in recorded["pipeline_end_to_end"]["phases"])
