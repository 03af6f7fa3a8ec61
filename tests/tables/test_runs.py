"""The run transition: lifecycle, fencing, handoffs, control."""

from __future__ import annotations

import itertools

from streams.inbox import RunCommanded, RunFinished, RunLeaseLost, RunRegistered, RunReported, TriggerReceived
from streams.records import DeadLetter, RunDispatch
from streams.wire import RunControl, RunEvent, RunLimits, TriggerEnvelope
from tables import runs
from tables.store import MemoryStore

from .harness import T0, seen

ENVELOPE = TriggerEnvelope(provider="github", kind="pull_request", subject_key="github:r:pr:1", received_at_ms=T0)


class RunHarness:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.offsets = itertools.count()
        self.outputs: list = []

    def feed(self, record):
        txn = self.store.transaction()
        outputs = seen(runs.apply(txn, record, next(self.offsets)))
        self.store.apply(txn)
        self.outputs += outputs
        return outputs

    def register(self, run_id="run-1", lease_id="lease-1"):
        return self.feed(RunRegistered(at_ms=T0, run_id=run_id, persona="alice", lease_id=lease_id, request_id="req-1",
                                       attempt=1, entry_workflow="wf", envelope=ENVELOPE, deadline_ms=T0 + 1000,
                                       limits=RunLimits()))

    def report(self, kind, event_id=None, lease_id="lease-1", run_id="run-1", at=1, **fields):
        return self.feed(RunReported(at_ms=T0 + at, event=RunEvent(event_id=event_id or f"e-{kind}-{at}", run_id=run_id,
                                                                    lease_id=lease_id, kind=kind, **fields)))

    def command(self, action, command_id="c1", at=1, **fields):
        return self.feed(RunCommanded(at_ms=T0 + at, command=RunControl(command_id=command_id, run_id="run-1",
                                                                       action=action, actor="ops", **fields)))

    def record(self):
        return runs._RUN.decode(self.store.get(runs.RUNS, "run-1"))


def kinds(outputs):
    return [o.value.kind for o in outputs if o.role == "outbox"]


def test_a_run_reports_its_lifecycle_on_its_own_outbox_stream():
    h = RunHarness()
    assert kinds(h.register()) == ["run.dispatched"]
    assert kinds(h.report("started")) == ["run.started"]
    h.report("step_started", step_id="s1", name="lint", at=2)
    h.report("usage", tokens=10, cost_usd=0.002, at=3)
    h.report("step_completed", step_id="s1", output={"ok": True}, at=4)
    events = [o.value for o in h.outputs if o.role == "outbox"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert {e.stream for e in events} == {"run:run-1"} and all(e.persona == "alice" for e in events)
    assert events[3].payload == {"tokens": 10, "cost_usd": 0.002, "total_tokens": 10, "total_cost_usd": 0.002}
    assert h.record().status == "running"


def test_completion_notifies_the_persona_with_the_cost():
    h = RunHarness()
    h.register()
    h.report("usage", tokens=7, cost_usd=0.003, at=1)
    outputs = h.report("completed", event_id="done", at=2)
    [notice] = [o.value for o in outputs if o.role == "persona_inbox"]
    assert isinstance(notice, RunFinished)
    assert (notice.outcome, notice.run_id, notice.lease_id, notice.event_id) == ("completed", "run-1", "lease-1", "done")
    assert (notice.cost.cost_usd, notice.cost.tokens) == (0.003, 7)  # from the usage reports
    assert h.record().status == "completed"


def test_reports_with_a_stale_lease_are_fenced_into_the_dlq():
    h = RunHarness()
    h.register()
    outputs = h.report("completed", lease_id="old-lease")
    [letter] = [o.value for o in outputs if o.role == "dlq"]
    assert isinstance(letter, DeadLetter) and "stale lease" in letter.error and "old-lease" in letter.error
    assert h.record().status == "dispatched"


def test_reports_for_unknown_or_finished_runs_are_dead_lettered():
    h = RunHarness()
    [letter] = [o.value for o in h.report("heartbeat", run_id="nope") if o.role == "dlq"]
    assert "unknown run 'nope'" in letter.error
    h.register()
    h.report("failed", error="boom", at=2)
    [late] = [o.value for o in h.report("heartbeat", at=3) if o.role == "dlq"]
    assert "already failed" in late.error


def test_a_redelivered_report_is_dropped():
    h = RunHarness()
    h.register()
    h.report("heartbeat", event_id="hb1")
    assert h.report("heartbeat", event_id="hb1", at=2) == []
    done = h.report("completed", event_id="fin", at=3)
    assert h.report("completed", event_id="fin", at=4) == []
    assert len([o for o in done if o.role == "persona_inbox"]) == 1


def test_a_handoff_becomes_a_trigger_for_the_target_persona():
    h = RunHarness()
    h.register()
    outputs = h.report("handoff", event_id="h1", target_persona="reviewer", task="review the PR", name="review",
                       payload={"pr": 1})
    [forward] = [o for o in outputs if o.role == "persona_inbox"]
    assert forward.key == "reviewer" and isinstance(forward.value, TriggerReceived)
    request = forward.value.request
    assert (request.persona, request.provider, request.kind, request.raw) == ("reviewer", "handoff", "review", {"pr": 1})
    assert request.metadata["source_persona"] == "alice" and request.metadata["task"] == "review the PR"
    assert request.metadata["parent_run_id"] == "run-1" and request.metadata["handoff_id"] == "h1"


def test_control_is_forwarded_to_executors_and_cancel_ends_the_run():
    h = RunHarness()
    h.register()
    paused = h.command("pause", "c1")
    [dispatch] = [o.value for o in paused if o.role == "dispatch"]
    assert isinstance(dispatch, RunDispatch) and (dispatch.action, dispatch.command_id) == ("pause", "c1")
    assert h.record().status == "paused"
    cancelled = h.command("cancel", "c2", reason="wrong PR", at=2)
    [notice] = [o.value for o in cancelled if o.role == "persona_inbox"]
    assert (notice.outcome, notice.error) == ("cancelled", "cancelled by ops: wrong PR")
    assert [o.value.action for o in cancelled if o.role == "dispatch"] == ["cancel"]
    assert h.command("resume", "c3", at=3)[0].role == "dlq"


def test_a_lost_lease_expires_the_run_and_tells_the_executor_to_stop():
    h = RunHarness()
    h.register()
    outputs = h.feed(RunLeaseLost(at_ms=T0 + 5, run_id="run-1", lease_id="lease-1", reason="expired"))
    assert kinds(outputs) == ["run.lease_lost"]
    assert [o.value.action for o in outputs if o.role == "dispatch"] == ["cancel"]
    assert h.record().status == "expired"
    assert h.report("completed", at=6)[0].role == "dlq"
