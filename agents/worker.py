"""Assemble the pipeline (sources, timers, views) on the runtime and run a worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable

import msgspec
from aiohttp import web as aioweb

from engine.checkpoint import LostStateWrite
from engine.kafka import BrokerAddress, TopicLayoutError, ensure_topics
from engine.runtime import Engine, EngineConfig
from engine.state import PartitionStore, reset_stale_state
from streams.capability import Signer
from streams.settings import Settings
from tables import budget
from tables.state import LEASES, PERSONAS, QUEUES, Budget, QueueIndex
from tables.store import ORDERED, Transaction

from . import ingress, persona, runs, timers, web
from .auditwatch import AuditWatch
from .tracing import SpanSink, from_environment

log = logging.getLogger(__name__)


#: Dead letters a worker remembers for ``GET /dead-letters`` (the dashboard).
RECENT_DEAD_LETTERS = 50


class StartupError(RuntimeError):
    """The worker cannot start; the message says why and what to do."""


def engine_config(settings: Settings, sink: SpanSink | None = None, signer: Signer | None = None) -> EngineConfig:
    return EngineConfig(
        sources=[*ingress.sources(settings), persona.source(sink, signer), runs.source()],
        punctuators=[timers.punctuator(settings)],
        transaction=Transaction,
        ordered_tables=ORDERED,
        recent_outputs={"dlq": RECENT_DEAD_LETTERS},
    )


class _Limits(msgspec.Struct):
    daily_usd: float | None = None
    hourly_usd: float | None = None
    max_tokens: int | None = None


class _BindingBudget(msgspec.Struct):
    budget: _Limits = msgspec.field(default_factory=_Limits)


class _HeadGauges(msgspec.Struct):
    """What the per-persona gauges read of a persona's head (decoding skips the rest)."""

    name: str
    bound: bool = False
    clock_ms: int = 0
    binding: _BindingBudget | None = None
    queue: QueueIndex = msgspec.field(default_factory=QueueIndex)
    budget: Budget = msgspec.field(default_factory=Budget)


_HEAD_GAUGES = msgspec.json.Decoder(_HeadGauges)

#: The per-persona gauges, read together from the heads of this worker's personas.
PERSONA_GAUGES = [
    (
        "personaflow_queue_depth",
        "Work queued per persona: triggers and runs waiting for the persona's lease",
        ["persona"],
    ),
    (
        "personaflow_budget_remaining_usd",
        "Dollars left per persona and window (daily, hourly) with a limit: limit - spent - reserved, at least 0",
        ["persona", "window"],
    ),
    (
        "personaflow_budget_remaining_tokens",
        "Tokens left today per persona with max_tokens: max_tokens - tokens today - reserved, at least 0",
        ["persona"],
    ),
    (
        "personaflow_budget_projected_burn_usd",
        "Dollars committed per persona and window (daily, hourly): spent in the window + reserved by runs in flight",
        ["persona", "window"],
    ),
    (
        "personaflow_budget_projected_burn_tokens",
        "Tokens committed today per persona: tokens today + reserved by runs in flight",
        ["persona"],
    ),
]


def persona_gauges(engine: Engine) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """The per-persona gauges of the active partitions, at the worker's wall clock (never
    before a persona's own clock: a window that turned since its last input counts as empty).
    Unbound personas with nothing queued are left out."""
    wall = int(time.time() * 1000)
    found: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for name, _, _ in PERSONA_GAUGES}
    depth, left_usd, left_tokens = (found[name] for name, _, _ in PERSONA_GAUGES[:3])
    burn_usd, burn_tokens = (found[name] for name, _, _ in PERSONA_GAUGES[3:])
    for _, task in sorted(engine.tasks.items()):
        if not task.active:
            continue
        for _, raw in task.store.items(PERSONAS):
            head = _HEAD_GAUGES.decode(raw)
            queued = head.queue.count + head.queue.runs
            if not head.bound and not queued:
                continue
            name = head.name
            depth.append(((name,), float(queued)))
            if head.binding is None:
                continue
            limits, money = head.binding.budget, head.budget
            day, tokens, hour = budget.window(money, max(wall, head.clock_ms))
            burn_usd.append(((name, "daily"), day + money.reserved_usd))
            burn_usd.append(((name, "hourly"), hour + money.reserved_usd))
            burn_tokens.append(((name,), float(tokens + money.reserved_tokens)))
            if limits.daily_usd is not None:
                left_usd.append(((name, "daily"), max(limits.daily_usd - day - money.reserved_usd, 0.0)))
            if limits.hourly_usd is not None:
                left_usd.append(((name, "hourly"), max(limits.hourly_usd - hour - money.reserved_usd, 0.0)))
            if limits.max_tokens is not None:
                left_tokens.append(((name,), float(max(limits.max_tokens - tokens - money.reserved_tokens, 0))))
    return found


