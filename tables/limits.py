"""Run limits (``run_limits``): a warning once per limit at ``warn_ratio``, then cancel and
``failed`` with ``limit_exceeded:<limit>``. Steps, tokens and cost are checked on every
report; duration on ticks too.

A limit of 0 allows nothing: there is no warning at a value of 0, and the first positive
value exceeds it.
"""

from __future__ import annotations

from . import outcomes, runlog
from .machines import EXECUTING
from .runstate import RunRow
from .step import Step


def check(step: Step, run: RunRow) -> None:
    """A warning once per limit at ``warn_ratio``; past a limit (strict ``>``), cancel and
    fail the run. Only a run in flight is checked (one waiting for a retry has no executor)."""
    if run.status not in EXECUTING:
        return
    limits = step.binding.run_limits
    for name, value, maximum in (
        ("max_steps", run.steps, limits.max_steps),
        ("max_tokens", run.usage_tokens, limits.max_tokens),
        ("max_cost_usd", run.usage_usd, limits.max_cost_usd),
        ("max_duration_ms", step.now - run.created_at_ms, limits.max_duration_ms),
    ):
        if maximum is None or run.terminal:
            continue
        if value > maximum:
            _exceeded(step, run, name, value, maximum)
        elif value > 0 and value >= limits.warn_ratio * maximum and name not in run.warned:
            run.warned.append(name)
            runlog.emit(
                step,
                run,
                "run.limit_warning",
                {"limit": name, "value": value, "max": maximum, "warn_ratio": limits.warn_ratio},
            )


def _exceeded(step: Step, run: RunRow, name: str, value: float, maximum: float) -> None:
    error = f"limit_exceeded:{name}"
    runlog.emit(step, run, "run.limit_exceeded", {"limit": name, "value": value, "max": maximum})
    outcomes.abort(step, run, error)
