"""Wall-clock timers. They decide nothing about personas: they put tick records,
stamped with the time they were taken, into the persona inbox (lease and schedule
ticks), and the transitions decide what is due. The stall check keeps every agent's
input flowing (see agents.continuity)."""

from __future__ import annotations

import logging
import time

from streams.app import Pipeline
from streams.inbox import LeaseTick, ScheduleTick
from streams.outputs import Output
from tables.schedule import earliest_due
from tables.state import LEASES, PERSONAS, LeaseRecord, PersonaHead, load
from tables.versioned import parse

from .continuity import Continuity, Progress, Watch, activity, stall
from .persona import PersonaStore
from .runtime import publish

log = logging.getLogger(__name__)

#: How long a partition may wait without progress behind a busy worker before it is read again.
STALL_PATIENCE_S = 60.0


def wall_ms() -> int:
    return int(time.time() * 1000)


def register(pipeline: Pipeline, store: PersonaStore, inputs: list[Continuity]) -> None:
    app = pipeline.app
    settings = pipeline.settings
    ticked_leases: dict[str, str] = {}
    ticked_cursors: dict[str, int] = {}
    behind: dict[tuple[str, int], Watch] = {}
    by_topic = {watched.topic: watched for watched in inputs}
    patience = max(2, round(STALL_PATIENCE_S / settings.stall_check_s))

    @app.timer(interval=settings.stall_check_s, name="stall-check")
    async def stall_check() -> None:
        """Re-read an input partition that stays behind its end (see agents.continuity.stall).

        A record the consumer skipped is noticed when a later one arrives; when it was
        the last one nothing arrives, so the consumer is sent back to the first offset
        not yet applied. Already applied records it delivers again change nothing.
        """
        batches, busy = activity(inputs)
        for tp in app.assignor.assigned_actives():
            watched = by_topic.get(tp.topic)
            if watched is None:
                continue
            slot = (tp.topic, tp.partition)
            end = app.consumer.highwater(tp)
            now = Progress(watched.stored(tp.partition), batches, busy)
            remembered, reread_from = stall(end, now, behind.get(slot), patience)
            if remembered is None:
                behind.pop(slot, None)
            else:
                behind[slot] = remembered
            if reread_from is not None:
                log.warning("%s[%d]: no progress since the last check, applied up to %d while the partition ends at %d;"
                            " reading again from %d", tp.topic, tp.partition, reread_from - 1, end - 1, reread_from)
                await app.consumer.seek(tp, reread_from)

    @app.timer(interval=settings.lease_reaper_interval_s, name="lease-reaper")
    async def lease_reaper() -> None:
        """Tick personas whose lease looks expired (once per lease)."""
        now = wall_ms()
        ticks = []
        for persona, stored in list(store.tables[LEASES].items()):
            record = load(LeaseRecord, parse(stored)[1]) if stored else None  # latest write: a hint only
            if record is None:
                continue
            lease = record.lease
            if lease.expires_at_ms <= now and ticked_leases.get(persona) != lease.id:
                ticks.append(Output("persona_inbox", persona, LeaseTick(at_ms=now, persona=persona)))
                ticked_leases[persona] = lease.id
        await publish(pipeline, ticks)

    @app.timer(interval=settings.schedule_interval_s, name="schedule-ticker")
    async def schedule_ticker() -> None:
        """Tick personas with a cron occurrence due since their schedule cursor."""
        now = wall_ms()
        ticks = []
        for persona, raw in list(store.tables[PERSONAS].items()):
            head = load(PersonaHead, raw)
            if head is None or not head.bound or head.binding is None or not head.binding.schedules:
                continue
            cursor = head.schedule_cursor_ms
            if cursor is None or ticked_cursors.get(persona) == cursor:
                continue
            due_at = earliest_due(head.binding.schedules, cursor)
            if due_at is not None and due_at <= now:
                ticks.append(Output("persona_inbox", persona, ScheduleTick(at_ms=now, persona=persona)))
                ticked_cursors[persona] = cursor
        await publish(pipeline, ticks)
