"""Budgets (seed 000.10): enforcement, recording, and the status view.

The seed recomputes spend by folding every ``persona.budget.recorded`` event; here the
budget record keeps the current UTC day and hour windows, rolled forward as the persona's
event clock (which never goes backwards) crosses a boundary. Sums are accumulated in
event order, so the floating-point results equal the seed's.
"""

from __future__ import annotations

from streams.records import BudgetPolicy, PersonaBudgetStatus

from .state import BudgetRecord
from .timefmt import day_start, hour_start

#: Which window a sticky exhaustion lasts for, by reason.
STICKY_WINDOW = {"daily_usd": "day", "max_tokens": "day", "run_usd": "day", "hourly_usd": "hour"}


def rolled(record: BudgetRecord, now_ms: int) -> BudgetRecord:
    """The record with its windows moved to the ones containing ``now_ms``."""
    day, hour = day_start(now_ms), hour_start(now_ms)
    changes: dict[str, object] = {}
    if record.day_start != day:
        changes.update(day_start=day, spent_day=0.0, tokens_day=0)
    if record.hour_start != hour:
        changes.update(hour_start=hour, spent_hour=0.0)
    return record.model_copy(update=changes) if changes else record


def enforce(policy: BudgetPolicy, record: BudgetRecord, cost_usd: float, tokens: int, now_ms: int) -> str | None:
    """The first limit this cost would break (run, daily, hourly, tokens; strict ``>``), or None."""
    current = rolled(record, now_ms)
    if policy.run_usd is not None and cost_usd > policy.run_usd:
        return "run_usd"
    if policy.daily_usd is not None and current.spent_day + cost_usd > policy.daily_usd:
        return "daily_usd"
    if policy.hourly_usd is not None and current.spent_hour + cost_usd > policy.hourly_usd:
        return "hourly_usd"
    if policy.max_tokens is not None and current.tokens_day + tokens > policy.max_tokens:
        return "max_tokens"
    return None


def recorded(record: BudgetRecord, cost_usd: float, tokens: int, receipt_id: str, now_ms: int) -> BudgetRecord:
    current = rolled(record, now_ms)
    return current.model_copy(update={
        "spent_day": current.spent_day + cost_usd,
        "tokens_day": current.tokens_day + tokens,
        "spent_hour": current.spent_hour + cost_usd,
        "last_run_usd": cost_usd,
        "last_receipt_id": receipt_id,
    })


def exhausted(record: BudgetRecord, reason: str, receipt_id: str, now_ms: int) -> BudgetRecord:
    return rolled(record, now_ms).model_copy(update={
        "last_receipt_id": receipt_id, "exhausted_reason": reason, "exhausted_at_ms": now_ms,
    })


def _sticky_reason(record: BudgetRecord, now_ms: int) -> str | None:
    """The last exhaustion's reason while the window it happened in lasts."""
    if record.exhausted_reason is None or record.exhausted_at_ms is None:
        return None
    window = STICKY_WINDOW.get(record.exhausted_reason, "day")
    start = day_start if window == "day" else hour_start
    return record.exhausted_reason if start(record.exhausted_at_ms) == start(now_ms) else None


def status(policy: BudgetPolicy, record: BudgetRecord, now_ms: int) -> PersonaBudgetStatus:
    """Seed ``budget_status`` at ``now_ms`` (``>=`` against each limit), plus the sticky flag."""
    current = rolled(record, now_ms)
    spent_day, spent_hour, tokens = current.spent_day, current.spent_hour, current.tokens_day
    reason: str | None = None
    if policy.daily_usd is not None and spent_day >= policy.daily_usd and policy.daily_usd >= 0:
        reason = "daily_usd"
    elif policy.hourly_usd is not None and spent_hour >= policy.hourly_usd and policy.hourly_usd >= 0:
        reason = "hourly_usd"
    elif policy.max_tokens is not None and tokens >= policy.max_tokens and policy.max_tokens > 0:
        reason = "max_tokens"
    else:
        reason = _sticky_reason(record, now_ms)
    return PersonaBudgetStatus(
        daily_usd=policy.daily_usd,
        hourly_usd=policy.hourly_usd,
        run_usd=policy.run_usd,
        max_tokens=policy.max_tokens,
        spent_today_usd=spent_day,
        spent_this_hour_usd=spent_hour,
        spent_last_run_usd=record.last_run_usd,
        tokens_today=tokens,
        remaining_today_usd=None if policy.daily_usd is None else max(policy.daily_usd - spent_day, 0.0),
        remaining_hour_usd=None if policy.hourly_usd is None else max(policy.hourly_usd - spent_hour, 0.0),
        exhausted=reason is not None,
        reason=reason,
        last_receipt_id=record.last_receipt_id,
    )
