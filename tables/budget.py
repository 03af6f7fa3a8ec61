"""Budget arithmetic: windows, enforcement, recording, and the status view (docs/behaviour.md, section 8).

Rather than folding every ``persona.budget.recorded`` event again, the
head's :class:`~tables.state.Budget` keeps the current UTC day and hour windows, rolled
forward as the persona's event clock (which never goes backwards) crosses a boundary.
Sums are accumulated in event order, so the floating-point results equal such a fold's.

Pure arithmetic over the head's budget; the gate that every commitment of money goes
through, and the events it writes, are :mod:`tables.money`.
"""

from __future__ import annotations

from streams.wire import BudgetPolicy, PersonaBudgetStatus

from .runstate import WindowShare
from .state import Budget
from .timefmt import DAY_MS, HOUR_MS, day_start, hour_start

#: Which window a sticky exhaustion lasts for, by reason.
STICKY_WINDOW = {"daily_usd": "day", "max_tokens": "day", "run_usd": "day", "hourly_usd": "hour"}


def window(budget: Budget, now_ms: int) -> tuple[float, int, float]:
    """(spent today, tokens today, spent this hour) at ``now_ms``."""
    day = budget.spent_day if budget.day_start == day_start(now_ms) else 0.0
    tokens = budget.tokens_day if budget.day_start == day_start(now_ms) else 0
    hour = budget.spent_hour if budget.hour_start == hour_start(now_ms) else 0.0
    return day, tokens, hour


def roll(budget: Budget, now_ms: int) -> None:
    """Move the windows to the ones containing ``now_ms``."""
    day, hour = day_start(now_ms), hour_start(now_ms)
    if budget.day_start != day:
        budget.day_start, budget.spent_day, budget.tokens_day = day, 0.0, 0
    if budget.hour_start != hour:
        budget.hour_start, budget.spent_hour = hour, 0.0


def enforce(policy: BudgetPolicy, budget: Budget, cost_usd: float, tokens: int, now_ms: int) -> str | None:
    """The first limit this cost would break (run, daily, hourly, tokens; strict ``>``), or
    None. What runs in flight have reserved counts like spend."""
    spent_day, tokens_day, spent_hour = window(budget, now_ms)
    if policy.run_usd is not None and cost_usd > policy.run_usd:
        return "run_usd"
    if policy.daily_usd is not None and spent_day + budget.reserved_usd + cost_usd > policy.daily_usd:
        return "daily_usd"
    if policy.hourly_usd is not None and spent_hour + budget.reserved_usd + cost_usd > policy.hourly_usd:
        return "hourly_usd"
    if policy.max_tokens is not None and tokens_day + budget.reserved_tokens + tokens > policy.max_tokens:
        return "max_tokens"
    return None


def permanent(policy: BudgetPolicy, reason: str, cost_usd: float, tokens: int) -> bool:
    """Whether the amount alone breaks the limit named by ``reason`` (no spend can ever let it pass)."""
    if reason == "max_tokens":
        return policy.max_tokens is not None and tokens > policy.max_tokens
    limit = {"run_usd": policy.run_usd, "daily_usd": policy.daily_usd, "hourly_usd": policy.hourly_usd}.get(reason)
    return limit is not None and cost_usd > limit


def window_end(reason: str, now_ms: int) -> int:
    """When the window that ``reason`` is about turns (the next UTC hour, else the next UTC day)."""
    return hour_start(now_ms) + HOUR_MS if reason == "hourly_usd" else day_start(now_ms) + DAY_MS


