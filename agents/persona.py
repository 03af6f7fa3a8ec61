"""The persona agent: consumes ``persona.inbox`` (keyed by persona) in batches.

Per batch: decode each record, apply :func:`tables.persona.apply` through one
transaction per persona over the committed view, publish every output and the new
status of each changed persona, wait for the acknowledgements, then store the state
with the head as the commit record (see :mod:`tables.versioned` for why this is safe).
"""

from __future__ import annotations

from typing import Sequence

import faust
from faust.types import EventT

from streams.app import Pipeline
from streams.inbox import PERSONA_INPUT, persona_of
from streams.outputs import Output
from tables import persona as transition
from tables.state import DEPENDENT_TABLES, PERSONAS, PersonaState, applied_of
from tables.status import project
from tables.store import Transaction
from tables.versioned import CommittedView, parse, plan_commit

from .continuity import Continuity, Positions, decoded
from .runtime import TableWriter, publish, state_table

TABLE_HELP = {
    PERSONAS: "persona head: binding, lifecycle, clock, counters, queue index, applied inbox offset",
    "leases": "the active work lease of each persona",
    "budgets": "spend in the current UTC day and hour windows of each persona",
    "queues": "queued work items, one per (persona, work key)",
    "completed": "completed work keys per persona (permanent dedupe)",
    "requests": "decisions and last receipt per (persona, request or command id)",
    "values": "the last 100 value receipts of each persona (ring)",
}


def status_output(txn: Transaction, persona: str) -> Output | None:
    """The persona's new status (a tombstone once unbound)."""
    state = PersonaState(txn, persona)
    head = state.head()
    if head is None:
        return None
    if not head.bound:
        return Output("status", persona, None, (("persona", persona),))
    return Output("status", persona, project(state, head), (("persona", persona),))


class PersonaStore:
    """The persona tables and the commit protocol over them."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.writer = TableWriter(pipeline)
        self.tables: dict[str, faust.Table] = {
            name: state_table(pipeline, name, TABLE_HELP[name]) for name in (PERSONAS, *DEPENDENT_TABLES)
        }

    def view(self, persona: str) -> CommittedView:
        head = self.tables[PERSONAS].get(persona)
        return CommittedView(self.tables, PERSONAS, -1 if head is None else applied_of(head))

    def transaction(self, persona: str) -> Transaction:
        return Transaction(self.view(persona))

    async def commit(self, txns: dict[str, Transaction], events: dict[str, EventT]) -> None:
        """Store a batch's state in the order :mod:`tables.versioned` requires; each step
        is acknowledged by the broker before the next one starts."""
        plan = plan_commit(txns, PERSONAS, applied_of)
        await self.writer.write((self.tables[table], key, stored, events[persona])
                                for table, key, stored, persona in plan.entries)
        await self.writer.write((self.tables[PERSONAS], persona, head, events[persona]) for persona, head in plan.heads)
        await self.writer.write((self.tables[table], key, None, events[persona])
                                for table, key, persona in plan.deletions
                                if (stored := self.tables[table].get(key)) is not None and parse(stored)[1] is None)


def register(pipeline: Pipeline, positions_rows: faust.Table) -> tuple[PersonaStore, Continuity]:
    store = PersonaStore(pipeline)
    positions = Positions(pipeline.names.persona_inbox, positions_rows)
    continuity = Continuity(pipeline, "persona_inbox", positions.stored)

    async def handle(events: Sequence[EventT]) -> None:
        items = await continuity.complete(events)
        txns: dict[str, Transaction] = {}
        last: dict[str, EventT] = {}
        outputs: list[Output] = []
        for item, record in decoded(items, PERSONA_INPUT, "persona inbox record", outputs):
            persona = persona_of(record)
            txn = txns.get(persona)
            if txn is None:
                txn = txns[persona] = store.transaction(persona)
            outputs.extend(transition.apply(txn, record, item.offset))
            last[persona] = item.event
        for persona, txn in txns.items():
            if txn.changed:
                status = status_output(txn, persona)
                if status is not None:
                    outputs.append(status)
        await publish(pipeline, outputs)
        await store.commit(txns, last)
        await store.writer.write(positions.advanced(items))  # only once the state is durable

    async def persona_agent(stream: faust.StreamT) -> None:
        await continuity.feed(stream, handle)

    pipeline.app.agent(pipeline.topic("persona_inbox"), name="persona")(persona_agent)
    return store, continuity
