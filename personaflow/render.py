"""One readable line per record, for ``personaflow tail`` and the demo."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tables.lifecycle import payload_summary

from .client import Seen


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def _fields(value: dict[str, Any], names: list[str]) -> str:
    parts = []
    for name in names:
        item = value.get(name)
        if item not in (None, "", [], {}):
            parts.append(f"{name}={item if not isinstance(item, (dict, list)) else json.dumps(item)}")
    return " ".join(parts)


def receipt(value: dict[str, Any]) -> str:
    lease = (value.get("lease") or {}).get("id")
    extra = _fields(value, ["work_key", "run_id", "attempt", "error", "budget_receipt_id"])
    if value.get("not_before_ms"):
        extra += f" retry_at={_time(value['not_before_ms'])}"
    # `queued: true` matters where the status does not say it already (`lease_busy`).
    queued = " (queued)" if value.get("queued") and value.get("status") != "queued" else ""
    return (
        f"{_time(value.get('at_ms'))} receipt {value.get('persona')} {value.get('status')}{queued}"
        f" request={value.get('request_id')} {extra}{' lease=' + lease if lease else ''}"
    ).rstrip()


def outbox(value: dict[str, Any]) -> str:
    """``{time} outbox {stream}#{seq} {kind} {payload_summary} {key fields}``."""
    payload = value.get("payload") or {}
    detail = _fields(
        payload, ["work_key", "reason", "cost_usd", "paid_cost_usd", "avoided_cost_usd", "decision", "error"]
    )
    return (
        f"{_time(value.get('occurred_at_ms'))} outbox {value.get('stream')}#{value.get('seq')}"
        f" {value.get('kind')} {payload_summary(payload)} {detail}"
    ).rstrip()


def audit_line(row: dict[str, Any]) -> str:
    """One stored audit event (``personaflow audit query``)."""
    return outbox(row).replace(" outbox ", " ", 1)


def unsettled(value: dict[str, Any]) -> str:
    """``personaflow unsettled``: the summary line, then one line per item."""
    lines = [value.get("summary", "")]
    for bucket in (
        "queued_triggers",
        "in_flight_llm_calls",
        "suspended_subagents",
        "partial_handoffs",
        "pool_pending_tasks",
    ):
        for item in value.get(bucket) or []:
            what = item.get("spec_summary") or item.get("payload_summary") or ""
            extra = _fields(item, ["status", "attempt", "reason", "to", "not_before_ms"])
            lines.append(
                f"  {bucket:<20} {item.get('id')} age={item.get('age_ms', 0) / 1000:.1f}s {what} {extra}".rstrip()
            )
    return "\n".join(lines)


def dead_letter(value: dict[str, Any]) -> str:
    return (
        f"{_time(value.get('at_ms'))} dlq {value.get('source_topic')}[{value.get('partition')}]@{value.get('offset')}"
        f" key={value.get('key')!r}: {value.get('error')}"
    )


def status(value: dict[str, Any] | None, key: str | None = None) -> str:
    if value is None:
        return f"status {key}: unbound"
    budget = value.get("budget") or {}
    lease = (value.get("active_lease") or {}).get("work_key")
    return (
        f"status {value.get('name')}: state={value.get('state')} queued={value.get('queued_events')}"
        f" spent_today_usd={budget.get('spent_today_usd')} exhausted={budget.get('exhausted')}"
        f" last_run={value.get('last_run')} next_run={value.get('next_scheduled_run')}"
        + (f" lease={lease}" if lease else "")
        + (f" last_error={value.get('last_error')!r}" if value.get("last_error") else "")
    )


def inbox(value: dict[str, Any]) -> str:
    kind = value.get("type")
    body = value.get("request") or value.get("command") or {}
    what = body.get("action") or f"{body.get('provider', '')}/{body.get('kind', '')}"
    return f"{_time(value.get('at_ms'))} inbox {kind} {what} persona={body.get('persona') or value.get('persona')}"


def audit_notice(value: dict[str, Any]) -> str:
    """A line of ``persona.audit``: a checkpoint copy, or a broken chain."""
    if value.get("kind") == "audit.checkpoint":
        return (
            f"{_time(value.get('at_ms'))} audit.checkpoint {value.get('number')} of {len(value.get('heads') or {})}"
            f" stream head(s), key {value.get('key_id')} (group {value.get('group')})"
        )
    return (
        f"{_time(value.get('at_ms'))} {value.get('kind')} {value.get('stream')} seq {value.get('seq')}:"
        f" {value.get('detail')} (group {value.get('group')})"
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "receipts": receipt,
    "outbox": outbox,
    "dlq": dead_letter,
    "persona_inbox": inbox,
    "audit": audit_notice,
}


def line(role: str, record: Seen) -> str:
    if role == "status":
        return status(record.value, record.key)
    if record.value is None:
        return f"{role} key={record.key!r}: (not JSON)"
    try:
        return RENDERERS[role](record.value)
    except (TypeError, AttributeError, ValueError, KeyError):  # JSON, but not the record it should be
        return f"{role} key={record.key!r}: (not a {role} record) {json.dumps(record.value)[:300]}"


