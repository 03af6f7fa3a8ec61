"""The status projection, computed at the event time of the last transition.

Cheap by construction: the head carries the counters, the budget windows and the next
scheduled run; the queue is read only as far as the listed items; the value receipts are
stored as JSON and spliced in without being decoded.
"""

from __future__ import annotations

import msgspec

from streams.records import LifecycleState
from streams.redaction import redact_metadata
from streams.wire import (
    PersonaAssignmentStatus,
    PersonaHandoffInboxItem,
    PersonaQueuedWork,
    PersonaStatus,
    encode,
)

from . import budget, summary
from .queue import Queue
from .schedule import earliest_due as next_after
from .state import VALUE_RING, PersonaHead, PersonaState, QueueItem
from .timefmt import format_ms

PAUSED_EVENT_POLICY = "queue_then_drain_on_resume"
#: ``queued_work`` (and so ``handoff_inbox``) lists at most this many items, in drain
#: order; ``queued_events`` is always the exact count. Keeps a status record small.
STATUS_LIST_LIMIT = 20


def lifecycle_state(head: PersonaHead, lease_active: bool) -> LifecycleState:
    """paused/disabled/draining win; otherwise an active lease means running."""
    if head.mode in ("paused", "disabled", "draining"):
        return head.mode
    return "running" if lease_active else head.mode


def queued_work(item: QueueItem, redact_keys: frozenset[str] = frozenset()) -> PersonaQueuedWork:
    envelope = item.envelope
    return PersonaQueuedWork(
        work_key=item.work_key,
        provider=envelope.provider,
        kind=envelope.kind,
        queued_at=format_ms(item.queued_at_ms),
        reason=item.reason or "queued",
        source_event_id=envelope.source_event_id,
        metadata=redact_metadata(envelope.metadata, redact_keys),
    )


def handoff_item(work: PersonaQueuedWork) -> PersonaHandoffInboxItem | None:
    if work.provider != "handoff" and "handoff_id" not in work.metadata:
        return None
    meta = work.metadata
    return PersonaHandoffInboxItem(
        work_key=work.work_key,
        handoff_id=meta.get("handoff_id"),
        handoff_kind=meta.get("handoff_kind", meta.get("kind")),
        source_persona=meta.get("source_persona"),
        task=meta.get("task"),
        queued_at=work.queued_at,
        reason=work.reason,
    )


def project(state: PersonaState, head: PersonaHead, now_ms: int | None = None) -> PersonaStatus:
    """Status of a bound persona at ``now_ms`` (default: its clock)."""
    assert head.binding is not None, "an unbound persona has no status"
    binding = head.binding
    now = head.clock_ms if now_ms is None else now_ms
    record = state.lease() if "lease" in head.timers else None
    lease = record.lease if record is not None and record.lease.expires_at_ms > now else None
    keys = frozenset(head.binding.redact_metadata_keys) if head.binding is not None else frozenset()
    work = (
        [queued_work(item, keys) for item in Queue(state, head.queue).items(STATUS_LIST_LIMIT)]
        if head.queue.count
        else []
    )
    first = max(0, head.values - VALUE_RING)
    values = [
        msgspec.Raw(raw) for raw in (state.value(i % VALUE_RING) for i in range(first, head.values)) if raw is not None
    ]
    next_run = head.next_run_ms
    budget_status = budget.status(binding.budget, head.budget, now)
    if now_ms is not None and now_ms != head.clock_ms and head.last_run_ms is None:
        next_run = next_after(binding.schedules, now_ms)
    return PersonaStatus(
        name=binding.name,
        template_ref=binding.template_ref,
        state=lifecycle_state(head, lease is not None),
        entry_workflow=binding.entry_workflow,
        role=binding.name,
        current_assignment=None
        if lease is None
        else PersonaAssignmentStatus(
            work_key=lease.work_key,
            lease_id=lease.id,
            holder=lease.holder,
            acquired_at=format_ms(lease.acquired_at_ms),
            expires_at=format_ms(lease.expires_at_ms),
        ),
        last_run=None if head.last_run_ms is None else format_ms(head.last_run_ms),
        next_scheduled_run=None if next_run is None else format_ms(next_run),
        active_lease=lease,
        budget=budget_status,
        last_error=head.last_error,
        queued_events=head.queue.count,
        queued_work=work,
        handoff_inbox=[item for item in map(handoff_item, work) if item is not None],
        value_receipts=values,
        disabled_events=head.disabled_events,
        paused_event_policy=PAUSED_EVENT_POLICY,
        diagnostics=summary.diagnostics(head, now, budget_status),
    )


def status_json(state: PersonaState, head: PersonaHead, now_ms: int | None = None) -> bytes:
    return encode(project(state, head, now_ms))
