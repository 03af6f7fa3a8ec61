"""Benchmarks (``make bench``): one table, every figure beside the baselines of the same run.

Nothing here asserts a speed. ``make bench`` measures, on the session's broker:

* baselines: raw aiokafka produce and consume of 100-byte records, and a plain Faust
  agent that counts each record into a table and sends one record per input;
* personaflow: inline triggers over 1,000 personas (throughput, worker and broker CPU
  per trigger, records written per trigger, worker peak memory), publish-to-receipt
  latency at 20 and 200 triggers/s offered, recovery of a worker holding 10,000 personas
  and 100,000 completed work keys (memory and RocksDB stores), and throughput after
  1,000 and after 50,000 earlier runs of one persona, and external runs completed per
  second with the reference executor doing zero work, and the audit store's write path
  into SQLite and PostgreSQL;

each the median of three rounds, and writes ``bench/results.json`` and
``docs/BENCHMARKS.md``. ``make test`` runs the same code at tiny sizes into temporary
files (``test_the_benchmarks_run_in_short_form``) so that it cannot rot.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.kafka import changelog_topic, client_config, new_consumer, new_producer
from engine.publish import Partitioner, Publisher
from personaflow.embedded import free_port
from streams.inbox import BindingChanged, TriggerReceived
from streams.wire import PersonaBinding, RunCost, TriggerRequest
from tables import persona as transition
from tables.store import MemoryStore

from ..support.cluster import SyncWorker, own_pipeline

ROOT = Path(__file__).resolve().parents[2]
#: Event times of the benchmark's input: now (as a producer stamps it), within the bound on
#: event time that ingress applies (PERSONAFLOW_MAX_FUTURE_MS).
AT = int(time.time() * 1000)


@dataclass(frozen=True)
class Sizes:
    rounds: int
    raw: int  # records per raw produce/consume round
    faust: int  # records per Faust round
    personas: int  # personas of the inline throughput measure
    inline: int  # triggers per inline round
    latency_s: float  # seconds of offered load per latency round
    recovery_personas: int
    recovery_keys: int
    history: tuple[int, int]  # earlier runs of one persona: short, long
    history_measured: int  # triggers measured after each history
    external_personas: int  # personas of the external-runs measure
    external: int  # external runs per round
    external_long: int  # external runs of 10 steps per round
    audit: int  # outbox events recorded into each audit database
    queued: tuple[int, int]  # items queued behind one persona's lease: short, long
    queue_measured: int  # dispatches taken from the queue and measured at each length (< short)
    governance: int = 2_000  # inline triggers and external runs of each governance measure


FULL = Sizes(
    rounds=3,
    raw=100_000,
    faust=10_000,
    personas=1_000,
    inline=10_000,
    latency_s=10.0,
    recovery_personas=10_000,
    recovery_keys=100_000,
    history=(1_000, 50_000),
    history_measured=5_000,
    external_personas=200,
    external=2_000,
    external_long=500,
    audit=100_000,
    queued=(100, 10_000),
    queue_measured=90,
)
SHORT = Sizes(
    rounds=1,
    raw=2_000,
    faust=200,
    personas=20,
    inline=200,
    latency_s=0.5,
    recovery_personas=50,
    recovery_keys=200,
    history=(10, 100),
    history_measured=50,
    external_personas=4,
    external=12,
    external_long=4,
    audit=4_000,
    queued=(10, 200),
    queue_measured=10,
    governance=20,
)


# -------------------------------------------------------------------- helpers


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a local process has used (0.0 if it is not local)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def metric_total(worker: SyncWorker, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = worker.get("/metrics").decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def tagged(tag: str) -> Callable[[Any], bool]:
    """Receipts about requests of ``tag`` (ids ``<tag>-<n>``)."""
    marker = f'"request_id":"{tag}-'.encode()
    return lambda record: record.value is not None and marker in record.value


def trigger_bytes(persona: str, n: int, tag: str) -> bytes:
    return json.dumps(
        {
            "request_id": f"{tag}-{n}",
            "persona": persona,
            "provider": "webhook",
            "kind": "push",
            "metadata": {"dedupe_key": f"{tag}-{n}"},
            "cost": {"cost_usd": 0.0001, "tokens": 1},
            "received_at_ms": AT + n,
        }
    ).encode()


async def produce(settings, broker, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = new_producer(settings, broker.bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def make_topics(settings, broker, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(**client_config(settings, broker.bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


class Counter:
    """Counts records arriving on a topic (all partitions), from now on."""

    def __init__(self, settings, broker, topic: str, keep: Callable[[Any], bool] = lambda r: True) -> None:
        self.settings, self.broker, self.topic, self.keep = settings, broker, topic, keep
        self.seen: dict[Any, float] = {}
        self.count = 0

    async def start(self) -> Counter:
        self.consumer = new_consumer(self.settings, self.broker.bootstrap, fetch_max_wait_ms=10)
        await self.consumer.start()
        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        return self

    async def until(self, total: int, timeout_s: float, identify: Callable[[Any], Any] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count}/{total} records on {self.topic} within {timeout_s}s")
            for records in (await self.consumer.getmany(timeout_ms=100, max_records=20_000)).values():
                now = time.perf_counter()
                for record in records:
                    if not self.keep(record):
                        continue
                    if identify is None:
                        self.count += 1
                        continue
                    ident = identify(record)
                    if ident not in self.seen:
                        self.seen[ident] = now
                        self.count += 1

    async def stop(self) -> None:
        await self.consumer.stop()


def run_async(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------ baselines


def bench_raw_aiokafka(settings, broker, sizes: Sizes) -> dict[str, Any]:
    topic = f"bench-raw-{os.urandom(3).hex()}"
    run_async(make_topics(settings, broker, [topic], 8))
    value = b"x" * 100
    produced, consumed = [], []
    for round_ in range(sizes.rounds):
        records = [(f"k{n % 1000}".encode(), value) for n in range(sizes.raw)]
        started = time.perf_counter()
        run_async(produce(settings, broker, topic, records))
        produced.append(sizes.raw / (time.perf_counter() - started))

        async def consume() -> float:
            consumer = new_consumer(settings, broker.bootstrap, fetch_max_wait_ms=10)
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(8)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                wanted, seen = sizes.raw * (round_ + 1), 0
                began = time.perf_counter()
                while seen < wanted:
                    for batch in (await consumer.getmany(timeout_ms=200, max_records=50_000)).values():
                        seen += len(batch)
                return wanted / (time.perf_counter() - began)
            finally:
                await consumer.stop()

        consumed.append(run_async(consume()))
    return {
        "produce_per_s": median(produced),
        "consume_per_s": median(consumed),
        "rounds": {"produce": produced, "consume": consumed},
    }


def bench_faust_agent(settings, broker, sizes: Sizes, data_dir: Path) -> dict[str, Any]:
    tag = os.urandom(3).hex()
    source, sink = f"bench-faust-in-{tag}", f"bench-faust-out-{tag}"
    partitions = settings.partitions
    run_async(make_topics(settings, broker, [source, sink], partitions))
    web_port = free_port()
    env = {
        **os.environ,
        "BENCH_APP_ID": f"bench-faust-{tag}",
        "BENCH_BOOTSTRAP": broker.bootstrap,
        "BENCH_DATA_DIR": str(data_dir / f"faust-{tag}"),
        "BENCH_PARTITIONS": str(partitions),
        "BENCH_WEB_PORT": str(web_port),
        "BENCH_SOURCE": source,
        "BENCH_SINK": sink,
    }
    log = open(data_dir / f"faust-{tag}.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.faust_agent", "worker", "-l", "warn"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rates, cpus = [], []
    try:
        value = b"x" * 100
        # Ready once a first record makes it through (the group has joined, the table recovered).
        run_async(_faust_warm_up(settings, broker, source, sink))
        for _ in range(sizes.rounds):

            async def one_round() -> tuple[float, float]:
                counter = await Counter(settings, broker, sink).start()
                try:
                    before = cpu_s(process.pid)
                    started = time.perf_counter()
                    await produce(
                        settings, broker, source, [(f"k{n % 1000}".encode(), value) for n in range(sizes.faust)]
                    )
                    await counter.until(sizes.faust, 600)
                    elapsed = time.perf_counter() - started
                    return sizes.faust / elapsed, (cpu_s(process.pid) - before) * 1000 / sizes.faust
                finally:
                    await counter.stop()

            rate, cpu = run_async(one_round())
            rates.append(rate)
            cpus.append(cpu)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    return {"per_s": median(rates), "worker_cpu_ms_per_record": median(cpus), "rounds": rates}


async def _faust_warm_up(settings, broker, source: str, sink: str) -> None:
    counter = await Counter(settings, broker, sink).start()
    try:
        deadline = time.monotonic() + 120
        while counter.count == 0:
            await produce(settings, broker, source, [(b"warm-up", b"x")])
            try:
                await counter.until(1, 2)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
    finally:
        await counter.stop()


# ---------------------------------------------------------------- personaflow


def bind_personas(kafka, settings, broker, names: list[str], worker: SyncWorker, **fields: Any) -> None:
    run_async(
        produce(
            settings,
            broker,
            kafka.client.names.bindings,
            [(name.encode(), json.dumps({"name": name, "entry_workflow": "wf", **fields}).encode()) for name in names],
        )
    )
    status = kafka.tail("status", from_beginning=True)
    status.until(lambda seen: len({r.key for r in seen}) >= len(names), 300, "every persona bound")
    status.stop()


def trigger_round(
    kafka, settings, broker, worker: SyncWorker, names: list[str], count: int, tag: str, rng: random.Random
) -> tuple[float, float, float]:
    """Publish ``count`` inline triggers over ``names`` at once; return (triggers/s until the
    last receipt, worker CPU ms per trigger, broker CPU ms per trigger)."""
    triggers = [
        (name.encode(), trigger_bytes(name, n, tag)) for n, name in ((n, rng.choice(names)) for n in range(count))
    ]

    async def one_round() -> tuple[float, float, float]:
        counter = await Counter(settings, broker, kafka.client.names.receipts, keep=tagged(tag)).start()
        try:
            before = cpu_s(worker.process.pid), cpu_s(broker.pid)
            started = time.perf_counter()
            await produce(settings, broker, kafka.client.names.triggers, triggers)
            await counter.until(count, 1200, identify=lambda r: r.value)
            elapsed = time.perf_counter() - started
            return (
                count / elapsed,
                (cpu_s(worker.process.pid) - before[0]) * 1000 / count,
                (cpu_s(broker.pid) - before[1]) * 1000 / count if broker.pid else float("nan"),
            )
        finally:
            await counter.stop()

    return run_async(one_round())


def bench_inline(kafka, settings, broker, worker: SyncWorker, sizes: Sizes) -> dict[str, Any]:
    names = [f"bench-{n:04d}" for n in range(sizes.personas)]
    bind_personas(kafka, settings, broker, names, worker)
    rng = random.Random(7)
    rates, worker_cpu, broker_cpu, records = [], [], [], []
    for round_ in range(sizes.rounds):
        written_before = _records_written(worker)
        rate, cpu_worker, cpu_broker = trigger_round(
            kafka, settings, broker, worker, names, sizes.inline, f"inline{round_}", rng
        )
        rates.append(rate)
        worker_cpu.append(cpu_worker)
        broker_cpu.append(cpu_broker)
        records.append((_records_written(worker) - written_before) / sizes.inline)
    return {
        "per_s": median(rates),
        "worker_cpu_ms_per_trigger": median(worker_cpu),
        "broker_cpu_ms_per_trigger": median(broker_cpu),
        "records_written_per_trigger": median(records),
        "worker_peak_rss_mb": round(peak_rss_mb(worker.process.pid), 1),
        "personas": sizes.personas,
        "rounds": rates,
    }


def bench_external(
    kafka, settings, broker, worker: SyncWorker, data_dir: Path, sizes: Sizes, steps: int = 1
) -> dict[str, Any]:
    """External runs end to end with the reference executor doing zero work: trigger →
    dispatch → executor (started, ``steps`` steps each reported as step_started, usage and
    step_completed, completed with its cost) → final receipt. Runs of one persona take its
    lease one after another; the personas run in parallel."""
    from personaflow.process import ExecutorProcess

    runs = sizes.external if steps == 1 else sizes.external_long
    names = [f"ext{steps}-{n:04d}" for n in range(sizes.external_personas)]
    bind_personas(
        kafka,
        settings,
        broker,
        names,
        worker,
        execution="external",
        executor_options={"steps": str(steps), "tokens_per_step": "10", "cost_per_step_usd": "0.0001"},
    )
    executor = ExecutorProcess(settings, data_dir / f"logs-{settings.app_id}", group=f"{settings.app_id}-executor")
    executor.spawn()
    rng = random.Random(13)
    rates, worker_cpu, executor_cpu, broker_cpu, records = [], [], [], [], []
    try:
        run_async(executor.wait_ready())
        assert executor.process is not None
        for round_ in range(sizes.rounds):
            tag = f"external{steps}x{round_}"
            triggers = [
                (
                    name.encode(),
                    json.dumps(
                        {
                            "request_id": f"{tag}-{n}",
                            "persona": name,
                            "provider": "webhook",
                            "kind": "push",
                            "metadata": {"dedupe_key": f"{tag}-{n}"},
                            "received_at_ms": AT + n,
                        }
                    ).encode(),
                )
                for n, name in ((n, rng.choice(names)) for n in range(runs))
            ]
            marker = tagged(tag)

            async def one_round() -> tuple[float, ...]:
                counter = await Counter(
                    settings,
                    broker,
                    kafka.client.names.receipts,
                    keep=lambda r: marker(r) and b'"status":"completed"' in r.value,
                ).start()
                try:
                    pids = (worker.process.pid, executor.process.pid, broker.pid)
                    before = [cpu_s(pid) if pid else 0.0 for pid in pids]
                    written = _records_written(worker)
                    started = time.perf_counter()
                    await produce(settings, broker, kafka.client.names.triggers, triggers)
                    await counter.until(runs, 1200, identify=lambda r: r.value)
                    elapsed = time.perf_counter() - started
                    after = [cpu_s(pid) if pid else float("nan") for pid in pids]
                    per_run = [(a - b) * 1000 / runs for a, b in zip(after, before, strict=True)]
                    return (runs / elapsed, *per_run, (_records_written(worker) - written) / runs)
                finally:
                    await counter.stop()

            rate, cpu_worker, cpu_executor, cpu_broker, written = run_async(one_round())
            rates.append(rate)
            worker_cpu.append(cpu_worker)
            executor_cpu.append(cpu_executor)
            broker_cpu.append(cpu_broker)
            records.append(written)
    finally:
        executor.stop()
    return {
        "per_s": median(rates),
        "worker_cpu_ms_per_run": median(worker_cpu),
        "executor_cpu_ms_per_run": median(executor_cpu),
        "broker_cpu_ms_per_run": median(broker_cpu),
        "records_written_per_run": median(records),
        "personas": sizes.external_personas,
        "steps": steps,
        "rounds": rates,
    }


def bench_audit(databases: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    """The audit store's write path (``AuditRecorder.record``, batches as the consumer reads
    them) into each database: events stored per second, the rate of the last tenth against
    the first (cost must not grow with the table), and records read again (after a crash)."""
    from audit.consumer import BATCH_RECORDS
    from audit.recorder import AuditRecorder, LogRecord

    results: dict[str, Any] = {}
    for name, url in databases.items():
        recorder = AuditRecorder.open(url)
        try:
            batches, offsets = [], [0] * 8
            for start in range(0, sizes.audit, BATCH_RECORDS):
                batch = []
                for n in range(start, min(start + BATCH_RECORDS, sizes.audit)):
                    partition, stream = n % 8, f"persona:bench-{n % 1000}"
                    event = {
                        "event_id": f"{stream}/{n // 1000 + 1}",
                        "stream": stream,
                        "seq": n // 1000 + 1,
                        "kind": "persona.run.completed",
                        "persona": f"bench-{n % 1000}",
                        "run_id": f"run-{n}",
                        "occurred_at_ms": AT + n,
                        "payload": {"work_key": f"k{n}", "run_id": f"run-{n}"},
                        "cause": {"type": "trigger", "request_id": f"r{n}"},
                    }
                    batch.append(LogRecord("persona.outbox", partition, offsets[partition], json.dumps(event).encode()))
                    offsets[partition] += 1
                batches.append(batch)
            times = []
            for batch in batches:
                started = time.perf_counter()
                recorder.record("bench", batch)
                times.append(time.perf_counter() - started)
            started = time.perf_counter()
            for batch in batches[: max(1, len(batches) // 10)]:
                recorder.record("bench", batch)
            again = time.perf_counter() - started
            tenth = max(1, len(batches) // 10)
            results[name] = {
                "per_s": round(sizes.audit / sum(times)),
                "last_vs_first_tenth_rate": round(sum(times[:tenth]) / sum(times[-tenth:]), 3),
                "read_again_per_s": round(sum(len(b) for b in batches[:tenth]) / again),
                "events": recorder.counts()["events"],
            }
        finally:
            recorder.close()
    return results


def _records_written(worker: SyncWorker) -> float:
    """Records the worker has published: outputs and state changelog."""
    return metric_total(worker, "personaflow_outputs_published_total") + metric_total(
        worker, "personaflow_changelog_records_total"
    )


def bench_latency(
    kafka, settings, broker, worker: SyncWorker, sizes: Sizes, rates: tuple[int, ...] = (20, 200), label: str = "lat"
) -> dict[str, Any]:
    """Publish-to-receipt latency at each offered rate, with the worker's and the broker's
    share of a core meanwhile."""
    names = [f"{label}-{n:03d}" for n in range(100)]
    bind_personas(kafka, settings, broker, names, worker)
    result: dict[str, Any] = {}
    for rate in rates:
        per_round: list[dict[str, float]] = []
        busy = {"worker": 0.0, "broker": 0.0, "seconds": 0.0}
        for round_ in range(sizes.rounds):
            tag = f"{label}{rate}-{round_}"
            count = max(2, int(rate * sizes.latency_s))

            async def one_round() -> list[float]:
                counter = await Counter(settings, broker, kafka.client.names.receipts, keep=tagged(tag)).start()
                producer = new_producer(settings, broker.bootstrap, linger_ms=0)
                await producer.start()
                sent: dict[str, float] = {}
                try:
                    collector = asyncio.create_task(
                        counter.until(count, 120, identify=lambda r: json.loads(r.value)["request_id"])
                    )
                    started = time.perf_counter()
                    for n in range(count):
                        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
                        name = names[n % len(names)]
                        sent[f"{tag}-{n}"] = time.perf_counter()
                        await producer.send(kafka.client.names.triggers, trigger_bytes(name, n, tag), key=name.encode())
                    await collector
                finally:
                    await producer.stop()
                    await counter.stop()
                return [(counter.seen[ident] - at) * 1000 for ident, at in sent.items()]

            before = cpu_s(worker.process.pid), cpu_s(broker.pid), time.perf_counter()
            latencies = run_async(one_round())
            busy["worker"] += cpu_s(worker.process.pid) - before[0]
            busy["broker"] += cpu_s(broker.pid) - before[1]
            busy["seconds"] += time.perf_counter() - before[2]
            per_round.append(
                {
                    "p50": percentile(latencies, 0.50),
                    "p95": percentile(latencies, 0.95),
                    "p99": percentile(latencies, 0.99),
                }
            )
        result[f"at_{rate}_per_s"] = {q: median([r[q] for r in per_round]) for q in ("p50", "p95", "p99")}
        result[f"at_{rate}_per_s"]["worker_cpu_percent"] = round(100 * busy["worker"] / busy["seconds"], 1)
        result[f"at_{rate}_per_s"]["broker_cpu_percent"] = round(100 * busy["broker"] / busy["seconds"], 1)
    return result


def bench_ranking(sizes: Sizes) -> dict[str, Any]:
    """The queue's ranking: one persona with ``queued`` items waiting behind its lease
    (mixed SLOs and priorities), then ``queue_measured`` dispatches, each taking the first
    entry as the run before it completes. Measured in process (the pure transition over a
    memory store, as the worker runs it): CPU and state rows written per dispatch, at a
    short and a long queue. The ranking is an index, so both should be flat."""
    from streams import records, wire
    from streams.inbox import RunReportReceived

    binding = wire.from_model(
        records.PersonaBinding.model_validate(
            {"name": "ranked", "entry_workflow": "wf", "execution": "external", "lease_ttl_ms": 3_600_000}
        )
    )
    slos = [None, {"queue_target_ms": 5_000}, {"queue_target_ms": 60_000, "priority_boost": 1}]
    result: dict[str, Any] = {"measured": sizes.queue_measured, "phases": {}}
    for length in sizes.queued:
        store = MemoryStore()

        def feed(record: Any, store: MemoryStore = store) -> tuple[list[Any], int]:
            txn = store.transaction()
            outputs = transition.apply(txn, record, 0)
            changed = sum(1 for _ in txn.changes())
            store.apply(txn)
            return outputs, changed

        def dispatched(outputs: list[Any]) -> dict[str, Any]:
            return json.loads(next(o for o in outputs if o.role == "dispatch").value_bytes())

        feed(BindingChanged(at_ms=AT, persona="ranked", binding=binding))
        holder: dict[str, Any] = {}
        for n in range(length + 1):
            request = records.TriggerRequest.model_validate(
                {
                    "request_id": f"q{n}",
                    "persona": "ranked",
                    "provider": "webhook",
                    "kind": "push",
                    "metadata": {"dedupe_key": f"q{n}"},
                    "priority": n % 3,
                    "slo": slos[n % 3],
                }  # fmt: skip
            )
            outputs, _ = feed(TriggerReceived(at_ms=AT + n, request=wire.from_model(request)))
            if n == 0:
                holder = dispatched(outputs)  # the first takes the lease; the others queue
        cpu, rows = 0.0, 0
        for n in range(sizes.queue_measured):
            event = wire.RunEvent(
                event_id=f"e{n}", run_id=holder["run_id"], lease_id=holder["lease_id"], kind="completed"
            )
            started = time.process_time()
            outputs, changed = feed(RunReportReceived(at_ms=AT + length + n, persona="ranked", event=event))
            cpu += time.process_time() - started
            rows += changed
            holder = dispatched(outputs)
        result["phases"][length] = {
            "cpu_ms_per_dispatch": round(cpu * 1000 / sizes.queue_measured, 4),
            "state_rows_per_dispatch": round(rows / sizes.queue_measured, 2),
        }
    short, long = (result["phases"][n] for n in sizes.queued)
    result["cpu_ratio_long_vs_short"] = round(long["cpu_ms_per_dispatch"] / short["cpu_ms_per_dispatch"], 2)
    result["rows_ratio_long_vs_short"] = round(long["state_rows_per_dispatch"] / short["state_rows_per_dispatch"], 2)
    return result


def bench_governance(sizes: Sizes) -> dict[str, Any]:
    """What governance costs, in process (the pure transition over a memory store, as the
    worker runs it, plus the worker's signing of dispatches and bills of materials): CPU per
    inline trigger and per external run (trigger, started, one step, completed), A/B in the
    same run — bare (no digests: ``chain.seal`` hashes nothing; nothing signed; no policy),
    with the hash chain, with the chain and signing (tokens, ``run.bom``), and with those
    and a two-rule policy. No timer runs inside the measured code: the cost of each part is
    the difference between variants."""
    from agents.capability import sign_outputs
    from personaflow.keys import SigningKey
    from streams import chain, records, wire
    from streams.inbox import RunReportReceived

    key = SigningKey.from_seed(bytes(range(32)))
    policy = {"pack": "bench", "rules": [{"match": {"tool": "shell"}, "effect": "deny", "reason": "no shell"},
                                         {"match": {"provider": "webhook"}, "effect": "allow", "reason": "ok"}]}  # fmt: skip
    seal = chain.seal

    def unsealed(prev_digest: str, body: bytes) -> tuple[bytes, str]:
        return body, prev_digest  # the bare variant: the event as it was before the chain

    def measure(execution: str, chained: bool, signed: bool, with_policy: bool) -> float:
        name = f"gov-{execution}-{int(chained)}{int(signed)}{int(with_policy)}"
        fields = {"name": name, "entry_workflow": "wf", "execution": execution, "lease_ttl_ms": 3_600_000}
        binding = wire.from_model(
            records.PersonaBinding.model_validate({**fields, **({"policy": policy} if with_policy else {})})
        )
        store = MemoryStore()
        chain.seal = seal if chained else unsealed  # type: ignore[assignment]

        def feed(record: Any) -> list[Any]:
            txn = store.transaction()
            outputs = transition.apply(txn, record, 0)
            store.apply(txn)
            if signed:
                sign_outputs(outputs, 0, key)
            return outputs

        feed(BindingChanged(at_ms=AT, persona=name, binding=binding))
        count = sizes.governance
        started = time.process_time()
        for n in range(count):
            request = TriggerRequest(request_id=f"g{n}", persona=name, provider="webhook", kind="push",
                                     metadata={"dedupe_key": f"g{n}"},
                                     cost=RunCost(cost_usd=0.0, tokens=1) if execution == "inline" else None)  # fmt: skip
            outputs = feed(TriggerReceived(at_ms=AT + n, request=request))
            if execution == "inline":
                continue
            dispatch = json.loads(next(o for o in outputs if o.role == "dispatch").value_bytes())
            for kind, extra in (("started", {}), ("step_started", {"step_id": "s1", "tool": "git"}),
                                ("step_completed", {"step_id": "s1"}), ("completed", {})):  # fmt: skip
                event = wire.RunEvent(event_id=f"g{n}-{kind}", run_id=dispatch["run_id"],
                                      lease_id=dispatch["lease_id"], kind=kind, **extra)  # fmt: skip
                feed(RunReportReceived(at_ms=AT + n, persona=name, event=event))
        return round((time.process_time() - started) * 1e6 / count, 1)

    variants = {"bare": (False, False, False), "chain": (True, False, False), "signed": (True, True, False),
                "governed": (True, True, True)}  # fmt: skip
    try:
        result: dict[str, Any] = {"measured": sizes.governance}
        for execution in ("inline", "external"):
            # Three rounds, interleaved, each variant's median: a drifting machine hits all alike.
            rounds = [{v: measure(execution, *flags) for v, flags in variants.items()} for _ in range(3)]
            us = {v: statistics.median(r[v] for r in rounds) for v in variants}
            bare = us["bare"]
            result[execution] = {
                "cpu_us": us,
                "chain_ratio": round(us["chain"] / bare, 3),
                "signing_ratio": round(us["signed"] / us["chain"], 3),
                "policy_ratio": round(us["governed"] / us["signed"], 3),
                "governance_ratio": round(us["governed"] / bare, 3),
                "without_policy_ratio": round(us["signed"] / bare, 3),
            }
    finally:
        chain.seal = seal  # type: ignore[assignment]
    return result


def governance_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The governance rows (results written before it existed have none)."""
    gov = r.get("governance")
    if not gov:
        return []
    rows = []
    for execution, what in (
        ("inline", "inline trigger"),
        ("external", "external run (trigger, started, one step, completed)"),
    ):
        g = gov[execution]
        if "cpu_us" not in g:  # written before the A/B measure
            continue
        us = g["cpu_us"]
        rows.append(
            (
                f"governance per {what}, in process: transition CPU bare · + hash chain · + signing · + a two-rule policy",
                f"{us['bare']:.0f} · {us['chain']:.0f} · {us['signed']:.0f} · {us['governed']:.0f} µs",
                f"all governance {g['governance_ratio']:.2f}× bare ({g['without_policy_ratio']:.2f}× without the"
                f" policy); chain {g['chain_ratio']:.2f}×, signing {g['signing_ratio']:.2f}×, policy"
                f" {g['policy_ratio']:.2f}× each over the step before",
            )
        )
    return rows


def build_state(personas: int, keys: int) -> MemoryStore:
    """A real state (the transitions' own rows) of ``personas`` personas and ``keys``
    completed work keys, built in process."""
    store = MemoryStore()
    names = [f"rec-{n:05d}" for n in range(personas)]
    for name in names:
        txn = store.transaction()
        transition.apply(
            txn, BindingChanged(at_ms=AT, persona=name, binding=PersonaBinding(name=name, entry_workflow="wf"))
        )
        store.apply(txn)
    for n in range(keys):
        name = names[n % personas]
        txn = store.transaction()
        request = TriggerRequest(
            request_id=f"k{n}",
            persona=name,
            provider="webhook",
            kind="push",
            metadata={"dedupe_key": f"k{n}"},
            cost=RunCost(cost_usd=0.0001, tokens=1),
        )
        transition.apply(txn, TriggerReceived(at_ms=AT + n, request=request))
        store.apply(txn)
    return store


async def write_changelog(settings, broker, store: MemoryStore) -> int:
    """Write ``store``'s rows to the pipeline's changelog, each row in its persona's partition."""
    partition_of = Partitioner(settings.partitions)
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for table, rows in store.tables.items():
        for key, value in rows.items():
            persona = key if not key.startswith("[") else json.loads(key)[0]
            if table == "timers":
                persona = key.split("/", 2)[2]
            by_partition.setdefault(partition_of(persona.encode()), []).append((f"{table}\x1f{key}".encode(), value))
    producer = new_producer(settings, broker.bootstrap, linger_ms=0, max_request_size=128 * 1024 * 1024)
    await producer.start()
    try:
        publisher = Publisher(producer)
        for partition, records in by_partition.items():
            for start in range(0, len(records), 20_000):
                chunk = records[start : start + 20_000]
                await publisher.publish_batch(
                    changelog_topic(settings), partition, chunk, [], sum(len(k) + len(v) for k, v in chunk)
                )
    finally:
        await producer.stop()
    return sum(len(records) for records in by_partition.values())


def bench_recovery(settings, broker, data_dir: Path, sizes: Sizes) -> dict[str, Any]:
    store = build_state(sizes.recovery_personas, sizes.recovery_keys)
    result: dict[str, Any] = {"personas": sizes.recovery_personas, "completed_keys": sizes.recovery_keys}
    for name, overrides in (("memory", {"store": "memory://"}), ("rocksdb", {"store": "rocksdb://"})):
        with own_pipeline(
            settings,
            broker,
            f"rec{name}",
            web_port=free_port(),
            log_level="warning",
            partitions=settings.partitions,
            **overrides,
        ) as (own, kafka):
            rows = run_async(write_changelog(own, broker, store))
            worker = SyncWorker(own, kafka, data_dir / f"logs-{own.app_id}")
            times = []
            try:
                for _ in range(sizes.rounds + (1 if name == "rocksdb" else 0)):
                    worker.restart() if worker.process else worker.start()
                    times.append(metric_total(worker, "personaflow_recovery_seconds_sum"))
                probe = f"rec-{0:05d}"
                status = json.loads(worker.get(f"/personas/{probe}"))
                assert status["name"] == probe and status["last_run"] is not None, status
            finally:
                worker.stop()
            if name == "memory":
                result["memory_s"] = median(times)
            else:
                result["rocksdb_cold_s"] = round(times[0], 3)
                result["rocksdb_restart_s"] = median(times[1:])
            result["changelog_records"] = rows
    return result


def bench_history(kafka, settings, broker, worker: SyncWorker, sizes: Sizes) -> dict[str, Any]:
    """The same personas after a short and after a long history of completed runs: per-trigger
    cost must not grow with history."""
    names = [f"hist-{n:04d}" for n in range(sizes.personas)]
    bind_personas(kafka, settings, broker, names, worker)
    rng = random.Random(11)
    done, phases = 0, {}
    for history in sizes.history:
        for start in range(done, history, 10_000):  # load the history, in rounds
            trigger_round(kafka, settings, broker, worker, names, min(10_000, history - start), f"load{start}", rng)
        done = max(done, history)
        rates, cpus = [], []
        for round_ in range(sizes.rounds):
            rate, cpu, _ = trigger_round(
                kafka, settings, broker, worker, names, sizes.history_measured, f"after{history}-{round_}", rng
            )
            rates.append(rate)
            cpus.append(cpu)
            done += sizes.history_measured
        phases[history] = {"per_s": median(rates), "worker_cpu_ms_per_trigger": median(cpus)}
    short, long = sizes.history
    return {
        "personas": sizes.personas,
        "phases": phases,
        "cpu_ratio_long_vs_short": round(
            phases[long]["worker_cpu_ms_per_trigger"] / phases[short]["worker_cpu_ms_per_trigger"], 3
        ),
        "rate_ratio_long_vs_short": round(phases[long]["per_s"] / phases[short]["per_s"], 3),
    }


# ------------------------------------------------------------------- the run


def run_benchmarks(kafka, settings, broker, data_dir: Path, sizes: Sizes, databases: dict[str, str]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "sizes": asdict(sizes),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "broker": "embedded Tansu" if broker.embedded else "Kafka",
        },
    }
    results["raw_aiokafka"] = bench_raw_aiokafka(settings, broker, sizes)
    results["faust_agent"] = bench_faust_agent(settings, broker, sizes, data_dir)
    with own_pipeline(settings, broker, "bench", web_port=free_port(), log_level="warning") as (own, own_kafka):
        worker = SyncWorker(own, own_kafka, data_dir / f"logs-{own.app_id}")
        worker.start()
        try:
            results["latency"] = bench_latency(own_kafka, own, broker, worker, sizes)
            results["inline"] = bench_inline(own_kafka, own, broker, worker, sizes)
            results["latency_after_load"] = bench_latency(own_kafka, own, broker, worker, sizes, (200,), "late")
            results["history"] = bench_history(own_kafka, own, broker, worker, sizes)
            results["external"] = bench_external(own_kafka, own, broker, worker, data_dir, sizes)
            results["external_10_steps"] = bench_external(own_kafka, own, broker, worker, data_dir, sizes, steps=10)
        finally:
            worker.stop()
    results["ranking"] = bench_ranking(sizes)
    results["governance"] = bench_governance(sizes)
    results["recovery"] = bench_recovery(settings, broker, data_dir, sizes)
    results["audit"] = bench_audit(databases, sizes)
    return results


