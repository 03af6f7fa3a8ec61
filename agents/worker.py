"""Assemble the pipeline (agents, tables, views) and run a Faust worker."""

from __future__ import annotations

import asyncio
import logging

import faust

from streams.app import Pipeline, create_app, reset_stale_state, worker_dir
from engine.kafka import BrokerAddress
from personaflow.embedded import resolve_broker
from engine.kafka import ensure_topics
from streams.settings import Settings

from . import continuity, ingress, persona, runs, timers, web

log = logging.getLogger(__name__)


def build(settings: Settings, broker: BrokerAddress) -> Pipeline:
    pipeline = create_app(settings, broker)
    stats, inputs = ingress.register(pipeline)
    positions = continuity.positions_table(pipeline)
    store, persona_input = persona.register(pipeline, positions)
    run_input = runs.register(pipeline, positions)
    timers.register(pipeline, store, [*inputs, persona_input, run_input])
    web.register(pipeline, ingress_stats=stats, store=store)
    return pipeline


def run_worker(settings: Settings) -> None:
    """Start a worker against the configured (or embedded) broker; blocks until stopped."""
    broker = resolve_broker(settings)
    asyncio.run(ensure_topics(settings, broker.bootstrap))
    if reset_stale_state(worker_dir(settings), broker):
        log.warning("wiped local table state built against an earlier embedded broker")
    pipeline = build(settings, broker)
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