def build(
    settings: Settings, broker: BrokerAddress, sink: SpanSink | None = None, signer: Signer | None = None
) -> Engine:
    engine = Engine(settings, broker, engine_config(settings, sink, signer))
    metrics = engine.metrics
    metrics.add_gauges(
        "personaflow_consumer_lag",
        "Input records not yet processed, per input partition",
        ["topic", "partition"],
        lambda: [((topic, str(p)), float(lag)) for (topic, p), lag in engine.lag().items()],
    )

    def per_partition(count: Callable[[PartitionStore], int]) -> Callable[[], list[tuple[tuple[str, ...], float]]]:
        return lambda: [
            ((str(p),), float(count(task.store))) for p, task in sorted(engine.tasks.items()) if task.active
        ]

    metrics.add_gauges(
        "personaflow_active_leases",
        "Work leases held by runs in flight, per partition",
        ["partition"],
        per_partition(lambda store: store.count(LEASES)),
    )
    metrics.add_gauges(
        "personaflow_queued_items",
        "Queued work items, per partition",
        ["partition"],
        per_partition(lambda store: store.count(QUEUES)),
    )
    metrics.add_gauges(
        "personaflow_runs_in_flight",
        "Dispatched runs not finished yet, per partition",
        ["partition"],
        per_partition(runs.in_flight),
    )
    metrics.add_gauge_group(PERSONA_GAUGES, lambda: persona_gauges(engine))
    return engine


async def serve(settings: Settings, broker: BrokerAddress, stop: asyncio.Event, signer: Signer | None = None) -> None:
    """Run one worker until ``stop`` is set (or the loop fails); with a ``signer``, its
    dispatches carry capability tokens and its runs' BOMs are signed."""
    await ensure_topics(settings, broker.bootstrap)
    sink = from_environment()
    engine = build(settings, broker, sink, signer)
    if reset_stale_state(engine.state_dir, broker.instance if broker.embedded else None):
        log.warning("wiped local state built against an earlier embedded broker")
    watch = AuditWatch(settings, broker)
    app, views = web.application(engine, signer, watch.current)
    runner = aioweb.AppRunner(app, access_log=None)
    await runner.setup()
    site = aioweb.TCPSite(runner, settings.web_bind, settings.web_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"cannot serve HTTP on {settings.web_bind}:{settings.web_port} ({exc.strerror});"
            " set PERSONAFLOW_WEB_PORT to a free port"
        ) from None
    try:
        await engine.start()
        loop_task = asyncio.create_task(engine.run())
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({loop_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if loop_task in done:
            loop_task.result()  # a fatal error: raise it
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
    finally:
        await watch.close()
        await engine.stop()
        await views.close()
        await runner.cleanup()
        if sink is not None:
            sink.close()  # exports what is left


def tune_garbage_collector() -> None:
    """A pass allocates many short-lived objects (records, dicts): collect the youngest
    generation every 50,000 allocations instead of 700, and leave what start-up built out
    of every collection (``gc.freeze``). Measured: about 10 % less CPU per trigger."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings, broker: BrokerAddress, signer: Signer | None = None) -> int:
    """Run a worker in this process until SIGTERM/SIGINT; return the exit status."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))

    async def main() -> None:
        tune_garbage_collector()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, broker, stop, signer)

    try:
        asyncio.run(main())
    except (TopicLayoutError, StartupError, LostStateWrite) as exc:
        print(f"personaflow worker: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
