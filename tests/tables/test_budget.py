"""Budget enforcement, recording and status (docs/behaviour.md, section 8)."""

from __future__ import annotations

from msgspec.structs import replace

from streams.wire import BudgetPolicy
from tables import budget
from tables.state import Budget
from tables.timefmt import parse_rfc3339_ms

NOON = parse_rfc3339_ms("2026-04-24T12:30:00Z")
POLICY = BudgetPolicy(daily_usd=0.02, run_usd=0.02, max_tokens=100)


def spend(*costs: tuple[float, int], at: int = NOON) -> Budget:
    record = Budget()
    for i, (usd, tokens) in enumerate(costs):
        budget.record(record, usd, tokens, f"b{i}", at)
    return record


def recorded(usd: float, tokens: int, receipt_id: str, at: int) -> Budget:
    record = Budget()
    budget.record(record, usd, tokens, receipt_id, at)
    return record


def exhausted(reason: str, receipt_id: str, at: int) -> Budget:
    record = Budget()
    budget.mark_exhausted(record, reason, receipt_id, at)
    return record


def test_limits_are_checked_run_then_daily_then_hourly_then_tokens():
    policy = BudgetPolicy(daily_usd=0.01, hourly_usd=0.01, run_usd=0.01, max_tokens=1)
    assert budget.enforce(policy, Budget(), 0.02, 5, NOON) == "run_usd"
    assert budget.enforce(replace(policy, run_usd=None), Budget(), 0.02, 5, NOON) == "daily_usd"
    assert budget.enforce(replace(policy, run_usd=None, daily_usd=None), Budget(), 0.02, 5, NOON) == "hourly_usd"
    assert budget.enforce(BudgetPolicy(max_tokens=1), Budget(), 0.02, 5, NOON) == "max_tokens"
    assert budget.enforce(BudgetPolicy(), Budget(), 99.0, 10**9, NOON) is None


def test_comparisons_are_strict_so_spending_exactly_up_to_a_limit_is_allowed():
    record = spend((0.01, 10))
    assert budget.enforce(POLICY, record, 0.01, 90, NOON) is None
    assert budget.enforce(POLICY, spend((0.01, 10), (0.01, 10)), 0.001, 0, NOON) == "daily_usd"
    assert budget.enforce(POLICY, spend((0.02, 100)), 0.0, 0, NOON) is None  # zero-cost work is never blocked


def test_worked_example_status_after_one_and_two_runs():
    one = budget.status(POLICY, spend((0.01, 10)), NOON)
    assert (one.spent_today_usd, one.remaining_today_usd, one.exhausted, one.tokens_today) == (0.01, 0.01, False, 10)
    two = budget.status(POLICY, spend((0.01, 10), (0.01, 10)), NOON)
    assert (two.spent_today_usd, two.reason, two.exhausted, two.remaining_today_usd) == (0.02, "daily_usd", True, 0.0)
    assert two.last_receipt_id == "b1" and two.spent_last_run_usd == 0.01


def test_utc_windows_roll_at_the_hour_and_day():
    late = parse_rfc3339_ms("2026-04-24T23:59:00Z")
    record = recorded(0.015, 7, "r", late)
    next_day = budget.status(POLICY, record, late + 120_000)
    assert (next_day.spent_today_usd, next_day.tokens_today, next_day.spent_this_hour_usd) == (0.0, 0, 0.0)
    assert next_day.spent_last_run_usd == 0.015  # ignores windows
    same_day_next_hour = budget.status(BudgetPolicy(hourly_usd=0.01), recorded(0.01, 0, "r", NOON), NOON + 3_600_000)
    assert same_day_next_hour.spent_today_usd == 0.01 and same_day_next_hour.spent_this_hour_usd == 0.0


def test_exhaustion_is_sticky_in_status_until_its_window_ends():
    record = exhausted("run_usd", "x1", NOON)
    assert budget.status(POLICY, record, NOON).reason == "run_usd"
    assert budget.status(POLICY, record, NOON + 3_600_000).exhausted  # same UTC day
    assert not budget.status(POLICY, record, NOON + 86_400_000).exhausted  # next day: cleared
    hourly = exhausted("hourly_usd", "x2", NOON)
    assert budget.status(BudgetPolicy(hourly_usd=1.0), hourly, NOON + 60_000).reason == "hourly_usd"
    assert budget.status(BudgetPolicy(hourly_usd=1.0), hourly, NOON + 3_600_000).reason is None


def test_computed_reason_uses_greater_or_equal_and_tokens_need_a_positive_limit():
    assert budget.status(BudgetPolicy(max_tokens=10), spend((0.0, 10)), NOON).reason == "max_tokens"
    assert budget.status(BudgetPolicy(max_tokens=0), spend((0.0, 0)), NOON).reason is None
    assert budget.status(BudgetPolicy(daily_usd=0.0), Budget(), NOON).reason == "daily_usd"