def _usd(value: Any) -> str:
    return f"${value:.4f}" if isinstance(value, (int, float)) else "-"


def run_summary(value: dict[str, Any]) -> str:
    """One line of ``personaflow runs``."""
    return (
        f"{_time(value.get('created_at_ms'))} {value.get('run_id')} {value.get('kind')} {value.get('status')}"
        f" attempt={value.get('attempt')} work_key={value.get('work_key')}"
        f" spent={_usd(value.get('usage_usd'))}/{value.get('usage_tokens')} tokens"
        + (f" error={value.get('error')!r}" if value.get("error") else "")
    )


def runs_summary(value: dict[str, Any]) -> str:
    """``personaflow runs PERSONA --summary``: counts, spend, the queue, diagnostics."""
    runs = value.get("runs") or {}
    budget = value.get("budget") or {}
    age = value.get("oldest_queued_age_ms")
    lines = [
        f"runs of {value.get('persona')} ({value.get('execution') or '-'}"
        + ("" if value.get("bound") else ", unbound")
        + f"): {runs.get('total', 0)} in all, {runs.get('open', 0)} open",
        f"  active={runs.get('active', 0)} (dispatched={runs.get('dispatched', 0)} running={runs.get('running', 0)})"
        f" waiting={runs.get('waiting', 0)} paused={runs.get('paused', 0)}"
        f" (at a breakpoint {runs.get('paused_at_breakpoint', 0)}) ready={runs.get('ready', 0)}"
        f" retry_wait={runs.get('retry_wait', 0)}",
        f"  completed={runs.get('completed', 0)} failed={runs.get('failed', 0)} cancelled={runs.get('cancelled', 0)}"
        f" expired={runs.get('expired', 0)}",
        f"  today: spent={_usd(value.get('spent_today_usd'))}"
        + (f" of {_usd(budget['daily_usd'])}" if budget.get("daily_usd") is not None else "")
        + f" tokens={value.get('tokens_today')}"
        + (f" of {budget['max_tokens']}" if budget.get("max_tokens") is not None else "")
        + f" reserved={_usd(value.get('reserved_usd'))}/{value.get('reserved_tokens')} tokens"
        + (f" exhausted ({budget.get('reason')})" if budget.get("exhausted") else ""),
        f"  retries={value.get('retries')} lease_expiries={value.get('lease_expiries')}"
        f" slo_preemptions={value.get('preemptions')}",
        f"  queued: {value.get('queued_triggers')} trigger(s), {value.get('queued_runs')} run(s) waiting for the lease"
        + (f"; oldest waited {age / 1000:.1f} s" if isinstance(age, (int, float)) else ""),
    ]
    diagnostics = value.get("diagnostics") or []
    lines.append("  diagnostics:" if diagnostics else "  diagnostics: none")
    for item in diagnostics:
        lines.append(f"    {item.get('severity')} {item.get('code')}: {item.get('message')}")
    return "\n".join(lines)


def run_detail(value: dict[str, Any]) -> str:
    """``personaflow run``: the run, its cost ledger and its latest events."""
    lines = [
        f"run {value.get('run_id')} ({value.get('kind')}) of {value.get('persona')}: {value.get('status')}"
        + (f" error={value.get('error')!r}" if value.get("error") else ""),
        f"  work_key={value.get('work_key')} entry={value.get('entry_workflow')}"
        f" attempt={value.get('attempt')} dispatches={value.get('dispatches')} steps={value.get('steps')}"
        + (f" current_step={value.get('current_step_id')}" if value.get("current_step_id") else ""),
        f"  spent={_usd(value.get('usage_usd'))} tokens={value.get('usage_tokens')}"
        f" reserved={_usd(value.get('reserved_usd'))} lease={value.get('lease_id')}",
    ]
    if value.get("parent_run_id"):
        lines.append(f"  parent={value['parent_run_id']}")
    if value.get("children"):
        lines.append(f"  children={', '.join(value['children'])}")
    if value.get("compensation_run_id"):
        lines.append(f"  compensation={value['compensation_run_id']}")
    lines.append("  ledger:")
    for row in value.get("ledger") or []:
        lines.append(
            f"    dispatch {row['dispatch']} attempt {row['attempt']} {row['status']:<15}"
            f" reserved={_usd(row['reserved_usd'])} actual={_usd(row['actual_usd'])}"
            f"/{row['actual_tokens']} tokens" + (f" error={row['error']!r}" if row.get("error") else "")
        )
    lines.append(f"  last events (of {value.get('last_seq')}):")
    for event in value.get("last_events") or []:
        lines.append("    " + outbox(event))
    return "\n".join(lines)


def run_control_answer(value: dict[str, Any]) -> str:
    return (
        f"{_time(value.get('at_ms'))} run control {value.get('request_id')} on {value.get('run_id')}:"
        f" {value.get('status')}"
        + (f" event={value['event_id']}" if value.get("event_id") else "")
        + (f" error={value['error']!r}" if value.get("error") else "")
    )
