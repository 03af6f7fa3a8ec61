"""The wall-clock timer. It decides nothing about personas: it reads the timer index up
to now (O(due), see :mod:`tables.timers`) and puts one tick, stamped with the time it was
taken, into the inbox of each persona with something due; the transition decides what
is due at that time and moves the timer rows it handled."""

from __future__ import annotations

from engine.task import Punctuator, TaskBatch
from streams.inbox import Tick
from streams.outputs import Output
from streams.settings import Settings
from tables.timers import due_personas


def punctuator(settings: Settings) -> Punctuator:
    # Timer rows already ticked (a tick is on its way; the row moves once it is applied).
    ticked: dict[int, set[str]] = {}

    def punctuate(batch: TaskBatch, now: int) -> None:
        seen = ticked.setdefault(batch.partition, set())
        due: set[str] = set()
        personas: dict[str, None] = {}
        for key, persona in due_personas(batch.store, now):
            due.add(key)
            if key not in seen:
                personas[persona] = None
        for persona in personas:
            batch.emit(Output("persona_inbox", persona, Tick(at_ms=now, persona=persona)))
        ticked[batch.partition] = due  # forget rows that are no longer due (handled)

    return Punctuator("timers", settings.timer_interval_s, punctuate)