def record(
    budget: Budget,
    cost_usd: float,
    tokens: int,
    receipt_id: str,
    now_ms: int,
    last_run: bool = True,
    share: WindowShare | None = None,
) -> None:
    """Spend recorded at ``now_ms``. A negative amount (a dispatch's settlement below its
    usage) comes with the dispatch's ``share`` of the windows and takes back at most what it
    put into the current ones: usage recorded in an earlier window is not subtracted from
    this one, so no window ever goes negative. The totals take the whole amount."""
    roll(budget, now_ms)
    day_usd, day_tokens, hour_usd = cost_usd, tokens, cost_usd
    if share is not None:
        if share.day_start != budget.day_start:
            share.day_start, share.day_usd, share.day_tokens = budget.day_start, 0.0, 0
        if share.hour_start != budget.hour_start:
            share.hour_start, share.hour_usd = budget.hour_start, 0.0
        day_usd = max(cost_usd, -share.day_usd)
        day_tokens = max(tokens, -share.day_tokens)
        hour_usd = max(cost_usd, -share.hour_usd)
        share.day_usd += day_usd
        share.day_tokens += day_tokens
        share.hour_usd += hour_usd
    # max(): taking back what was added may leave -1e-17 of floating-point noise.
    budget.spent_day = max(0.0, budget.spent_day + day_usd)
    budget.tokens_day = max(0, budget.tokens_day + day_tokens)
    budget.spent_hour = max(0.0, budget.spent_hour + hour_usd)
    budget.spent_total_usd += cost_usd
    budget.spent_total_tokens += tokens
    if cost_usd < 0 or tokens < 0:
        budget.version += 1
    if last_run:
        budget.last_run_usd = cost_usd
    budget.last_receipt_id = receipt_id


def reserve(budget: Budget, usd: float, tokens: int) -> None:
    budget.reserved_usd += usd
    budget.reserved_tokens += tokens


def release(budget: Budget, usd: float, tokens: int) -> None:
    budget.reserved_usd = max(0.0, budget.reserved_usd - usd)
    budget.reserved_tokens = max(0, budget.reserved_tokens - tokens)
    if usd or tokens:
        budget.version += 1


def mark_exhausted(budget: Budget, reason: str, receipt_id: str, now_ms: int) -> None:
    roll(budget, now_ms)
    budget.last_receipt_id = receipt_id
    budget.exhausted_reason = reason
    budget.exhausted_at_ms = now_ms


def _sticky_reason(budget: Budget, now_ms: int) -> str | None:
    """The last exhaustion's reason while the window it happened in lasts."""
    if budget.exhausted_reason is None or budget.exhausted_at_ms is None:
        return None
    window_name = STICKY_WINDOW.get(budget.exhausted_reason, "day")
    start = day_start if window_name == "day" else hour_start
    return budget.exhausted_reason if start(budget.exhausted_at_ms) == start(now_ms) else None


def status(policy: BudgetPolicy, budget: Budget, now_ms: int) -> PersonaBudgetStatus:
    """The budget status at ``now_ms`` (``>=`` against each limit), plus the sticky flag."""
    spent_day, tokens, spent_hour = window(budget, now_ms)
    reason: str | None = None
    if policy.daily_usd is not None and spent_day >= policy.daily_usd and policy.daily_usd >= 0:
        reason = "daily_usd"
    elif policy.hourly_usd is not None and spent_hour >= policy.hourly_usd and policy.hourly_usd >= 0:
        reason = "hourly_usd"
    elif policy.max_tokens is not None and tokens >= policy.max_tokens and policy.max_tokens > 0:
        reason = "max_tokens"
    else:
        reason = _sticky_reason(budget, now_ms)
    return PersonaBudgetStatus(
        daily_usd=policy.daily_usd,
        hourly_usd=policy.hourly_usd,
        run_usd=policy.run_usd,
        max_tokens=policy.max_tokens,
        spent_today_usd=spent_day,
        spent_this_hour_usd=spent_hour,
        spent_last_run_usd=budget.last_run_usd,
        tokens_today=tokens,
        remaining_today_usd=None
        if policy.daily_usd is None
        else max(policy.daily_usd - spent_day - budget.reserved_usd, 0.0),
        remaining_hour_usd=None
        if policy.hourly_usd is None
        else max(policy.hourly_usd - spent_hour - budget.reserved_usd, 0.0),
        exhausted=reason is not None,
        reason=reason,
        last_receipt_id=budget.last_receipt_id,
    )
