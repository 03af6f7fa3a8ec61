"""The reference executor: runs simulated persona workflows for personaflow.

An executor is any process that consumes ``persona.runs.dispatch`` and reports on
``persona.run.events``. This one is the executor of the demo and the benchmarks, and a
readable example for writing a real one (an LLM workflow runner). The protocol:

1. Join a consumer group on ``persona.runs.dispatch`` (keyed by run id, so everything
   about one run reaches the same executor, in order). A new group reads from the
   earliest offset: dispatches published before it first joined are not skipped.
2. Commit a dispatch's offset only once it was acted on: a ``start`` once its run ended
   here (reported ``completed``/``failed``, cancelled, or superseded by a later ``start``
   of the run), a control dispatch once handled. After a crash the unfinished ``start``
   records are read again: run them again under their lease. A ``start`` of a run already
   running here under the same lease is a re-read: ignore it.
3. ``action == "start"``: run ``entry_workflow`` for ``envelope``; keep ``lease_id``.
   Every report carries ``run_id``, that ``lease_id`` and an ``event_id`` unique per
   report across restarts too: personaflow drops a report whose id it has seen, forever.
   A ``start`` carries ``idempotency_key`` (``"{run_id}:{attempt}"``: do each attempt's
   side effects once) and, from the run's second dispatch on (a retry, or a dispatch again
   after a lease expired), ``checkpoint``: the ``payload`` of the last ``checkpoint``
   report of the run, to resume from.
4. Report ``started``, then heartbeats often enough (a third of the lease's time to
   live): each report renews the lease; a silent run's lease expires and the work is
   dispatched again under a new lease.
5. Report ``step_started``/``step_completed``, ``usage`` (tokens, cost) as they happen,
   ``spawn`` for a child run, ``handoff`` for work of another persona, ``checkpoint``
   (with a ``payload``) for where a later attempt may resume.
6. End with ``completed`` or ``failed`` (``retryable``), with the final ``cost``.
7. ``pause``/``resume``/``cancel`` (and ``checkpoint``, ``guidance``, ...) arrive as
   dispatches for the same run: stop working while paused; stop at once on ``cancel``.

The simulated workflow follows options from the binding's ``executor_options``, which a
trigger's metadata can override with ``executor.<option>`` keys (see :class:`Options`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine import compat
from engine.kafka import BrokerAddress, new_consumer, new_producer
from engine.service import fetch, serve
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger("personaflow.executor")

OPTION_PREFIX = "executor."
#: How often the offsets of what was acted on are committed (and once more at a clean stop).
COMMIT_INTERVAL_S = 0.5
#: How long one commit may take before it is left for the next one.
COMMIT_TIMEOUT_S = 10.0
#: Report kinds that end a run on the executor: sent and acknowledged before its offset counts as done.
FINAL_REPORTS = ("completed", "failed")
#: The version the reference executor gives with its identity on ``started``.
EXECUTOR_VERSION = "0.1.0"
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Options:
    """How a simulated run behaves. Values come as strings (binding options, metadata)."""

    steps: int = 1  # workflow steps
    duration_ms: int = 0  # total time of the steps (split evenly)
    tokens_per_step: int = 0
    cost_per_step_usd: float = 0.0
    fail_probability: float = 0.0  # per attempt (deterministic for a run id and attempt)
    fail_on_attempt: str = ""  # attempts that fail, e.g. "1" or "1,2"
    retryable: bool = True  # whether failures may be retried
    heartbeat_ms: int = 0  # 0: a third of the lease's time to live
    spawn: str = ""  # children to spawn after the first step: "key:workflow[,key:workflow]"
    spawn_background: bool = False
    spawn_inherit_inbox: bool = False
    handoff_to: str = ""  # a persona to hand work to at the end
    handoff_task: str = "follow up"
    silent: bool = False  # never report (its lease expires): for trying out the reaper
    checkpoint: bool = False  # report {"completed_steps": k} after each step; a later start resumes from it
    model: str = "simulated-llm-1"  # the model it says it uses (started, usage): the run's BOM lists it
    tool: str = ""  # a tool each step_started names (policies may decide on it; the BOM lists it)

    @classmethod
    def of(cls, dispatch: dict[str, Any]) -> Options:
        """The binding's options, then the trigger's ``executor.*`` metadata over them."""
        raw: dict[str, str] = dict(dispatch.get("options") or {})
        metadata = (dispatch.get("envelope") or {}).get("metadata") or {}
        raw.update({k[len(OPTION_PREFIX) :]: v for k, v in metadata.items() if k.startswith(OPTION_PREFIX)})
        values: dict[str, Any] = {}
        for option in fields(cls):
            if option.name not in raw:
                continue
            text = raw[option.name]
            try:
                if option.type == "bool":
                    values[option.name] = text.strip().lower() in ("1", "true", "yes", "on")
                elif option.type == "int":
                    values[option.name] = int(text)
                elif option.type == "float":
                    values[option.name] = float(text)
                else:
                    values[option.name] = text
            except ValueError:
                log.warning("option %s=%r is not a %s; using the default", option.name, text, option.type)
        return cls(**values)

    def fails(self, run_id: str, attempt: int) -> bool:
        scripted = {int(a) for a in self.fail_on_attempt.split(",") if a.strip().isdigit()}
        if attempt in scripted:
            return True
        return self.fail_probability > 0 and random.Random(f"{run_id}:{attempt}").random() < self.fail_probability


@dataclass
class PartitionProgress:
    """What this executor did with one partition of the dispatch topic since it was assigned.

    ``open`` holds the offsets of the ``start`` dispatches read and not acted on yet (runs
    still running here). Everything below the lowest of them (below ``end`` when none is
    open) was acted on: that is the offset to commit, so that a restarted executor reads
    again exactly the runs it had not finished (and a few it had: it cannot tell them apart).
    """

    open: set[int] = field(default_factory=set)
    end: int | None = None  # one past the highest offset read
    committed: int | None = None  # the offset last committed

    def read(self, offset: int) -> bool:
        """Take note of a record; False if it was read before (the group rebalanced and the
        consumer went back to the committed offset, but this executor kept the partition)."""
        if self.end is not None and offset < self.end:
            return False
        self.end = offset + 1
        return True

    def to_commit(self) -> int | None:
        """The offset to commit, if it moved since the last commit."""
        point = min(self.open) if self.open else self.end
        return None if point is None or point == self.committed else point


@dataclass(frozen=True)
class Source:
    """Where a ``start`` dispatch was read."""

    progress: PartitionProgress
    offset: int
    timestamp_ms: int  # when the dispatch was published


@dataclass
class Execution:
    """One dispatch being worked on."""

    dispatch: dict[str, Any]
    options: Options
    source: Source | None = None
    running: asyncio.Event = field(default_factory=asyncio.Event)  # clear while paused
    task: asyncio.Task[None] | None = None
    abandoned: bool = False  # stopped without acting on it (stop, partition lost): to be read again
    step: int = 0  # steps of the run completed, across attempts (resumed from a checkpoint)
    spent_usd: float = 0.0
    spent_tokens: int = 0
    #: The attempt's span (a child of the dispatch's) and the span reports now come from.
    span: Span | None = None
    current: Span | None = None

    @property
    def run_id(self) -> str:
        return self.dispatch["run_id"]

    @property
    def lease_id(self) -> str:
        return self.dispatch["lease_id"]

    @property
    def idempotency_key(self) -> str:
        """``"{run_id}:{attempt}"``: what a real workflow would key its side effects by."""
        return str(self.dispatch.get("idempotency_key") or f"{self.run_id}:{self.dispatch.get('attempt', 1)}")

    def resume_point(self) -> int:
        """How many steps the run completed before this dispatch, by the checkpoint it
        carries (0 without one, or with one this executor did not write)."""
        checkpoint = self.dispatch.get("checkpoint")
        done = checkpoint.get("completed_steps") if isinstance(checkpoint, dict) else None
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            return 0
        return min(done, self.options.steps)


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """Commits what was acted on before partitions may move; gives up the runs of lost ones."""

    def __init__(self, executor: ReferenceExecutor, consumer: AIOKafkaConsumer) -> None:
        self.executor = executor
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.executor.commit(self.consumer)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.executor.assigned(set(assigned))


class ReferenceExecutor:
    """Consumes dispatches as a group member; runs each started run as an asyncio task."""

    def __init__(
        self,
        settings: Settings,
        broker: BrokerAddress,
        *,
        group: str = "personaflow-executor",
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        # Spans continue each dispatch's trace; without a provider no span is made and the
        # reports carry the dispatch's own context.
        self.tracer: Tracer | None = (
            None if tracer_provider is None else tracer_provider.get_tracer("personaflow.executor")
        )
        self.broker = broker
        self.group = group
        self.names = TopicNames(settings.topic_prefix)
        self.producer: AIOKafkaProducer = new_producer(settings, broker.bootstrap, linger_ms=5)
        self.runs: dict[str, Execution] = {}  # run id -> current dispatch
        self.progress: dict[TopicPartition, PartitionProgress] = {}  # assigned dispatch partitions
        self.completed = 0  # runs this executor ended (completed or failed), for benchmarks
        self.stopping = asyncio.Event()
        # Event ids are "{lease_id}:{instance}:{n}": a restarted executor (or this one running
        # a lease again) never repeats an id, which personaflow would drop as a redelivery.
        self.instance = uuid.uuid4().hex[:12]
        self.reports = itertools.count(1)

    # ------------------------------------------------------------------ reporting

    async def report(self, execution: Execution, kind: str, **fields_: Any) -> None:
        """Send one report about ``execution`` (a new event id each time). A final report
        is awaited until the broker has it: only then is the run's dispatch acted on."""
        event = {
            "event_id": f"{execution.lease_id}:{self.instance}:{next(self.reports)}",
            "run_id": execution.run_id,
            "lease_id": execution.lease_id,
            "persona": execution.dispatch["persona"],  # its persona's inbox takes it directly
            "kind": kind,
            "at_ms": int(time.time() * 1000),
            **fields_,
        }
        if isinstance(token := execution.dispatch.get("capability"), str):
            event["capability"] = token  # the dispatch's token: a report for another run is fenced
        carrier: dict[str, str] = {}
        if execution.current is not None:  # the span this report comes from, for personaflow's spans
            _PROPAGATOR.inject(carrier, trace.set_span_in_context(execution.current))
        elif isinstance(given := execution.dispatch.get("trace"), dict) and isinstance(given.get("traceparent"), str):
            carrier["traceparent"] = given["traceparent"]
        sent = await self.producer.send(
            self.names.run_events,
            json.dumps(event).encode(),
            key=execution.run_id.encode(),
            headers=[(name, value.encode()) for name, value in carrier.items()],
        )
        if kind in FINAL_REPORTS:
            await sent

    # ------------------------------------------------------------------- the loop

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Consume dispatches until :meth:`stop`. Offsets are committed by hand, only up to
        what was acted on (see :class:`PartitionProgress`); a new group starts at the earliest."""
        overrides: dict[str, Any] = dict(group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest")
        if self.broker.embedded:
            overrides.update(compat.CONSUMER_SETTINGS, fetch_max_wait_ms=50)
        consumer = new_consumer(self.settings, self.broker.bootstrap, **overrides)
        await self.producer.start()
        await consumer.start()
        consumer.subscribe([self.names.dispatch], listener=_Ownership(self, consumer))
        last_commit = time.monotonic()
        try:
            while not self.stopping.is_set():
                batch = await fetch(consumer, ready, timeout_ms=200, max_records=1000)
                for tp, records in batch.items():
                    progress = self.progress.setdefault(tp, PartitionProgress())
                    for record in records:
                        if progress.read(record.offset):
                            self._read(record, Source(progress, record.offset, record.timestamp))
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    last_commit = time.monotonic()
                    await self.commit(consumer)
        finally:
            tasks = [e.task for e in self.runs.values() if e.task is not None]
            for execution in list(self.runs.values()):
                self._abandon(execution)  # not acted on: read again by the next executor of the group
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.commit(consumer)
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await consumer.stop()
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await self.producer.stop()

    def stop(self) -> None:
        self.stopping.set()

    def _read(self, record: Any, source: Source) -> None:
        try:
            self.handle(json.loads(record.value or b"null"), source)
        except (ValueError, KeyError, TypeError) as exc:  # acted on: there is nothing to do with it
            log.warning("skipping dispatch at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)

    # ------------------------------------------------------------------- offsets

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit, per assigned partition, the lowest offset not acted on yet (if it moved)."""
        assigned = consumer.assignment()
        moved = {
            tp: (progress, offset)
            for tp, progress in list(self.progress.items())
            if tp in assigned and (offset := progress.to_commit()) is not None
        }
        if not moved:
            return
        try:
            await asyncio.wait_for(
                consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, (_, offset) in moved.items()}),
                COMMIT_TIMEOUT_S,
            )
        except (TimeoutError, KafkaError) as exc:  # e.g. the group rebalanced: committed on revocation
            log.info("dispatch offsets not committed (%s); trying again", exc)
            return
        for progress, offset in moved.values():
            progress.committed = offset

    def assigned(self, assigned: set[TopicPartition]) -> None:
        """A new assignment: the runs of partitions this executor lost are another member's
        now (it reads their ``start`` again and runs them under the same lease)."""
        for tp in [tp for tp in self.progress if tp not in assigned]:
            lost = self.progress.pop(tp)
            for execution in list(self.runs.values()):
                if execution.source is not None and execution.source.progress is lost:
                    self._abandon(execution)
        for tp in assigned:
            self.progress.setdefault(tp, PartitionProgress())

    def _abandon(self, execution: Execution) -> None:
        """Stop working on ``execution`` without acting on its dispatch (its offset stays open)."""
        execution.abandoned = True
        if execution.task is not None:
            execution.task.cancel()
        if self.runs.get(execution.run_id) is execution:
            del self.runs[execution.run_id]

    @staticmethod
    def _settle(execution: Execution) -> None:
        """``execution``'s dispatch was acted on: it no longer holds its partition's commit back."""
        if execution.source is not None and not execution.abandoned:
            execution.source.progress.open.discard(execution.source.offset)

    # ------------------------------------------------------------------ dispatches

    def handle(self, dispatch: dict[str, Any], source: Source | None = None) -> None:
        """One dispatch: start a run, or pass control to the run it is about. A ``start`` read
        from ``source`` stays open there until its run ends here; any other is acted on now."""
        action, run_id = dispatch["action"], dispatch["run_id"]
        current = self.runs.get(run_id)
        if action == "start":
            if current is not None and current.lease_id == dispatch["lease_id"]:
                return  # read again: already running under this lease
            execution = Execution(dispatch, Options.of(dispatch), source)
            if current is not None and current.task is not None:
                current.task.cancel()  # an older dispatch of the run: its lease is gone (acted on)
            execution.running.set()
            execution.task = asyncio.create_task(self._work(execution), name=f"run {run_id}")
            if source is not None:
                source.progress.open.add(source.offset)
            self.runs[run_id] = execution
            return
        if current is None or current.lease_id != dispatch["lease_id"]:
            return  # about a dispatch this executor does not run
        if action == "cancel":
            if current.task is not None:
                current.task.cancel()
        elif action == "pause":
            current.running.clear()
        elif action == "resume":
            current.running.set()
        elif action == "checkpoint":
            asyncio.create_task(self.report(current, "checkpoint", payload={"completed_steps": current.step}))
        elif action in ("guidance", "evidence", "a2a"):
            asyncio.create_task(
                self.report(
                    current, "message", name="executor", payload={"noted": action, "content": dispatch.get("content")}
                )
            )
        # compact, child_* and spawn_rejected: nothing to do in a simulation.

    # --------------------------------------------------------------- the workflow

    async def _work(self, execution: Execution) -> None:
        """Run ``execution`` to its end. However it ends (reported, cancelled, superseded, given
        up on), its dispatch was acted on, unless it was abandoned (see :meth:`_abandon`)."""
        try:
            if not execution.options.silent:
                self._open_span(execution)
                await self._simulate(execution)
        except asyncio.CancelledError:
            pass
        except KafkaError as exc:
            log.warning("run %s: could not report (%s); its lease will expire", execution.run_id, exc)
        finally:
            if execution.span is not None:
                execution.span.end()
            self._settle(execution)
            if self.runs.get(execution.run_id) is execution:
                del self.runs[execution.run_id]

    def _open_span(self, execution: Execution) -> None:
        """The attempt's span, a child of the dispatch's span (its ``trace``)."""
        dispatch = execution.dispatch
        if self.tracer is None:
            return
        given = dispatch.get("trace") or {}
        carrier = {k: v for k, v in given.items() if k in ("traceparent", "tracestate") and isinstance(v, str)}
        execution.span = execution.current = self.tracer.start_span(
            f"run {dispatch.get('entry_workflow', '')}",
            context=_PROPAGATOR.extract(carrier),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "personaflow.persona": str(dispatch.get("persona", "")),
                "personaflow.run_id": execution.run_id,
                "personaflow.attempt": int(dispatch.get("attempt", 1)),
            },
        )

    def _step_span(self, execution: Execution, step_id: str, index: int) -> Span | None:
        """A step's span under the attempt's (the seed's step scope: index, attempt, kind)."""
        if self.tracer is None:
            return None
        parent = trace.set_span_in_context(execution.span) if execution.span is not None else None
        span = self.tracer.start_span(
            f"step {step_id}",
            context=parent,
            attributes={
                "personaflow.step.index": index,
                "personaflow.step.attempt": int(execution.dispatch.get("attempt", 1)),
                "personaflow.step.kind": "simulated",
                "personaflow.step.scheduler": self.group,
            },
        )
        execution.current = span
        return span

    async def _simulate(self, execution: Execution) -> None:
        dispatch, options = execution.dispatch, execution.options
        work = dispatch.get("kind", "work") == "work"
        ttl_ms = dispatch["deadline_ms"] - int(time.time() * 1000)
        if execution.source is not None and execution.source.timestamp_ms > 0:
            # Read again after a restart, the dispatch's deadline may have passed (reports renewed
            # the lease since): its time to live is the deadline's distance from the dispatch.
            ttl_ms = max(ttl_ms, dispatch["deadline_ms"] - execution.source.timestamp_ms)
        ttl_ms = max(1, ttl_ms)
        heartbeat_s = (options.heartbeat_ms or max(50, ttl_ms // 3)) / 1000
        step_s = options.duration_ms / 1000 / max(1, options.steps)
        fails = work and options.fails(execution.run_id, dispatch["attempt"])
        fail_at = options.steps // 2
        # A later dispatch resumes after the steps its checkpoint says were completed: they are
        # neither reported nor spent again. (A failing attempt that resumes past ``fail_at``
        # fails before its first step.)
        execution.step = execution.resume_point()
        if execution.step:
            log.info("run %s: resuming after step %d (%s)", execution.run_id, execution.step, execution.idempotency_key)
        await self.report(
            execution,
            "started",
            payload={"idempotency_key": execution.idempotency_key, "resumed_after_steps": execution.step},
            executor={"id": f"personaflow-reference-executor/{self.instance}", "version": EXECUTOR_VERSION},
            model=options.model,
        )
        for step in range(execution.step, options.steps):
            if fails and step >= fail_at:
                break
            await self._wait(execution, step_s, heartbeat_s)
            execution.step = step + 1
            step_id = f"s{step + 1}"
            step_span = self._step_span(execution, step_id, step)
            tool = {"tool": options.tool} if options.tool else {}
            await self.report(execution, "step_started", step_id=step_id, name=f"step {step + 1}", **tool)
            if options.tokens_per_step or options.cost_per_step_usd:
                execution.spent_tokens += options.tokens_per_step
                execution.spent_usd += options.cost_per_step_usd
                await self.report(
                    execution,
                    "usage",
                    tokens=options.tokens_per_step,
                    cost_usd=options.cost_per_step_usd,
                    model=options.model,
                )
            await self.report(execution, "step_completed", step_id=step_id, output={"step": step + 1})
            if step_span is not None:
                step_span.end()
                execution.current = execution.span
            if options.checkpoint:
                await self.report(execution, "checkpoint", payload={"completed_steps": execution.step})
            if step == 0 and work and options.spawn:
                for child in options.spawn.split(","):
                    key, _, workflow = child.partition(":")
                    await self.report(
                        execution,
                        "spawn",
                        child_key=key.strip(),
                        entry_workflow=workflow.strip() or dispatch["entry_workflow"],
                        spawn_mode="child",
                        background=options.spawn_background,
                        inherit_inbox=options.spawn_inherit_inbox,
                        task=f"child {key.strip()}",
                    )
        cost = {"cost_usd": execution.spent_usd, "tokens": execution.spent_tokens}
        if fails:
            await self.report(
                execution,
                "failed",
                error=f"simulated failure on attempt {dispatch['attempt']}",
                retryable=options.retryable,
                cost=cost,
            )
        else:
            if work and options.handoff_to:
                await self.report(
                    execution, "handoff", target_persona=options.handoff_to, task=options.handoff_task, name="handoff"
                )
            await self.report(execution, "completed", output={"steps": options.steps}, cost=cost)
        self.completed += 1

    async def _wait(self, execution: Execution, seconds: float, heartbeat_s: float) -> None:
        """Work for ``seconds`` (not counting pauses), heartbeating."""
        left = seconds
        while left > 0 or not execution.running.is_set():
            if not execution.running.is_set():
                await execution.running.wait()  # paused: the pipeline keeps the lease
                continue
            chunk = min(left, heartbeat_s)
            await asyncio.sleep(chunk)
            left -= chunk
            if left > 0:
                await self.report(execution, "heartbeat")


def tracer_provider_from_environment() -> SdkTracerProvider | None:
    """An SDK provider exporting OTLP/HTTP if ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    provider = SdkTracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "personaflow-executor")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


async def run_executor(settings: Settings, broker: BrokerAddress, group: str) -> None:
    """Run until SIGINT/SIGTERM."""
    provider = tracer_provider_from_environment()
    executor = ReferenceExecutor(settings, broker, group=group, tracer_provider=provider)
    try:
        await serve(executor.run, executor.stop, lambda: f"executor ready (group {group})")
    finally:
        if provider is not None:
            provider.shutdown()  # exports what is left
