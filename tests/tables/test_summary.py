"""The run summary and the diagnostics (docs/behaviour.md section 5, *Queries*), through the
pure persona transition: the counters kept in the head agree with a scan of the runs' own
states after every input, and each diagnostic appears and clears."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from tables import summary as summaries
from tables.runstate import RunState
from tables.state import PersonaHead, PersonaState, decode_head
from tables.timefmt import DAY_MS

from .harness import T0, cost
from .test_execution import P, Runs, runner

TTL = 1000


def scanned(h: Runs) -> tuple[dict[str, int], int]:
    """Runs by status, and runs paused at a breakpoint, from the runs' own rows (a scan of
    every run the persona ever had: what the counters spare the summary)."""
    state = PersonaState(h.store.transaction(), P)
    head = state.head()
    assert head is not None
    runs = RunState(state)
    rows = []
    for number in range(head.runs):
        run_id = runs.indexed(number)
        assert run_id is not None
        run = runs.run(run_id)
        assert run is not None
        rows.append(run)
    return dict(Counter(r.status for r in rows)), sum(1 for r in rows if r.status == "paused" and r.active_pause)


def counted(h: Runs) -> tuple[dict[str, int], int]:
    head = h.head()
    assert head is not None
    return {s: n for s, n in head.counters.by_status.items() if n}, head.counters.at_breakpoint


def summary(h: Runs, now_ms: int | None = None) -> dict[str, Any]:
    found = summaries.summary(PersonaState(h.store.transaction(), P), now_ms)
    assert found is not None
    return found


def codes(h: Runs, now_ms: int | None = None) -> list[str]:
    """Diagnostic codes of the summary; the published status has the same at its clock."""
    found = [d["code"] for d in summary(h, now_ms)["diagnostics"]]
    if now_ms is None and h.head().bound:  # type: ignore[union-attr]
        assert [d.code for d in h.status(P).diagnostics] == found
    return found


class Checked(Runs):
    """After every input: the head's counters equal a scan of the runs."""

    def feed(self, record: Any, position: int | None = None) -> Any:
        outputs = super().feed(record, position)
        if self.head() is not None:
            assert counted(self) == scanned(self), record
        return outputs


def test_the_counts_follow_a_mix_of_runs_completed_failed_retried_expired_cancelled_paused_waiting():
    h = Checked()
    b = runner(retry={"max_attempts": 2, "backoff_ms": 10, "factor": 1.0}, lease_ttl_ms=TTL)
    r1 = h.start(b, number=1).run_id
    h.say(r1, "started")
    h.say(r1, "completed", cost=cost(0.01, 10))

    r2 = h.start(number=2, at_ms=T0 + 10).run_id
    h.say(r2, "failed", error="flaky", at_ms=T0 + 10)  # a retry scheduled: retry_wait
    assert summary(h)["runs"]["retry_wait"] == 1 and summary(h)["retries"] == 1
    r3 = h.start(number=3, at_ms=T0 + 15).run_id  # takes the lease first
    h.tick(P, T0 + 20)  # r2's backoff is over: ready, waiting for the lease
    assert (summary(h)["runs"]["ready"], summary(h)["queued_runs"]) == (1, 1)
    h.say(r3, "failed", error="broken", retryable=False, at_ms=T0 + 30)  # failed; r2 dispatched again
    h.say(r2, "completed", at_ms=T0 + 40)

    r4 = h.start(number=4, at_ms=T0 + 50).run_id  # nobody answers
    h.tick(P, T0 + 50 + TTL)  # expired, re-queued
    h.tick(P, T0 + 60 + TTL)  # dispatched again
    h.tick(P, T0 + 60 + 2 * TTL)  # the second expiry ends it
    assert h.run(r4)["status"] == "expired"

    at = T0 + 60 + 2 * TTL
    r5 = h.start(number=5, at_ms=at).run_id
    h.run_control(P, r5, "cancel", at_ms=at)

    r6 = h.start(number=6, at_ms=at).run_id
    h.say(r6, "started", at_ms=at)
    for key in ("a", "b", "c"):
        h.say(r6, "spawn", child_key=key, entry_workflow=f"wf/{key}", at_ms=at)
    a, b_, c = h.run(r6)["children"]
    h.say(a, "waiting", name="approval", at_ms=at)
    h.run_control(P, b_, "pause", at_ms=at)
    h.run_control(P, c, "break", content={"step": "deploy"}, at_ms=at)
    h.say(c, "step_started", step_id="deploy", at_ms=at)  # paused at the breakpoint
    h.trigger(P, "github", "pull_request", {"repository": "r", "number": "7"}, at_ms=at + 5, request_id="req-7")

    found = summary(h, now_ms=at + 1005)
    assert found["runs"] == {
        "total": 9,
        "open": 4,
        "active": 1,  # r6 running
        "ready": 0,
        "dispatched": 0,
        "running": 1,
        "waiting": 1,  # child a
        "paused": 2,  # child b (run control), child c (breakpoint)
        "retry_wait": 0,
        "completed": 2,  # r1, r2
        "failed": 1,  # r3
        "cancelled": 1,  # r5
        "expired": 1,  # r4
        "paused_at_breakpoint": 1,
    }
    assert (found["retries"], found["lease_expiries"], found["preemptions"]) == (1, 2, 0)
    assert (found["queued_triggers"], found["queued_runs"]) == (1, 0)
    assert (found["oldest_queued_at_ms"], found["oldest_queued_age_ms"]) == (at + 5, 1000)
    assert found["spent_today_usd"] == 0.01 and found["tokens_today"] == 10
    assert found["at_ms"] == at + 1005 and found["persona"] == P and found["bound"] is True
    assert summary(h, now_ms=T0)["at_ms"] == at + 5  # never before the persona's clock
    assert codes(h) == ["breakpoints.pending"]

    h.run_control(P, c, "resume", at_ms=at + 10)  # no run at a breakpoint any more
    assert counted(h)[1] == 0 and codes(h) == []
    h.run_control(P, b_, "cancel", at_ms=at + 10)  # paused -> cancelled
    h.say(r6, "completed", at_ms=at + 20)  # the unfinished children are cancelled; req-7 runs
    final = summary(h)["runs"]
    assert (final["cancelled"], final["completed"], final["dispatched"], final["open"]) == (4, 3, 1, 1)
    assert summary(h)["queued_triggers"] == 0 and summary(h)["oldest_queued_at_ms"] is None


