"""The reference executor: runs simulated persona workflows for personaflow.

An executor is any process that consumes ``persona.runs.dispatch`` and reports on
``persona.run.events``. This one is the executor of the demo and the benchmarks, and a
readable example for writing a real one (an LLM workflow runner). The protocol:

1. Join a consumer group on ``persona.runs.dispatch`` (keyed by run id, so everything
   about one run reaches the same executor, in order).
2. ``action == "start"``: run ``entry_workflow`` for ``envelope``; keep ``lease_id``.
   Every report carries ``run_id``, that ``lease_id`` and a unique ``event_id``.
3. Report ``started``, then heartbeats often enough (a third of the lease's time to
   live): each report renews the lease; a silent run's lease expires and the work is
   dispatched again under a new lease.
4. Report ``step_started``/``step_completed``, ``usage`` (tokens, cost) as they happen,
   ``spawn`` for a child run, ``handoff`` for work of another persona.
5. End with ``completed`` or ``failed`` (``retryable``), with the final ``cost``.
6. ``pause``/``resume``/``cancel`` (and ``checkpoint``, ``guidance``, ...) arrive as
   dispatches for the same run: stop working while paused; stop at once on ``cancel``.

The simulated workflow follows options from the binding's ``executor_options``, which a
trigger's metadata can override with ``executor.<option>`` keys (see :class:`Options`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from engine import compat
from engine.kafka import BrokerAddress, new_consumer, new_producer
from engine.service import fetch, serve
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger("personaflow.executor")

OPTION_PREFIX = "executor."


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
class Execution:
    """One dispatch being worked on."""

    dispatch: dict[str, Any]
    options: Options
    running: asyncio.Event = field(default_factory=asyncio.Event)  # clear while paused
    task: asyncio.Task | None = None
    reports: int = 0
    step: int = 0
    spent_usd: float = 0.0
    spent_tokens: int = 0

    @property
    def run_id(self) -> str:
        return self.dispatch["run_id"]

    @property
    def lease_id(self) -> str:
        return self.dispatch["lease_id"]


class ReferenceExecutor:
    """Consumes dispatches as a group member; runs each started run as an asyncio task."""

    def __init__(self, settings: Settings, broker: BrokerAddress, *, group: str = "personaflow-executor") -> None:
        self.settings = settings
        self.broker = broker
        self.group = group
        self.names = TopicNames(settings.topic_prefix)
        self.producer: AIOKafkaProducer = new_producer(settings, broker.bootstrap, linger_ms=5)
        self.runs: dict[str, Execution] = {}  # run id -> current dispatch
        self.completed = 0  # runs this executor ended (completed or failed), for benchmarks
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------------ reporting

    async def report(self, execution: Execution, kind: str, **fields_: Any) -> None:
        """Send one report about ``execution`` (a new event id each time)."""
        execution.reports += 1
        event = {
            "event_id": f"{execution.lease_id}:{execution.reports}",
            "run_id": execution.run_id,
            "lease_id": execution.lease_id,
            "kind": kind,
            "at_ms": int(time.time() * 1000),
            **fields_,
        }
        await self.producer.send(self.names.run_events, json.dumps(event).encode(), key=execution.run_id.encode())

    # ------------------------------------------------------------------- the loop

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Consume dispatches until :meth:`stop`."""
        overrides: dict[str, Any] = dict(
            group_id=self.group, enable_auto_commit=True, auto_commit_interval_ms=1000, auto_offset_reset="latest"
        )
        if self.broker.embedded:
            overrides.update(compat.CONSUMER_SETTINGS, fetch_max_wait_ms=50)
        consumer = new_consumer(self.settings, self.broker.bootstrap, **overrides)
        await self.producer.start()
        await consumer.start()
        consumer.subscribe([self.names.dispatch])
        try:
            while not self.stopping.is_set():
                batch = await fetch(consumer, ready, timeout_ms=200, max_records=1000)
                for records in batch.values():
                    for record in records:
                        try:
                            self.handle(json.loads(record.value or b"null"))
                        except (ValueError, KeyError, TypeError) as exc:
                            log.warning(
                                "skipping dispatch at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
                            )
        finally:
            for execution in list(self.runs.values()):
                if execution.task is not None:
                    execution.task.cancel()
            await asyncio.gather(*(e.task for e in self.runs.values() if e.task is not None), return_exceptions=True)
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await consumer.stop()
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await self.producer.stop()

    def stop(self) -> None:
        self.stopping.set()

    def handle(self, dispatch: dict[str, Any]) -> None:
        """One dispatch: start a run, or pass control to the run it is about."""
        action, run_id = dispatch["action"], dispatch["run_id"]
        current = self.runs.get(run_id)
        if action == "start":
            if current is not None and current.lease_id == dispatch["lease_id"]:
                return  # read again after a rebalance: already running
            if current is not None and current.task is not None:
                current.task.cancel()  # an older dispatch of the run: its lease is gone
            execution = Execution(dispatch, Options.of(dispatch))
            execution.running.set()
            execution.task = asyncio.create_task(self._work(execution), name=f"run {run_id}")
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
            asyncio.create_task(self.report(current, "checkpoint", payload={"step": current.step}))
        elif action in ("guidance", "evidence", "a2a"):
            asyncio.create_task(
                self.report(
                    current, "message", name="executor", payload={"noted": action, "content": dispatch.get("content")}
                )
            )
        # compact, child_* and spawn_rejected: nothing to do in a simulation.

    # --------------------------------------------------------------- the workflow

    async def _work(self, execution: Execution) -> None:
        try:
            if not execution.options.silent:
                await self._simulate(execution)
        except asyncio.CancelledError:
            pass
        except KafkaError as exc:
            log.warning("run %s: could not report (%s); its lease will expire", execution.run_id, exc)
        finally:
            if self.runs.get(execution.run_id) is execution:
                del self.runs[execution.run_id]

    async def _simulate(self, execution: Execution) -> None:
        dispatch, options = execution.dispatch, execution.options
        work = dispatch.get("kind", "work") == "work"
        ttl_ms = max(1, dispatch["deadline_ms"] - int(time.time() * 1000))
        heartbeat_s = (options.heartbeat_ms or max(50, ttl_ms // 3)) / 1000
        step_s = options.duration_ms / 1000 / max(1, options.steps)
        fails = work and options.fails(execution.run_id, dispatch["attempt"])
        fail_at = options.steps // 2
        await self.report(execution, "started")
        for step in range(options.steps):
            if fails and step == fail_at:
                break
            await self._wait(execution, step_s, heartbeat_s)
            execution.step = step + 1
            step_id = f"s{step + 1}"
            await self.report(execution, "step_started", step_id=step_id, name=f"step {step + 1}")
            if options.tokens_per_step or options.cost_per_step_usd:
                execution.spent_tokens += options.tokens_per_step
                execution.spent_usd += options.cost_per_step_usd
                await self.report(
                    execution, "usage", tokens=options.tokens_per_step, cost_usd=options.cost_per_step_usd
                )
            await self.report(execution, "step_completed", step_id=step_id, output={"step": step + 1})
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


async def run_executor(settings: Settings, broker: BrokerAddress, group: str) -> None:
    """Run until SIGINT/SIGTERM."""
    executor = ReferenceExecutor(settings, broker, group=group)
    await serve(executor.run, executor.stop, lambda: f"executor ready (group {group})")
