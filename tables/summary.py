"""A persona's run summary and its diagnostics (docs/behaviour.md, section 5, *Queries*).

O(1) in the persona's history: the counts are the head's
:class:`~tables.state.RunCounters`, kept as runs change (a run counts in ``ready`` from
:func:`tables.runlog.register`, and every move of the run machine goes through
:func:`tables.runlog.move`), never a scan of the runs; the oldest queued entry is the first
row of the queue's arrival index. The status projection (:mod:`tables.status`) computes the
diagnostics of every persona that changed in every pass, so they read the head only.

Pure: times are the caller's (``now_ms``; the status's is the persona's clock, the web
view's the answering worker's wall clock, never before the persona's clock).

Diagnostics (``{code, severity, message}``), in this order:

* ``persona.unbound_with_runs`` (warning): unbound, with runs still open;
* ``executor.silent`` (warning): external execution, and the first dispatch since the last
  accepted report (of any run) went out ``lease_ttl_ms`` ago or more;
* ``budget.exhausted_with_work_queued`` (warning): the budget status is exhausted and
  triggers are queued;
* ``breakpoints.pending`` (info): runs are paused at a breakpoint, or the binding arms
  breakpoints (``debug.breakpoints``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from streams.wire import BudgetPolicy, PersonaBudgetStatus, PersonaDiagnostic

from . import budget
from .queue import Queue
from .state import PersonaHead, PersonaState

UNBOUND_WITH_RUNS = "persona.unbound_with_runs"
EXECUTOR_SILENT = "executor.silent"
BUDGET_EXHAUSTED_WITH_WORK_QUEUED = "budget.exhausted_with_work_queued"
BREAKPOINTS_PENDING = "breakpoints.pending"

#: The run statuses the summary counts, in the run machine's order.
STATUSES = (
    "ready",
    "dispatched",
    "running",
    "waiting",
    "paused",
    "retry_wait",
    "completed",
    "failed",
    "cancelled",
    "expired",
)
#: Breakpoint names a diagnostic message lists at most.
NAMES_SHOWN = 5

Severity = Literal["info", "warning", "error"]


def _diagnostic(code: str, severity: Severity, message: str) -> PersonaDiagnostic:
    return PersonaDiagnostic(code=code, severity=severity, message=message)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def diagnostics(
    head: PersonaHead, now_ms: int, budget_status: PersonaBudgetStatus | None = None
) -> list[PersonaDiagnostic]:
    """What the head says may need an operator at ``now_ms`` (O(1): the head alone).
    ``budget_status``: the budget status at ``now_ms``, if the caller has it already."""
    found: list[PersonaDiagnostic] = []
    binding = head.binding
    counters = head.counters
    open_runs = len(head.open_runs)
    if not head.bound and open_runs:
        found.append(
            _diagnostic(
                UNBOUND_WITH_RUNS,
                "warning",
                f"persona is unbound but {_plural(open_runs, 'run')} still open: they finish under its last"
                " binding; new work waits for a binding on persona.bindings",
            )
        )
    since = counters.unanswered_since_ms
    if binding is not None and binding.execution == "external" and since is not None:
        silent_ms = now_ms - since
        if silent_ms >= binding.lease_ttl_ms:
            found.append(
                _diagnostic(
                    EXECUTOR_SILENT,
                    "warning",
                    f"no executor answered a dispatch within lease_ttl_ms ({binding.lease_ttl_ms} ms; the first"
                    f" dispatch since the last report went out {silent_ms} ms ago): is an executor consuming"
                    " persona.runs.dispatch?",
                )
            )
    if head.queue.count and binding is not None:
        status = budget.status(binding.budget, head.budget, now_ms) if budget_status is None else budget_status
        if status.exhausted:
            found.append(
                _diagnostic(
                    BUDGET_EXHAUSTED_WITH_WORK_QUEUED,
                    "warning",
                    f"the budget is exhausted ({status.reason}) and {_plural(head.queue.count, 'trigger')} queued:"
                    " the budget gate refuses work until the window turns or the limit is raised",
                )
            )
    armed = binding.debug.breakpoints if binding is not None and binding.debug is not None else []
    if counters.at_breakpoint > 0 or armed:
        parts = []
        if counters.at_breakpoint > 0:
            parts.append(
                f"{_plural(counters.at_breakpoint, 'run')} paused at a breakpoint (resume with"
                " `personaflow run-control RUN_ID resume`)"
            )
        if armed:
            names = ", ".join(armed[:NAMES_SHOWN]) + (", ..." if len(armed) > NAMES_SHOWN else "")
            parts.append(f"breakpoints armed by the binding: {names}")
        found.append(_diagnostic(BREAKPOINTS_PENDING, "info", "; ".join(parts)))
    return found


def run_counts(head: PersonaHead) -> dict[str, int]:
    """Runs by status (from the counters), ``active`` = dispatched + running, ``open`` =
    not finished, ``total`` = ever started, ``paused_at_breakpoint``."""
    by_status = head.counters.by_status
    counts = {status: max(by_status.get(status, 0), 0) for status in STATUSES}
    return {
        "total": head.runs,
        "open": len(head.open_runs),
        "active": counts["dispatched"] + counts["running"],
        **counts,
        "paused_at_breakpoint": max(head.counters.at_breakpoint, 0),
    }


def summary(state: PersonaState, now_ms: int | None = None) -> dict[str, Any] | None:
    """The persona's run summary at ``now_ms`` (default, and at the earliest: its clock);
    None for a persona that does not exist."""
    head = state.head()
    if head is None:
        return None
    now = head.clock_ms if now_ms is None else max(now_ms, head.clock_ms)
    binding = head.binding
    policy = binding.budget if binding is not None else BudgetPolicy()
    status = budget.status(policy, head.budget, now)
    oldest = Queue(state, head.queue).oldest() if head.queue.count or head.queue.runs else None
    counters = head.counters
    return {
        "persona": head.name,
        "bound": head.bound,
        "execution": binding.execution if binding is not None else None,
        "state": head.mode,
        "at_ms": now,
        "runs": run_counts(head),
        "spent_today_usd": status.spent_today_usd,
        "tokens_today": status.tokens_today,
        "spent_this_hour_usd": status.spent_this_hour_usd,
        "reserved_usd": head.budget.reserved_usd,
        "reserved_tokens": head.budget.reserved_tokens,
        "budget": {
            "daily_usd": status.daily_usd,
            "hourly_usd": status.hourly_usd,
            "max_tokens": status.max_tokens,
            "remaining_today_usd": status.remaining_today_usd,
            "exhausted": status.exhausted,
            "reason": status.reason,
        },
        "retries": counters.retries,
        "lease_expiries": counters.lease_expiries,
        "preemptions": head.preemptions,
        "queued_triggers": head.queue.count,
        "queued_runs": head.queue.runs,
        "oldest_queued_at_ms": None if oldest is None else oldest.queued_at_ms,
        "oldest_queued_age_ms": None if oldest is None else max(now - oldest.queued_at_ms, 0),
        "last_dispatch_ms": counters.last_dispatch_ms,
        "last_report_ms": counters.last_report_ms,
        "unanswered_dispatch_since_ms": counters.unanswered_since_ms,
        "diagnostics": msgspec.to_builtins(diagnostics(head, now, status)),
    }
