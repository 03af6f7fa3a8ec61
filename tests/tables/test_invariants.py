"""Invariants of the persona and run transitions under random interleavings (hypothesis).

Triggers, persona control, run control, executors' reports (current, stale, garbage and
redelivered), ticks and redeliveries of earlier inputs are fed through the run directory
and the persona transition exactly as the runtime routes them. After every step:

* at most one run holds a persona's lease, and only the lease holder's family executes;
* a run has at most one terminal event and never leaves a terminal state;
* every outbox stream's ``seq`` is gap-free from 1;
* the persona's recorded spend equals the sum of its runs' ledgers' actual costs;
* no work key completes twice;

and at the end, feeding the same inputs again from empty state gives byte-identical outputs.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streams import wire
from streams.inbox import (
    PERSONA_INPUT,
    RUN_INPUT,
    BindingChanged,
    ControlReceived,
    RunCommanded,
    RunReported,
    Tick,
    TriggerReceived,
)
from streams.outputs import Output
from tables import persona as persona_transition
from tables import runs as directory_transition
from tables.runstate import EXECUTING, TERMINAL, RunState
from tables.state import PersonaState
from tables.store import MemoryStore

from .harness import T0, binding

PERSONAS = ("ana", "bo")
TERMINAL_EVENTS = {f"run.{status}" for status in TERMINAL}


def runner(name: str) -> Any:
    return binding(
        name=name,
        execution="external",
        entry_workflow="wf",
        lease_ttl_ms=1000,
        estimated_run_usd=0.01,
        compensation_workflow="wf/undo",
        budget={"daily_usd": 5.0},
        retry={"max_attempts": 2, "backoff_ms": 100},
        run_limits={"max_tokens": 500},
    )


class Pipeline:
    """Both transitions over memory stores, routed as the runtime routes them."""

    def __init__(self) -> None:
        self.personas = MemoryStore()
        self.directory = MemoryStore()
        self.outputs: list[Output] = []
        self.positions = itertools.count()

    def persona(self, record: Any) -> None:
        txn = self.personas.transaction()
        produced = persona_transition.apply(txn, record, next(self.positions))
        self.personas.apply(txn)
        self._route(produced)

    def run_inbox(self, record: Any) -> None:
        txn = self.directory.transaction()
        produced = directory_transition.apply(txn, record, next(self.positions))
        self.directory.apply(txn)
        self._route(produced)

    def _route(self, produced: list[Output]) -> None:
        self.outputs.extend(produced)
        for output in produced:
            if output.role == "run_inbox":
                self.run_inbox(RUN_INPUT.decode(output.value_bytes()))
        for output in produced:
            if output.role == "persona_inbox":
                record = PERSONA_INPUT.decode(output.value_bytes())
                if (
                    getattr(record, "persona", None) in PERSONAS
                    or getattr(getattr(record, "request", None), "persona", None) in PERSONAS
                ):
                    self.persona(record)

    def feed(self, kind: str, record: Any) -> None:
        (self.persona if kind == "persona" else self.run_inbox)(record)

    def run_state(self, name: str) -> RunState:
        return RunState(PersonaState(self.personas.transaction(), name))


class RunInvariants(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pipeline = Pipeline()
        self.inputs: list[tuple[str, Any]] = []
        self.now = T0
        self.ids = itertools.count()
        self.reports: list[RunReported] = []
        self.terminal: dict[str, str] = {}
        for name in PERSONAS:
            self._feed("persona", BindingChanged(at_ms=self.now, persona=name, binding=runner(name)))

    def _feed(self, kind: str, record: Any) -> None:
        self.inputs.append((kind, record))
        self.pipeline.feed(kind, record)

    def _runs(self) -> list[Any]:
        found = []
        for name in PERSONAS:
            state = self.pipeline.run_state(name)
            head = state.state.head()
            found.extend(state.run(state.indexed(n)) for n in range(head.runs))
        return found

    # --------------------------------------------------------------------- rules

    @rule(persona=st.sampled_from(PERSONAS), work=st.integers(0, 3), advance=st.integers(0, 400))
    def trigger(self, persona: str, work: int, advance: int) -> None:
        self.now += advance
        request = wire.TriggerRequest(
            request_id=f"req-{next(self.ids)}",
            persona=persona,
            provider="linear",
            kind="issue",
            metadata={"issue_key": f"K-{work}"},
        )
        self._feed("persona", TriggerReceived(at_ms=self.now, request=request))

    @rule(persona=st.sampled_from(PERSONAS), action=st.sampled_from(["pause", "resume", "drain", "disable", "enable"]))
    def control(self, persona: str, action: str) -> None:
        command = wire.ControlCommand(command_id=f"cmd-{next(self.ids)}", persona=persona, action=action, actor="t")
        self._feed("persona", ControlReceived(at_ms=self.now, command=command))

    @precondition(lambda self: bool(self._runs()))
    @rule(
        data=st.data(),
        kind=st.sampled_from(
            ["started", "heartbeat", "usage", "completed", "failed", "spawn", "waiting", "input_received", "message"]
        ),
        lease=st.sampled_from(["current", "current", "current", "stale", "garbage"]),
        tokens=st.integers(0, 300),
        cents=st.integers(0, 5),
        advance=st.integers(0, 700),
    )
    def report(self, data: st.DataObject, kind: str, lease: str, tokens: int, cents: int, advance: int) -> None:
        self.now += advance
        run = data.draw(st.sampled_from(self._runs()))
        lease_id = {
            "current": run.lease_id,
            "garbage": "persona_lease_garbage",
            "stale": run.ledger[0].lease_id if run.ledger else run.lease_id,
        }[lease]
        fields: dict[str, Any] = {}
        if kind == "usage":
            fields = {"tokens": tokens, "cost_usd": cents / 100}
        elif kind in ("completed", "failed"):
            fields = {"cost": wire.RunCost(cost_usd=cents / 100, tokens=tokens)}
            if kind == "failed":
                fields["error"] = "boom"
        elif kind == "spawn":
            fields = {
                "child_key": f"c{next(self.ids) % 3}",
                "entry_workflow": "wf/child",
                "inherit_inbox": bool(tokens % 2),
                "background": bool(cents % 2),
            }
        event = wire.RunEvent(
            event_id=f"ev-{next(self.ids)}", run_id=run.run_id, lease_id=lease_id, kind=kind, **fields
        )
        record = RunReported(at_ms=self.now, event=event)
        self.reports.append(record)
        self._feed("run", record)

    @precondition(lambda self: bool(self._runs()))
    @rule(
        data=st.data(),
        usage=st.integers(0, 9),
        final=st.integers(0, 9),
        outcome=st.sampled_from(["completed", "failed"]),
    )
    def work_then_outcome(self, data: st.DataObject, usage: int, final: int, outcome: str) -> None:
        """An executor reports usage, then the outcome with a final cost above or below it."""
        run = data.draw(st.sampled_from(self._runs()))
        for kind, fields in (
            ("usage", {"tokens": usage * 10, "cost_usd": usage / 100}),
            (
                outcome,
                {
                    "cost": wire.RunCost(cost_usd=final / 100, tokens=final * 10),
                    **({"error": "boom"} if outcome == "failed" else {}),
                },
            ),
        ):
            event = wire.RunEvent(
                event_id=f"ev-{next(self.ids)}", run_id=run.run_id, lease_id=run.lease_id, kind=kind, **fields
            )
            record = RunReported(at_ms=self.now, event=event)
            self.reports.append(record)
            self._feed("run", record)

    @precondition(lambda self: bool(self.reports))
    @rule(data=st.data())
    def redeliver_report(self, data: st.DataObject) -> None:
        self._feed("run", data.draw(st.sampled_from(self.reports)))

    @precondition(lambda self: len(self.inputs) > len(PERSONAS))
    @rule(data=st.data())
    def redeliver_input(self, data: st.DataObject) -> None:
        """At-least-once: an earlier trigger or command arrives again."""
        kind, record = data.draw(
            st.sampled_from(
                [i for i in self.inputs if isinstance(i[1], (TriggerReceived, ControlReceived))] or self.inputs[:1]
            )
        )
        self._feed(kind, record)

    @precondition(lambda self: bool(self._runs()))
    @rule(data=st.data(), action=st.sampled_from(["pause", "resume", "cancel", "guidance", "checkpoint"]))
    def run_control(self, data: st.DataObject, action: str) -> None:
        run = data.draw(st.sampled_from(self._runs()))
        command = wire.RunControl(
            command_id=f"rc-{next(self.ids)}",
            run_id=run.run_id,
            action=action,
            actor="t",
            content="hint" if action == "guidance" else None,
        )
        self._feed("run", RunCommanded(at_ms=self.now, command=command))

    @rule(persona=st.sampled_from(PERSONAS), advance=st.integers(1, 2500))
    def tick(self, persona: str, advance: int) -> None:
        self.now += advance
        self._feed("persona", Tick(at_ms=self.now, persona=persona))

    # ---------------------------------------------------------------- invariants

    @invariant()
    def one_lease_holder_per_persona(self) -> None:
        for name in PERSONAS:
            state = self.pipeline.run_state(name)
            lease = state.state.lease()
            head = state.state.head()
            runs = [state.run(state.indexed(n)) for n in range(head.runs)]
            executing_roots = {r.root_run_id for r in runs if r.status in EXECUTING and not r.background}
            if lease is None:
                assert not {r.run_id for r in runs if r.status in EXECUTING and r.kind != "child"}, name
            else:
                assert executing_roots <= {lease.run_id}, (name, lease.run_id, executing_roots)

    @invariant()
    def a_terminal_state_is_final_and_announced_once(self) -> None:
        for run in self._runs():
            if run.run_id in self.terminal:
                assert run.status == self.terminal[run.run_id], run.run_id
            elif run.status in TERMINAL:
                self.terminal[run.run_id] = run.status
        counts: dict[str, int] = defaultdict(int)
        for output in self.pipeline.outputs:
            if output.role == "outbox":
                event = orjson.loads(output.value_bytes())
                if event["kind"] in TERMINAL_EVENTS:
                    counts[event["stream"]] += 1
        assert all(count == 1 for count in counts.values()), counts

    @invariant()
    def outbox_streams_are_gap_free(self) -> None:
        seqs: dict[str, list[int]] = defaultdict(list)
        for output in self.pipeline.outputs:
            if output.role == "outbox":
                event = orjson.loads(output.value_bytes())
                seqs[event["stream"]].append(event["seq"])
        for stream, numbers in seqs.items():
            assert numbers == list(range(1, len(numbers) + 1)), stream

    @invariant()
    def spend_equals_the_ledgers(self) -> None:
        for name in PERSONAS:
            state = self.pipeline.run_state(name)
            head = state.state.head()
            runs = [state.run(state.indexed(n)) for n in range(head.runs)]
            ledger_usd = sum(a.actual_usd for r in runs for a in r.ledger)
            ledger_tokens = sum(a.actual_tokens for r in runs for a in r.ledger)
            assert abs(head.budget.spent_total_usd - ledger_usd) < 1e-9, name
            assert head.budget.spent_total_tokens == ledger_tokens, name
            reserved = sum(a.reserved_usd for r in runs for a in r.ledger if a.open)
            assert abs(head.budget.reserved_usd - reserved) < 1e-9, name

    @invariant()
    def no_work_key_completes_twice(self) -> None:
        completed: dict[tuple[str, str], int] = defaultdict(int)
        for output in self.pipeline.outputs:
            if output.role == "outbox":
                event = orjson.loads(output.value_bytes())
                if event["kind"] == "persona.run.completed":
                    completed[(event["persona"], event["payload"]["work_key"])] += 1
        assert all(count == 1 for count in completed.values()), completed

    def teardown(self) -> None:
        again = Pipeline()
        for kind, record in self.inputs:
            again.feed(kind, record)
        assert [(o.role, o.key_bytes(), o.value_bytes()) for o in again.outputs] == [
            (o.role, o.key_bytes(), o.value_bytes()) for o in self.pipeline.outputs
        ]


RunInvariants.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_run_invariants_hold_under_random_interleavings = RunInvariants.TestCase
