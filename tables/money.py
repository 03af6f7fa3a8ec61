"""Money: the one gate every commitment passes, and the one place spend is recorded.

* :func:`gate` / :func:`refusal`: may this amount be committed now? It checks the cost
  alone against ``run_usd``, and spent + reserved + the amount against ``daily_usd``,
  ``hourly_usd`` and ``max_tokens`` (strict ``>``). Every reservation — first dispatch,
  retry, re-dispatch after an expiry, compensation, child — and every inline run and
  manual spend passes it, so a persona's spent + reserved never exceeds a window's limit
  at the moment money is committed (guarantee 9).
* :func:`record`: every change of spend is one ``persona.budget.recorded`` event, and the
  head's windows change by exactly what it says, so the spend is the sum of those events.
  A settlement below the usage recorded takes back at most what its dispatch put into the
  current windows (:func:`tables.budget.record`): spend is never negative.
* :func:`reserve` and :func:`close`: a dispatch's reservation, held until the dispatch
  ends, then released and reconciled with what it cost (``persona.budget.reconciled``).
"""

from __future__ import annotations

from streams.wire import PersonaBinding, RunCost

from . import budget as budgets
from . import ids
from .machines import AttemptEvent, close_attempt
from .runstate import Attempt, RunRow, WindowShare
from .step import Step


def reservation(binding: PersonaBinding) -> tuple[float, int]:
    """What one dispatch of an external run reserves: ``estimated_run_usd`` and
    ``run_limits.max_tokens`` tokens (zero where unset)."""
    return binding.estimated_run_usd or 0.0, binding.run_limits.max_tokens or 0


def refusal(step: Step, usd: float, tokens: int) -> str | None:
    """The budget window this amount would break now (``run_usd``, ``daily_usd``,
    ``hourly_usd``, ``max_tokens``), or None: the gate's question, asked without writing."""
    return budgets.enforce(step.binding.budget, step.head.budget, usd, tokens, step.now)


def backpressure(step: Step, usd: float, tokens: int) -> bool:
    """Whether a dispatch reserving this much would take what the persona's runs in flight
    have reserved past the binding's ``max_inflight_tokens`` or ``max_inflight_cost_usd``
    (strict ``>``; an empty reservation never waits) — seed 004.9.2, per persona. With
    nothing in flight it never waits either: a reservation above the limit runs alone
    (the seed's would wait forever)."""
    binding, budget = step.binding, step.head.budget
    if budget.reserved_usd <= 0 and budget.reserved_tokens <= 0:
        return False
    tokens_over = (
        binding.max_inflight_tokens is not None
        and tokens > 0
        and budget.reserved_tokens + tokens > binding.max_inflight_tokens
    )
    cost_over = (
        binding.max_inflight_cost_usd is not None
        and usd > 0
        and budget.reserved_usd + usd > binding.max_inflight_cost_usd
    )
    return tokens_over or cost_over


def permanent(step: Step, reason: str, usd: float, tokens: int) -> bool:
    """Whether the amount alone breaks the window: waiting for budget cannot help."""
    return budgets.permanent(step.binding.budget, reason, usd, tokens)


def window_end(reason: str, now_ms: int) -> int:
    """When the window a refusal was about turns: the next UTC hour for ``hourly_usd``,
    else the next UTC day."""
    return budgets.window_end(reason, now_ms)


def exhausted(step: Step, usd: float, tokens: int, reason: str) -> str:
    """Write ``persona.budget.exhausted`` for a refused amount; return the error text."""
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit(
        "persona.budget.exhausted",
        {
            "receipt_id": receipt_id,
            "reason": reason,
            "attempted_cost_usd": usd,
            "attempted_tokens": tokens,
            "persona": step.persona,
        },
    )
    budgets.mark_exhausted(step.head.budget, reason, receipt_id, step.now)
    error = f"persona budget exhausted: {reason}"
    step.head.last_error = error
    return error


def gate(step: Step, usd: float, tokens: int) -> str | None:
    """The gate: None if the amount may be committed, else the error (and the
    ``persona.budget.exhausted`` event is written)."""
    reason = refusal(step, usd, tokens)
    return None if reason is None else exhausted(step, usd, tokens, reason)


def record(
    step: Step,
    usd: float,
    tokens: int,
    lease_id: str | None,
    run_id: str | None = None,
    *,
    share: WindowShare | None = None,
    last_run: bool = True,
) -> str:
    """One change of spend: ``persona.budget.recorded`` and the windows; returns its id."""
    receipt_id = ids.budget_receipt_id(step.persona, step.next_seq())
    step.emit(
        "persona.budget.recorded",
        {"receipt_id": receipt_id, "persona": step.persona, "cost_usd": usd, "tokens": tokens, "lease_id": lease_id},
        run_id,
    )
    budgets.record(step.head.budget, usd, tokens, receipt_id, step.now, last_run=last_run, share=share)
    return receipt_id


def record_run(step: Step, cost: RunCost, lease_id: str | None) -> str:
    """An inline run's or a manual spend's cost (never negative)."""
    return record(step, cost.cost_usd, cost.tokens, lease_id)


def take_spend(
    step: Step, run: RunRow, attempt: Attempt, *, usage: tuple[float, int] | None = None, final: RunCost | None = None
) -> None:
    """Usage reported for a dispatch, or its final cost: the recorded spend is brought to it."""
    if usage is not None:
        attempt.usage_usd += usage[0]
        attempt.usage_tokens += usage[1]
    if final is not None:
        attempt.final_usd, attempt.final_tokens = final.cost_usd, final.tokens
    usd, tokens = attempt.actual_usd - attempt.recorded_usd, attempt.actual_tokens - attempt.recorded_tokens
    if not usd and not tokens:
        return
    run.budget_receipt_id = record(step, usd, tokens, attempt.lease_id, run.run_id, share=attempt.share, last_run=False)
    attempt.recorded_usd += usd
    attempt.recorded_tokens += tokens


def reserve(step: Step, run: RunRow, attempt: Attempt) -> None:
    """Hold the dispatch's reservation (it passed the gate)."""
    usd, tokens = attempt.reserved_usd, attempt.reserved_tokens
    budgets.reserve(step.head.budget, usd, tokens)
    if usd or tokens:
        step.emit(
            "persona.budget.reserved",
            {
                "run_id": run.run_id,
                "attempt": run.attempt,
                "lease_id": attempt.lease_id,
                "reserved_usd": usd,
                "reserved_tokens": tokens,
            },
            run.run_id,
            run.trace,
        )


def close(step: Step, run: RunRow, attempt: Attempt, event: AttemptEvent, error: str | None = None) -> None:
    """End a dispatch (once): its reservation is released and reconciled with its cost."""
    if not close_attempt(attempt, event):
        return
    attempt.ended_at_ms = step.now
    attempt.error = error
    budgets.release(step.head.budget, attempt.reserved_usd, attempt.reserved_tokens)
    step.emit(
        "persona.budget.reconciled",
        {
            "run_id": run.run_id,
            "attempt": attempt.attempt,
            "dispatch": attempt.dispatch,
            "lease_id": attempt.lease_id,
            "status": attempt.status,
            "reserved_usd": attempt.reserved_usd,
            "reserved_tokens": attempt.reserved_tokens,
            "actual_usd": attempt.actual_usd,
            "actual_tokens": attempt.actual_tokens,
        },
        run.run_id,
        run.trace,
    )
