"""The run agent: consumes ``persona.run.inbox`` (keyed by run id) in batches.

A run's whole state is one row of ``runs``, written once per batch after the outputs
were acknowledged, so it needs no multi-table commit protocol.
"""

from __future__ import annotations

from typing import Sequence

import faust
from faust.types import EventT

from streams.app import Pipeline
from streams.inbox import RUN_INPUT, run_of
from streams.outputs import Output
from tables import runs as transition
from tables.store import Transaction

from .continuity import Continuity, Positions, decoded
from .runtime import TableWriter, publish, state_table


class TableReader:
    def __init__(self, table: faust.Table) -> None:
        self.table = table

    def get(self, table: str, key: str) -> bytes | None:
        return self.table.get(key)


def register(pipeline: Pipeline, positions_rows: faust.Table) -> Continuity:
    runs = state_table(pipeline, transition.RUNS, "one row per dispatched run: status, lease, counters")
    reader = TableReader(runs)
    writer = TableWriter(pipeline)
    positions = Positions(pipeline.names.run_inbox, positions_rows)
    continuity = Continuity(pipeline, "run_inbox", positions.stored)

    async def handle(events: Sequence[EventT]) -> None:
        items = await continuity.complete(events)
        txn = Transaction(reader)
        last: dict[str, EventT] = {}
        outputs: list[Output] = []
        for item, record in decoded(items, RUN_INPUT, "run inbox record", outputs):
            outputs.extend(transition.apply(txn, record, item.offset))
            last[run_of(record)] = item.event
        await publish(pipeline, outputs)
        await writer.write((runs, key, value, last[key]) for _, key, value in txn.changes())
        await writer.write(positions.advanced(items))

    async def run_agent(stream: faust.StreamT) -> None:
        await continuity.feed(stream, handle)

    pipeline.app.agent(pipeline.topic("run_inbox"), name="runs")(run_agent)
    return continuity
