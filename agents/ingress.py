"""Ingress: validate public input and forward it into the inboxes, or dead-letter it.

Two sources. ``persona.bindings``, ``persona.control`` and ``persona.triggers`` are
merged in record-timestamp order (ties: in that order) before they are forwarded, so
the persona inbox holds them in the order producers meant (docs/behaviour.md, section 2).
``persona.run.events`` and ``persona.run.control`` go to the run inbox in offset order.
Admission itself is the pure :func:`streams.admission.admit`; bad input never stops the
stream.
"""

from __future__ import annotations

from aiokafka import ConsumerRecord

from engine.task import Source, TaskBatch
from streams.admission import Forward, RawRecord, admit
from streams.outputs import Output
from streams.settings import Settings
from streams.topics import TopicNames

PERSONA_ROLES = ("bindings", "control", "triggers")  # this order breaks timestamp ties
RUN_ROLES = ("run_events", "run_control")


def sources(settings: Settings) -> list[Source]:
    names = TopicNames(settings.topic_prefix)
    role_of = {names.name(role): role for role in (*PERSONA_ROLES, *RUN_ROLES)}
    hold_ms = settings.unbound_grace_ms

    def handle(batch: TaskBatch, record: ConsumerRecord) -> None:
        raw = RawRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)
        verdict = admit(role_of[record.topic], raw, hold_ms=hold_ms)
        if isinstance(verdict, Forward):
            batch.emit(Output(verdict.inbox, verdict.key, verdict.record))
        else:
            batch.emit(Output("dlq", raw.key, verdict, (("error", verdict.error[:200]), ("reason", "invalid_input"))))

    return [
        Source("persona-ingress", PERSONA_ROLES, handle, in_time_order=True, stage=0),
        Source("run-ingress", RUN_ROLES, handle, stage=0),
    ]
