"""Wall-clock timers. They decide nothing about personas: they put tick records, stamped
with the time they were taken, into the persona inbox, and the transition decides what
is due at that time."""

from __future__ import annotations

from engine.task import Punctuator, TaskBatch
from streams.inbox import LeaseTick, ScheduleTick
from streams.outputs import Output
from streams.settings import Settings
from tables.schedule import earliest_due
from tables.state import LEASES, PERSONAS, LeaseRecord, PersonaHead, load


def punctuator(settings: Settings) -> Punctuator:
    ticked_leases: dict[str, str] = {}
    ticked_cursors: dict[str, int] = {}

    def punctuate(batch: TaskBatch, now: int) -> None:
        for persona, stored in batch.store.items(LEASES):
            record = load(LeaseRecord, stored)
            if record is None:
                continue
            lease = record.lease
            if lease.expires_at_ms <= now and ticked_leases.get(persona) != lease.id:
                batch.emit(Output("persona_inbox", persona, LeaseTick(at_ms=now, persona=persona)))
                ticked_leases[persona] = lease.id
        for persona, raw in batch.store.items(PERSONAS):
            head = load(PersonaHead, raw)
            if head is None or not head.bound or head.binding is None or not head.binding.schedules:
                continue
            cursor = head.schedule_cursor_ms
            if cursor is None or ticked_cursors.get(persona) == cursor:
                continue
            due_at = earliest_due(head.binding.schedules, cursor)
            if due_at is not None and due_at <= now:
                batch.emit(Output("persona_inbox", persona, ScheduleTick(at_ms=now, persona=persona)))
                ticked_cursors[persona] = cursor

    return Punctuator("timers", settings.timer_interval_s, punctuate)
