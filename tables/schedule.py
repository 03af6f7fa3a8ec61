"""Cron schedules: next run, and which occurrences a tick makes due."""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import croniter

from streams.wire import PersonaBinding

from .timefmt import EPOCH, format_ms, to_datetime

#: With ``schedule_catchup: skip``, an occurrence noticed later than this is skipped.
SCHEDULE_GRACE_MS = 60_000


def _ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def next_occurrence(expression: str, after_ms: int) -> int | None:
    """First occurrence strictly after ``after_ms`` (None if the expression is unusable)."""
    try:
        return _ms(croniter(expression, to_datetime(after_ms)).get_next(datetime))
    except (ValueError, KeyError, OverflowError):
        return None


def latest_occurrence(expression: str, at_or_before_ms: int) -> int | None:
    """Last occurrence at or before ``at_or_before_ms``."""
    try:
        return _ms(croniter(expression, to_datetime(at_or_before_ms + 1)).get_prev(datetime))
    except (ValueError, KeyError, OverflowError):
        return None


def next_scheduled_run(binding: PersonaBinding, last_run_ms: int | None, now_ms: int) -> str | None:
    """The earliest occurrence after the last run (or now), over all schedules."""
    base = now_ms if last_run_ms is None else last_run_ms
    found = [t for t in (next_occurrence(e, base) for e in binding.schedules) if t is not None]
    return format_ms(min(found)) if found else None


def due(binding: PersonaBinding, cursor_ms: int, now_ms: int) -> list[tuple[str, int]]:
    """Occurrences to fire for a tick at ``now_ms``: per schedule, the latest one in
    ``(cursor_ms, now_ms]`` (missed ones coalesce), dropped under ``skip`` when late."""
    fire: list[tuple[str, int]] = []
    for expression in dict.fromkeys(binding.schedules):
        latest = latest_occurrence(expression, now_ms)
        if latest is None or latest <= cursor_ms:
            continue
        if binding.schedule_catchup == "skip" and now_ms - latest > SCHEDULE_GRACE_MS:
            continue
        fire.append((expression, latest))
    return sorted(fire, key=lambda pair: (pair[1], pair[0]))


def earliest_due(schedules: list[str], cursor_ms: int) -> int | None:
    """When the next tick would have something to do (for the ticker's cheap pre-check)."""
    found = [t for t in (next_occurrence(e, cursor_ms) for e in schedules) if t is not None]
    return min(found) if found else None