def write_results(results: dict[str, Any], json_path: Path, markdown_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(render(results))


def ranking_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The queue ranking's rows (results written before it existed have none)."""
    rank = r.get("ranking")
    if rank is None:
        return []
    phases = {str(k): v for k, v in rank["phases"].items()}
    short, long = (str(n) for n in r["sizes"]["queued"])
    return [
        (
            f"dispatch from a ranked queue of {int(short):,} (SLOs, priorities; in process, {rank['measured']} taken)",
            f"{phases[short]['cpu_ms_per_dispatch']:.3f} ms CPU, {phases[short]['state_rows_per_dispatch']:.1f} state rows",
            "",
        ),
        (
            f"the same from a queue of {int(long):,}",
            f"{phases[long]['cpu_ms_per_dispatch']:.3f} ms CPU, {phases[long]['state_rows_per_dispatch']:.1f} state rows",
            f"{rank['cpu_ratio_long_vs_short']:.2f}× the CPU, {rank['rows_ratio_long_vs_short']:.2f}× the rows",
        ),
    ]


def external_long_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows of the 10-step external runs (results written before it existed have none)."""
    long, one = r.get("external_10_steps"), r["external"]
    if long is None:
        return []
    per_report = (long["records_written_per_run"] - one["records_written_per_run"]) / (3 * (long["steps"] - 1))
    return [
        (
            f"external runs of {long['steps']} steps over {long['personas']:,} personas (each step: step_started,"
            " usage, step_completed)",
            f"{long['per_s']:,.0f} runs/s",
            f"{long['per_s'] / one['per_s']:.2f}× the runs/s of one step",
        ),
        (
            f"CPU per {long['steps']}-step run: worker · executor · broker",
            f"{long['worker_cpu_ms_per_run']:.3f} · {long['executor_cpu_ms_per_run']:.3f} · "
            f"{long['broker_cpu_ms_per_run']:.3f} ms",
            f"worker {long['worker_cpu_ms_per_run'] / one['worker_cpu_ms_per_run']:.2f}× a one-step run",
        ),
        (
            f"records written to Kafka per {long['steps']}-step run (outputs + state)",
            f"{long['records_written_per_run']:.2f}",
            f"{long['records_written_per_run'] / one['records_written_per_run']:.2f}× a one-step run;"
            f" {per_report:.2f} per further report",
        ),
    ]


def render(r: dict[str, Any]) -> str:
    raw, faust, inline, lat, rec, hist, ext = (
        r["raw_aiokafka"],
        r["faust_agent"],
        r["inline"],
        r["latency"],
        r["recovery"],
        r["history"],
        r["external"],
    )
    short, long = (str(h) for h in r["sizes"]["history"])
    inline_count = r["sizes"]["inline"]
    phases = {str(k): v for k, v in hist["phases"].items()}

    def ratio(value: float, base: float) -> str:
        return f"{value / base:.2f}×" if base else "-"

    rows = [
        ("raw aiokafka produce, 100 B records", f"{raw['produce_per_s']:,.0f} records/s", "baseline"),
        ("raw aiokafka consume, 100 B records", f"{raw['consume_per_s']:,.0f} records/s", "baseline"),
        (
            "plain Faust agent: count into a table, send one record per input",
            f"{faust['per_s']:,.0f} records/s",
            "baseline",
        ),
        ("plain Faust agent: worker CPU per record", f"{faust['worker_cpu_ms_per_record']:.3f} ms", "baseline"),
        (
            f"personaflow inline triggers over {inline['personas']:,} personas",
            f"{inline['per_s']:,.0f} triggers/s",
            f"{ratio(inline['per_s'], faust['per_s'])} Faust; {ratio(inline['per_s'], raw['produce_per_s'])} raw produce",
        ),
        (
            "personaflow worker CPU per inline trigger",
            f"{inline['worker_cpu_ms_per_trigger']:.3f} ms",
            f"{ratio(inline['worker_cpu_ms_per_trigger'], faust['worker_cpu_ms_per_record'])} Faust per record",
        ),
        ("broker (Tansu) CPU per inline trigger", f"{inline['broker_cpu_ms_per_trigger']:.3f} ms", ""),
        (
            "records written to Kafka per inline trigger (outputs + state)",
            f"{inline['records_written_per_trigger']:.2f}",
            "",
        ),
        ("worker peak RSS", f"{inline['worker_peak_rss_mb']:.0f} MB", ""),
    ]
    for rate in (20, 200):
        q = lat[f"at_{rate}_per_s"]
        rows.append(
            (
                f"publish → receipt latency at {rate} triggers/s offered (fresh topics)",
                f"p50 {q['p50']:.0f} ms · p95 {q['p95']:.0f} ms · p99 {q['p99']:.0f} ms",
                f"worker {q['worker_cpu_percent']:.0f} %, broker {q['broker_cpu_percent']:.0f} % of a core",
            )
        )
    late = r["latency_after_load"]["at_200_per_s"]
    rows.append(
        (
            f"the same at 200/s after the {r['sizes']['rounds'] * inline_count:,} inline triggers above",
            f"p50 {late['p50']:.0f} ms · p95 {late['p95']:.0f} ms · p99 {late['p99']:.0f} ms",
            f"worker {late['worker_cpu_percent']:.0f} %, broker {late['broker_cpu_percent']:.0f} % of a core",
        )
    )
    rows += [
        (
            f"external runs over {ext['personas']:,} personas, reference executor doing zero work "
            "(trigger → dispatch → started, one step, completed → final receipt)",
            f"{ext['per_s']:,.0f} runs/s",
            f"{ratio(ext['per_s'], inline['per_s'])} inline triggers; {ratio(ext['per_s'], faust['per_s'])} Faust",
        ),
        (
            "CPU per external run: worker · executor · broker",
            f"{ext['worker_cpu_ms_per_run']:.3f} · {ext['executor_cpu_ms_per_run']:.3f} · "
            f"{ext['broker_cpu_ms_per_run']:.3f} ms",
            f"worker {ratio(ext['worker_cpu_ms_per_run'], inline['worker_cpu_ms_per_trigger'])} an inline trigger",
        ),
        (
            "records written to Kafka per external run (outputs + state)",
            f"{ext['records_written_per_run']:.2f}",
            f"{ratio(ext['records_written_per_run'], inline['records_written_per_trigger'])} an inline trigger",
        ),
        *external_long_rows(r),
        *[
            (
                f"audit store: outbox events recorded into {name} ({r['sizes']['audit']:,}, batches of 2,000)",
                f"{audit['per_s']:,} events/s",
                f"{ratio(audit['per_s'], raw['consume_per_s'])} raw consume; last tenth"
                f" {audit['last_vs_first_tenth_rate']:.2f}× the first tenth's rate; read again {audit['read_again_per_s']:,}/s",
            )
            for name, audit in r["audit"].items()
        ],
        (
            f"recovery, {rec['personas']:,} personas + {rec['completed_keys']:,} completed keys, memory://",
            f"{rec['memory_s']:.2f} s",
            f"{rec['changelog_records']:,} changelog records",
        ),
        ("same, rocksdb:// first start (full restore)", f"{rec['rocksdb_cold_s']:.2f} s", ""),
        ("same, rocksdb:// restart (reads only what is newer)", f"{rec['rocksdb_restart_s']:.2f} s", ""),
        (
            f"{hist['personas']:,} personas after {int(short):,} completed runs",
            f"{phases[short]['per_s']:,.0f} triggers/s, "
            f"{phases[short]['worker_cpu_ms_per_trigger']:.3f} ms worker CPU each",
            "",
        ),
        (
            f"the same after {int(long):,} completed runs",
            f"{phases[long]['per_s']:,.0f} triggers/s, "
            f"{phases[long]['worker_cpu_ms_per_trigger']:.3f} ms worker CPU each",
            f"{hist['rate_ratio_long_vs_short']:.2f}× the rate, {hist['cpu_ratio_long_vs_short']:.2f}× the CPU of the short history",
        ),
        *ranking_rows(r),
        *governance_rows(r),
    ]
    machine = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`tests/bench/test_bench.py`); raw figures in `bench/results.json`.",
        f"Each figure is the median of {r['sizes']['rounds']} rounds, measured in one run with its baselines,",
        f"on {machine['cpus']} CPUs (Python {machine['python']}, {machine['broker']} broker on the same machine;",
        "broker, worker and load generator share the cores).",
        "",
        "| measure | result | compared |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    return "\n".join(lines)


@pytest.mark.bench
def test_bench(kafka, settings, broker, data_dir, tmp_path, postgres_url):
    databases = {"SQLite": f"sqlite:///{tmp_path / 'audit.db'}", "PostgreSQL": postgres_url}
    results = run_benchmarks(kafka, settings, broker, data_dir, FULL, databases)
    write_results(results, ROOT / "bench" / "results.json", ROOT / "docs" / "BENCHMARKS.md")
    print("\n" + render(results))


def test_the_benchmarks_run_in_short_form(kafka, settings, broker, data_dir, tmp_path):
    results = run_benchmarks(kafka, settings, broker, data_dir, SHORT, {"SQLite": f"sqlite:///{tmp_path / 'audit.db'}"})
    write_results(results, tmp_path / "results.json", tmp_path / "BENCHMARKS.md")
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| personaflow inline triggers over 20 personas |" in table
    assert results["inline"]["per_s"] > 0 and results["faust_agent"]["per_s"] > 0
    assert results["recovery"]["memory_s"] >= 0 and results["latency"]["at_200_per_s"]["p99"] > 0
    assert results["external"]["per_s"] > 0 and "external runs over 4 personas" in table
    assert results["external_10_steps"]["per_s"] > 0 and "external runs of 10 steps over 4 personas" in table
    assert results["audit"]["SQLite"]["events"] == SHORT.audit and "recorded into SQLite" in table
    assert results["governance"]["external"]["cpu_us"]["governed"] > 0 and "governance per" in table
