"""Read models of external runs: a run's detail and cost ledger, its event stream, its
transcript, and a persona's runs, each paged with a bounded ``limit``.

Pure reads over the run tables (:mod:`tables.runstate`); the worker's web port serves
them. Paging follows one rule everywhere: a page holds at most ``limit`` items, a
``limit`` above the maximum is an error naming the maximum (:class:`LimitTooLarge`), and
the answer says where the next page starts and whether there is one.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import orjson

from streams.redaction import redact

from .runstate import RUN_EVENTS_KEPT, TRANSCRIPT_KEPT, RunRow, RunState
from .state import PersonaState

#: The most items one page may ask for.
MAX_EVENT_BATCH = 100
MAX_TRANSCRIPT_ITEMS = 100
MAX_RUN_PAGE = 100
#: Events shown with a run's detail (its latest).
DETAIL_EVENTS = 10


class LimitTooLarge(ValueError):
    """A page asked for more items than the maximum: ask again with ``limit <= maximum``."""

    def __init__(self, requested: int, maximum: int) -> None:
        super().__init__(f"limit {requested} is larger than the maximum {maximum}; ask for at most {maximum}")
        self.requested = requested
        self.maximum = maximum


def _check(limit: int, maximum: int) -> None:
    if limit > maximum:
        raise LimitTooLarge(limit, maximum)
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")


def _keys(state: RunState) -> frozenset[str]:
    head = state.state.head()
    binding = head.binding if head is not None else None
    return frozenset(binding.redact_metadata_keys) if binding is not None else frozenset()


def run_detail(state: RunState, run_id: str) -> dict[str, Any] | None:
    """The run: status, attempts and their cost ledger, usage, steps, children, and its
    latest events."""
    run = state.run(run_id)
    if run is None:
        return None
    # What the row keeps for the pipeline's own use (report ids, its first events) is not shown.
    detail = msgspec.to_builtins(msgspec.structs.replace(run, events=[], reports={}))
    del detail["events"], detail["reports"]
    detail["ledger"] = [
        {**msgspec.to_builtins(a), "actual_usd": a.actual_usd, "actual_tokens": a.actual_tokens} for a in run.ledger
    ]
    detail["usage_usd"] = run.usage_usd
    detail["usage_tokens"] = run.usage_tokens
    detail["reserved_usd"] = sum(a.reserved_usd for a in run.ledger if a.open)
    detail["terminal"] = run.terminal
    detail["last_seq"] = run.seq
    detail["transcript_items"] = run.transcript
    first = max(1, run.seq - DETAIL_EVENTS + 1)
    detail["last_events"] = [
        orjson.loads(raw) for seq in range(first, run.seq + 1) if (raw := state.event(run, seq)) is not None
    ]
    return cast(dict[str, Any], redact(detail, _keys(state)))


def run_events(state: RunState, run_id: str, cursor: int = 1, limit: int = 50) -> dict[str, Any] | None:
    """Events of the run's stream with ``seq >= cursor``, in order (seq is gap-free from 1).

    The last :data:`RUN_EVENTS_KEPT` events are kept here (the outbox has them all): a
    cursor below ``first_kept`` starts at ``first_kept``."""
    _check(limit, MAX_EVENT_BATCH)
    run = state.run(run_id)
    if run is None:
        return None
    first_kept = max(1, run.seq - RUN_EVENTS_KEPT + 1)
    start = max(cursor, first_kept)
    end = min(run.seq, start + limit - 1)
    events = [orjson.loads(raw) for seq in range(start, end + 1) if (raw := state.event(run, seq)) is not None]
    next_cursor = end + 1 if events else max(cursor, start)
    return cast(
        dict[str, Any],
        redact(
            {
                "run_id": run_id,
                "cursor": cursor,
                "limit": limit,
                "events": events,
                "next_cursor": next_cursor,
                "has_more": next_cursor <= run.seq,
                "last_seq": run.seq,
                "first_kept": first_kept,
            },
            _keys(state),
        ),
    )


def transcript(state: RunState, run_id: str, start: int = 0, limit: int = 50) -> dict[str, Any] | None:
    """Transcript entries ``start .. start+limit-1`` (0-based, gap-free). Entries older
    than the last :data:`TRANSCRIPT_KEPT` are dropped: ``dropped`` says how many, and a
    ``start`` among them begins at the oldest kept entry."""
    _check(limit, MAX_TRANSCRIPT_ITEMS)
    run = state.run(run_id)
    if run is None:
        return None
    total = run.transcript
    dropped = max(0, total - TRANSCRIPT_KEPT)
    begin = max(start, dropped)
    end = min(begin + limit, total)
    items = (
        []
        if begin >= total
        else [
            msgspec.to_builtins(entry)
            for index in range(begin, end)
            if (entry := state.entry(run_id, index)) is not None
        ]
    )
    return {
        "run_id": run_id,
        "start": start,
        "limit": limit,
        "total_items": total,
        "dropped": dropped,
        "items": items,
        "next_start": end if end < total else None,
        "has_more": end < total,
    }


def persona_runs(persona: PersonaState, cursor: int | None = None, limit: int = 20) -> dict[str, Any] | None:
    """The persona's runs, newest first: those numbered below ``cursor`` (default: all)."""
    _check(limit, MAX_RUN_PAGE)
    head = persona.head()
    if head is None:
        return None
    state = RunState(persona)
    top = head.runs if cursor is None else min(cursor, head.runs)
    items: list[dict[str, Any]] = []
    number = top
    while number > 0 and len(items) < limit:
        number -= 1
        run_id = state.indexed(number)
        run = state.run(run_id) if run_id is not None else None
        if run is not None:
            items.append(summary(run))
    return {
        "persona": head.name,
        "cursor": cursor,
        "limit": limit,
        "runs": items,
        "total": head.runs,
        "next_cursor": number if number > 0 else None,
        "has_more": number > 0,
    }


def summary(run: RunRow) -> dict[str, Any]:
    """One line of a run list."""
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "status": run.status,
        "work_key": run.work_key,
        "attempt": run.attempt,
        "dispatches": run.dispatches,
        "parent_run_id": run.parent_run_id,
        "created_at_ms": run.created_at_ms,
        "usage_usd": run.usage_usd,
        "usage_tokens": run.usage_tokens,
        "error": run.error,
    }
