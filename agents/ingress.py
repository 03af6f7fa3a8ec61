"""Ingress agents: validate public input and forward it into the inboxes.

One agent per public input topic. Each record is admitted (:func:`streams.admission.admit`)
into the persona or run inbox, or dead-lettered to ``persona.dlq``; the stream never
stops on bad input. The ``ingress-stats`` table counts, per input partition, what was
accepted and dead-lettered, and remembers the last offset it handled so that records
replayed after a crash are neither forwarded nor counted twice.
"""

from __future__ import annotations

from typing import Any, Sequence

import faust
from faust.types import EventT

from streams.admission import Forward, admit
from streams.app import Pipeline
from streams.outputs import Output

from .continuity import Continuity, Positions
from .runtime import TableWriter, json_table, publish

INGRESS_ROLES = ("bindings", "triggers", "control", "run_events", "run_control")


def new_stats() -> dict[str, int]:
    return {"offset": -1, "accepted": 0, "dead_lettered": 0}


def stats_table(pipeline: Pipeline) -> faust.Table:
    return json_table(
        pipeline, "ingress-stats", "per input partition: last handled offset, accepted and dead-lettered counts"
    )


def register(pipeline: Pipeline) -> tuple[faust.Table, list[Continuity]]:
    stats = stats_table(pipeline)
    return stats, [_register_role(pipeline, role, stats) for role in INGRESS_ROLES]


def _register_role(pipeline: Pipeline, role: str, stats: faust.Table) -> Continuity:
    writer = TableWriter(pipeline)
    positions = Positions(role, stats)  # stats rows carry the last handled offset
    continuity = Continuity(pipeline, role, positions.stored)

    async def handle(events: Sequence[EventT]) -> None:
        outputs: list[Output] = []
        marks: dict[str, tuple[EventT, dict[str, Any]]] = {}
        for item in await continuity.complete(events):
            raw, event = item.raw, item.event
            key = positions.key(raw.partition)
            entry = marks[key][1] if key in marks else dict(stats.get(key) or new_stats())
            if raw.offset <= entry["offset"]:
                continue  # forwarded before a crash; its stats write landed, its commit did not
            verdict = admit(role, raw)
            if isinstance(verdict, Forward):
                outputs.append(Output(verdict.inbox, verdict.key, verdict.record))
                entry["accepted"] += 1
            else:
                outputs.append(Output("dlq", raw.key, verdict, (("error", verdict.error[:200]),)))
                entry["dead_lettered"] += 1
            entry["offset"] = raw.offset
            marks[key] = (event, entry)
        await publish(pipeline, outputs)
        await writer.write((stats, key, entry, event) for key, (event, entry) in marks.items())

    async def ingress(stream: faust.StreamT) -> None:
        await continuity.feed(stream, handle)

    ingress.__name__ = ingress.__qualname__ = f"ingress_{role}"
    pipeline.app.agent(pipeline.topic(role), name=f"ingress-{role}")(ingress)
    return continuity
