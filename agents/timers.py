"""Wall-clock timers. They decide nothing: they put records stamped with the time they
were taken into the inboxes (lease and schedule ticks for personas, nudges for inbox
partitions that stay behind), and the transitions decide what is due."""

from __future__ import annotations

import time

from streams.app import Pipeline
from streams.inbox import LeaseTick, Nudge, ScheduleTick
from streams.outputs import Output
from tables.schedule import earliest_due
from tables.state import LEASES, PERSONAS, LeaseRecord, PersonaHead, load
from tables.versioned import parse

from .continuity import Positions
from .persona import PersonaStore
from .runtime import publish


def wall_ms() -> int:
    return int(time.time() * 1000)


def register(pipeline: Pipeline, store: PersonaStore, inboxes: list[Positions]) -> None:
    app = pipeline.app
    settings = pipeline.settings
    ticked_leases: dict[str, str] = {}
    ticked_cursors: dict[str, int] = {}
    behind: dict[tuple[str, int], int] = {}

    @app.timer(interval=settings.lease_reaper_interval_s, name="continuity-check")
    async def continuity_check() -> None:
        """Nudge an inbox partition whose agent stayed behind its end since the last check.

        A record the consumer skipped is only noticed when a later one arrives; if it was
        the last one, the nudge is that later record (see agents.continuity).
        """
        now = wall_ms()
        nudges = []
        for positions in inboxes:
            for tp in app.assignor.assigned_actives():
                if tp.topic != positions.topic:
                    continue
                end = app.consumer.highwater(tp)
                stored = positions.stored(tp.partition)
                slot = (tp.topic, tp.partition)
                if end is None or stored is None or stored >= end - 1:
                    behind.pop(slot, None)
                    continue
                if behind.get(slot) == stored:
                    nudges.append((tp, Nudge(at_ms=now, partition=tp.partition)))
                behind[slot] = stored
        for tp, nudge in nudges:
            await app.producer.send(tp.topic, None, nudge.model_dump_json().encode(), partition=tp.partition,
                                    timestamp=None, headers=None)

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
