"""The run agent: consumes ``persona.run.inbox`` (keyed by run id) in batches.

A run's whole state is one row of ``runs``, written once per batch after the outputs
were acknowledged, so it needs no multi-table commit protocol.
"""

from __future__ import annotations

from typing import Sequence

import faust
from faust.types import EventT

from streams.admission import dead_letter
from streams.app import Pipeline
from streams.codec import DecodeError, decode_union
from streams.inbox import RUN_INPUT, run_of
from streams.outputs import Output
from tables import runs as transition
from tables.store import Transaction

from .ingress import raw_record
from .runtime import TableWriter, batches, json_table, publish


class TableReader:
    def __init__(self, table: faust.Table) -> None:
        self.table = table

    def get(self, table: str, key: str) -> dict | None:
        return self.table.get(key)


def register(pipeline: Pipeline) -> faust.Table:
    runs = json_table(pipeline, transition.RUNS, "one row per dispatched run: status, lease, counters")
    reader = TableReader(runs)
    writer = TableWriter(pipeline)

    async def handle(events: Sequence[EventT]) -> None:
        txn = Transaction(reader)
        last: dict[str, EventT] = {}
        outputs: list[Output] = []
        for event in events:
            message = event.message
            try:
                record = decode_union(RUN_INPUT, "run inbox record", message.value)
            except DecodeError as exc:
                outputs.append(Output("dlq", message.key, dead_letter(raw_record(event), str(exc))))
                continue
            outputs.extend(transition.apply(txn, record, message.offset))
            last[run_of(record)] = event
        await publish(pipeline, outputs)
        await writer.write((runs, key, value, last[key]) for _, key, value in txn.changes())

    async def run_agent(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            await handle(events)

    pipeline.app.agent(pipeline.topic("run_inbox"), name="runs")(run_agent)
    return runs
