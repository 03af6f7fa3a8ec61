"""Trigger normalization and schedule envelopes (docs/behaviour.md, section 3).

The subject key is the work key: it is what dedupe, queueing and leases are about.
Where the original runtime appended a random UUIDv7 (webhook and other providers without
``dedupe_key``/``event_id``) we append the request id instead, so the key is unique
per request, never deduplicated across requests, and the same on every replay.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.redaction import digested
from streams.wire import PersonaBinding, TriggerEnvelope

from .timefmt import format_ms

SCHEDULE_PROVIDER = "schedule"
SCHEDULE_KIND = "cron.tick"
MANUAL_SCHEDULE = "manual"


def _first(metadata: Mapping[str, str], *keys: str) -> str | None:
    for key in keys:
        if key in metadata:
            return metadata[key]
    return None


def subject_key(provider: str, kind: str, metadata: Mapping[str, str], request_id: str) -> str:
    """The work key by the provider rules; ``provider`` is already lowercase."""
    if provider == "github":
        repo = _first(metadata, "repository", "repository.full_name") or "unknown"
        number = _first(metadata, "pr", "pull_request.number", "number")
        if number is not None:
            return f"github:{repo}:pr:{number}"
        check = _first(metadata, "check_run.name", "check_name")
        if check is not None:
            return f"github:{repo}:check:{check}"
        return f"github:{repo}:{kind}"
    if provider == "linear":
        issue = _first(metadata, "issue_key", "issue.identifier", "issue_id", "id") or "unknown"
        return f"linear:issue:{issue}"
    if provider == "slack":
        channel = _first(metadata, "channel", "channel_id") or "unknown"
        ts = _first(metadata, "ts", "event_ts") or "unknown"
        return f"slack:{channel}:{ts}"
    value = _first(metadata, "dedupe_key", "event_id")
    if provider == "webhook":
        return f"webhook:{value}" if value is not None else f"webhook:{kind}:{request_id}"
    return f"{provider}:{kind}:{value if value is not None else request_id}"


def normalize_trigger_envelope(
    provider: str,
    kind: str,
    metadata: Mapping[str, str],
    now_ms: int,
    request_id: str,
    raw: object = None,
    redact_keys: frozenset[str] = frozenset(),
) -> TriggerEnvelope:
    """The normalized envelope; ``raw`` defaults to ``{"metadata": ...}``. The work key and
    ``source_event_id`` are derived from the metadata with the values of ``redact_keys``
    replaced by their digest, so neither shows a redacted value."""
    provider = "".join(c.lower() if c.isascii() else c for c in provider)  # ASCII letters only
    items = dict(metadata)
    keyed = digested(items, redact_keys)
    return TriggerEnvelope(
        provider=provider,
        kind=kind,
        subject_key=subject_key(provider, kind, keyed, request_id),
        source_event_id=_first(keyed, "event_id", "id"),
        received_at_ms=now_ms,
        metadata=items,
        raw={"metadata": items} if raw is None else raw,
    )


def schedule_name(binding: PersonaBinding, requested: str | None = None) -> str:
    """The schedule a tick is for: the requested one, else the first, else ``manual``."""
    if requested:
        return requested
    return binding.schedules[0] if binding.schedules else MANUAL_SCHEDULE


def schedule_envelope(binding: PersonaBinding, schedule: str, now_ms: int) -> TriggerEnvelope:
    """A schedule's envelope: one work key per persona, schedule and instant."""
    fired_at = format_ms(now_ms)
    return TriggerEnvelope(
        provider=SCHEDULE_PROVIDER,
        kind=SCHEDULE_KIND,
        subject_key=f"schedule:{binding.name}:{schedule}:{fired_at}",
        source_event_id=None,
        received_at_ms=now_ms,
        metadata={"persona": binding.name, "schedule": schedule, "fired_at": fired_at},
        raw={},
    )