def test_a_run_ended_while_paused_at_a_breakpoint_is_no_longer_counted_there():
    h = Checked()
    run = h.start(runner(debug={"breakpoints": ["deploy"]})).run_id
    assert codes(h) == ["breakpoints.pending"]  # armed by the binding
    h.say(run, "step_started", step_id="deploy")
    message = summary(h)["diagnostics"][0]["message"]
    assert "1 run paused at a breakpoint" in message and "armed by the binding: deploy" in message
    h.say(run, "completed")  # paused -> completed
    assert counted(h) == ({"completed": 1}, 0)
    h.bind(runner())  # the binding no longer arms any
    assert codes(h) == []


def test_executor_silent_appears_lease_ttl_after_an_unanswered_dispatch_and_clears_with_a_report():
    h = Checked()
    b = runner(lease_ttl_ms=TTL, retry={"max_attempts": 5, "backoff_ms": 100, "factor": 1.0})
    run = h.start(b).run_id
    assert codes(h) == [] and codes(h, now_ms=T0 + TTL - 1) == []
    assert codes(h, now_ms=T0 + TTL) == ["executor.silent"]  # the summary at a later wall clock
    h.tick(P, T0 + TTL)  # the lease expires: the status, at its clock, says so too
    assert h.run(run)["status"] == "retry_wait"
    [silent] = h.status(P).diagnostics
    assert (silent.code, silent.severity) == ("executor.silent", "warning")
    assert silent.message == (
        f"no executor answered a dispatch within lease_ttl_ms ({TTL} ms; the first dispatch since the last report"
        f" went out {TTL} ms ago): is an executor consuming persona.runs.dispatch?"
    )
    h.tick(P, T0 + TTL + 100)  # dispatched again: still the first unanswered dispatch that counts
    assert h.run(run)["dispatches"] == 2 and codes(h) == ["executor.silent"]
    head = h.head()
    assert head is not None
    counters = head.counters
    assert (counters.last_dispatch_ms, counters.unanswered_since_ms, counters.last_report_ms) == (
        T0 + TTL + 100,
        T0,
        None,
    )
    h.say(run, "started", at_ms=T0 + TTL + 200)  # an executor answers
    assert codes(h) == [] and codes(h, now_ms=T0 + 10 * TTL) == []
    assert summary(h)["last_report_ms"] == T0 + TTL + 200


def test_executor_silent_is_about_dispatches_only():
    h = Checked()
    h.bind(runner(lease_ttl_ms=TTL))
    h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, cost=cost(0.01, 1))  # inline
    assert codes(h, now_ms=T0 + 10 * TTL) == [] and summary(h)["last_dispatch_ms"] is None


def test_budget_exhausted_with_work_queued_appears_and_clears_when_the_window_turns():
    h = Checked()
    h.bind(runner(budget={"daily_usd": 0.05}))
    h.trigger(P, "github", "pull_request", {"repository": "r", "number": "1"}, cost=cost(0.05, 5))  # inline
    assert h.status(P).budget.exhausted and codes(h) == []  # exhausted, nothing queued
    h.control(P, "pause")
    h.trigger(P, "github", "pull_request", {"repository": "r", "number": "2"})
    assert codes(h) == ["budget.exhausted_with_work_queued"]
    [diagnostic] = h.status(P).diagnostics
    assert diagnostic.message.startswith("the budget is exhausted (daily_usd) and 1 trigger queued")
    assert codes(h, now_ms=T0 + DAY_MS) == []  # the next day's window
    h.tick(P, T0 + DAY_MS)
    assert codes(h) == [] and h.status(P).queued_events == 1


def test_an_unbound_persona_with_open_runs_says_so_until_they_end():
    h = Checked()
    run = h.start(runner()).run_id
    h.unbind(P)
    found = summary(h)
    assert found["bound"] is False and found["runs"]["open"] == 1
    [diagnostic] = found["diagnostics"]
    assert (diagnostic["code"], diagnostic["severity"]) == ("persona.unbound_with_runs", "warning")
    assert diagnostic["message"].startswith("persona is unbound but 1 run still open")
    h.say(run, "completed")  # runs finish under the last binding
    assert codes(h) == [] and summary(h)["runs"]["completed"] == 1


def test_a_head_stored_before_the_counters_decodes_with_zeros():
    stored = msgspec.json.encode(PersonaHead(name=P))
    raw = msgspec.json.decode(stored)
    del raw["counters"]
    head = decode_head(msgspec.json.encode(raw))
    assert (head.counters.by_status, head.counters.retries, head.counters.unanswered_since_ms) == ({}, 0, None)
    assert summaries.run_counts(head)["completed"] == 0
