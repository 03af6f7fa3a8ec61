"""Formatting and summaries of unsettled work (the original pipeline lifecycle's rules).

Pure functions: ``trigger_spec_summary`` and ``payload_summary`` name a trigger and any
JSON value in one short string; :class:`UnsettledSnapshot` holds the buckets of work
that may outlive what is running now, with their counts and one-line summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: Characters of a string kept by :func:`payload_summary`.
SUMMARY_CHARS = 80
#: Keys of an object named by :func:`payload_summary`.
SUMMARY_KEYS = 6


def trigger_spec_summary(provider: str, kind: str, trigger_id: str | None = None) -> str:
    """``"{id}: {provider}.{kind}"``, ``"{id}"``, ``"{provider}.{kind}"``, ``"{provider}"``,
    ``"{kind}"`` or ``"trigger event"``, by which parts are there (an empty id is none)."""
    if trigger_id:
        return f"{trigger_id}: {provider}.{kind}" if provider and kind else trigger_id
    if provider and kind:
        return f"{provider}.{kind}"
    return provider or kind or "trigger event"


def payload_summary(value: Any) -> str:
    """A JSON value in a few words: ``nil``, ``true``, ``42``, the first 80 characters of a
    string (``...`` when longer), ``list(len=N)``, ``object(keys=a,b,...)`` (the first six
    keys in sorted order)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value if len(value) <= SUMMARY_CHARS else value[:SUMMARY_CHARS] + "..."
    if isinstance(value, (list, tuple)):
        return f"list(len={len(value)})"
    if isinstance(value, dict):
        keys = sorted(value)
        shown = ",".join(keys[:SUMMARY_KEYS])
        return f"object(keys={shown},...)" if len(keys) > SUMMARY_KEYS else f"object(keys={shown})"
    return str(value)


BUCKETS = ("suspended_subagents", "queued_triggers", "partial_handoffs", "in_flight_llm_calls", "pool_pending_tasks")
COUNT_NAMES = ("suspended", "queued", "partial", "in_flight", "pool_pending")


@dataclass
class UnsettledSnapshot:
    """Work that may outlive what runs now, in the original five buckets. Here: paused runs
    are ``suspended_subagents``, queued triggers and runs waiting for a retry are
    ``queued_triggers``, handoffs sent and not settled are ``partial_handoffs``, runs in
    flight are ``in_flight_llm_calls``; ``pool_pending_tasks`` stays empty (personaflow
    has no pool)."""

    suspended_subagents: list[dict[str, Any]] = field(default_factory=list)
    queued_triggers: list[dict[str, Any]] = field(default_factory=list)
    partial_handoffs: list[dict[str, Any]] = field(default_factory=list)
    in_flight_llm_calls: list[dict[str, Any]] = field(default_factory=list)
    pool_pending_tasks: list[dict[str, Any]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in BUCKETS)

    def extend(self, other: UnsettledSnapshot) -> None:
        for name in BUCKETS:
            getattr(self, name).extend(getattr(other, name))

    def sort(self) -> None:
        """Each bucket by ``queued_at_ms`` (missing: last), then ``id``."""
        for name in BUCKETS:
            getattr(self, name).sort(key=lambda item: (item.get("queued_at_ms", 2**63 - 1), item.get("id", "")))

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        return {name: list(getattr(self, name)) for name in BUCKETS}

    def counts_json(self) -> dict[str, int]:
        return {count: len(getattr(self, name)) for count, name in zip(COUNT_NAMES, BUCKETS, strict=True)}

    def summary(self) -> str:
        if self.is_empty():
            return "no unsettled work"
        c = self.counts_json()
        return (
            f"unsettled work: {c['suspended']} suspended subagents, {c['queued']} queued triggers,"
            f" {c['partial']} partial handoffs, {c['in_flight']} in-flight llm calls,"
            f" {c['pool_pending']} pool pending tasks"
        )

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> UnsettledSnapshot:
        return cls(**{name: list(value.get(name) or []) for name in BUCKETS})
