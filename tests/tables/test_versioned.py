"""Crash safety of the commit protocol (tables.versioned), with crashes injected anywhere.

The scenario is processed in batches the way the agent does it. A crash keeps an
arbitrary subset of one commit step's writes (changelog topics are independent, so any
subset can be durable), then the batch is processed again from the consumer's last
commit. The final state and the published records must equal a crash-free run's.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.inbox import BindingChanged, ControlReceived, LeaseTick, RunFinished, TriggerReceived, persona_of
from streams.records import ControlCommand, TriggerRequest
from tables import ids
from tables import persona as transition
from tables.state import DEPENDENT_TABLES, PERSONAS, applied_of
from tables.store import Transaction
from tables.versioned import CommittedView, parse, plan_commit, visible

from .harness import T0, cost, merge_captain


def trigger(persona: str, request_id: str, number: int, at: int, **extra: Any) -> TriggerReceived:
    return TriggerReceived(at_ms=T0 + at, request=TriggerRequest(
        request_id=request_id, persona=persona, provider="github", kind="pull_request",
        metadata={"repository": "r", "number": str(number)}, **extra))


def command(persona: str, command_id: str, action: str, at: int, **extra: Any) -> ControlReceived:
    return ControlReceived(at_ms=T0 + at, command=ControlCommand(command_id=command_id, persona=persona, action=action,
                                                                  actor="t", **extra))


def finished(persona: str, request_id: str, decision: int, at: int, outcome: str = "completed") -> RunFinished:
    return RunFinished(at_ms=T0 + at, persona=persona, run_id=ids.run_id(persona, request_id, decision),
                       lease_id=ids.lease_id(persona, request_id, decision), outcome=outcome,
                       cost=cost(0.001, 2), error=None if outcome == "completed" else "boom", event_id=f"e-{request_id}")


ALICE = merge_captain().model_copy(update={"name": "alice", "execution": "external", "lease_ttl_ms": 1000})
BOB = merge_captain(daily_usd=0.05).model_copy(update={"name": "bob"})
SCENARIO = [
    BindingChanged(at_ms=T0, persona="alice", binding=ALICE),
    BindingChanged(at_ms=T0, persona="bob", binding=BOB),
    trigger("alice", "a1", 1, 1),
    trigger("bob", "b1", 1, 1, cost=cost(0.01, 5)),
    trigger("alice", "a2", 2, 2),
    trigger("alice", "a3", 3, 3, priority=2),
    command("bob", "bp", "pause", 4),
    trigger("bob", "b2", 2, 5, cost=cost(0.02, 5)),
    trigger("bob", "b3", 3, 5, cost=cost(0.03, 5)),
    finished("alice", "a1", 0, 6),
    trigger("bob", "b1", 1, 6, cost=cost(0.01, 5)),  # redelivered request
    command("bob", "br", "resume", 7),
    LeaseTick(at_ms=T0 + 1006, persona="alice"),  # a3's lease (from 6) expires at 1006
    command("alice", "ad", "drain", 1007),
    trigger("alice", "a4", 4, 1008),
    finished("alice", "a2", 1, 1009, outcome="failed"),
    command("bob", "bs", "record_spend", 1010, cost=cost(0.001, 1)),
    trigger("bob", "b4", 1, 1011),
    command("alice", "ar", "resume", 1012),
]


def materialize(tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The committed view of every row (what a reader sees), keyed like the tables."""
    heads = tables[PERSONAS]
    view: dict[str, dict[str, Any]] = {PERSONAS: dict(heads)}
    for name in DEPENDENT_TABLES:
        rows = {}
        for key, stored in tables[name].items():
            persona = key if not key.startswith("[") else json.loads(key)[0]
            value = visible(stored, applied_of(heads[persona]) if persona in heads else -1)
            if value is not None:
                rows[key] = value
        view[name] = rows
    return view


def process(batch_size: int, crash: tuple[int, str, int] | None = None):
    tables: dict[str, dict[str, Any]] = {name: {} for name in (PERSONAS, *DEPENDENT_TABLES)}
    published: list[tuple[str, bytes]] = []
    position, batch_number = 0, 0
    while position < len(SCENARIO):
        batch = SCENARIO[position:position + batch_size]
        txns: dict[str, Transaction] = {}
        for offset, record in enumerate(batch, start=position):
            persona = persona_of(record)
            if persona not in txns:
                head = tables[PERSONAS].get(persona)
                applied = -1 if head is None else applied_of(head)
                txns[persona] = Transaction(CommittedView(tables, PERSONAS, applied))
            for output in transition.apply(txns[persona], record, offset):
                published.append((output.role, output.value_bytes() or b""))
        plan = plan_commit(txns, PERSONAS, applied_of)
        crashed = crash is not None and crash[0] == batch_number
        rng = random.Random(crash[2] if crash else 0)

        def keep(items: list) -> list:
            return [item for item in items if rng.random() < 0.5] if crashed else items

        stage = crash[1] if crashed else "none"
        for table, key, stored, _ in (keep(plan.entries) if stage == "entries" else plan.entries):
            tables[table][key] = stored
        if stage != "entries":
            for persona, head in (keep(plan.heads) if stage == "heads" else plan.heads):
                tables[PERSONAS][persona] = head
        if stage not in ("entries", "heads"):
            for table, key, _ in (keep(plan.deletions) if stage == "deletions" else plan.deletions):
                if key in tables[table] and parse(tables[table][key])[1] is None:
                    del tables[table][key]
        batch_number += 1
        if crashed:
            crash = None  # restart: the consumer resumes at the batch's first record
            continue
        position += len(batch)
    return materialize(tables), published


def by_id(published: list[tuple[str, bytes]]) -> dict[str, set[bytes]]:
    found: dict[str, set[bytes]] = {}
    for role, raw in published:
        if role in ("receipts", "outbox"):
            value = json.loads(raw)
            found.setdefault(value.get("receipt_id") or value["event_id"], set()).add(raw)
    return found


CLEAN_STATE, CLEAN_PUBLISHED = process(batch_size=1)


@settings(max_examples=250, deadline=None)
@given(batch_size=st.integers(1, 6), crash_batch=st.integers(0, 18),
       stage=st.sampled_from(["entries", "heads", "deletions", "after_commit"]), seed=st.integers(0, 10**6))
def test_a_crash_at_any_commit_step_neither_loses_nor_doubles_an_effect(batch_size, crash_batch, stage, seed):
    state, published = process(batch_size, (crash_batch, stage, seed))
    assert state == CLEAN_STATE
    clean, seen = by_id(CLEAN_PUBLISHED), by_id(published)
    assert seen.keys() == clean.keys()
    assert all(len(contents) == 1 for contents in seen.values()), "an id was published with two contents"
    assert seen == clean


def test_the_scenario_exercises_queues_leases_expiry_drain_and_redelivery():
    kinds = [json.loads(raw)["kind"] for role, raw in CLEAN_PUBLISHED if role == "outbox"]
    for kind in ("persona.lease.conflict", "persona.lease.expired", "persona.control.draining", "persona.run.failed",
                 "persona.trigger.queued", "persona.run.completed", "persona.budget.recorded"):
        assert kind in kinds
    statuses = [json.loads(raw)["status"] for role, raw in CLEAN_PUBLISHED if role == "receipts"]
    assert {"dispatched", "lease_busy", "queued", "completed", "failed"} <= set(statuses)


def test_batching_does_not_change_the_result():
    for size in (2, 3, 7, 50):
        state, published = process(size)
        assert state == CLEAN_STATE
        assert by_id(published) == by_id(CLEAN_PUBLISHED)
