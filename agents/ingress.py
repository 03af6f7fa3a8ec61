"""Ingress: validate public input and forward it into the inboxes, or dead-letter it.

Two sources. ``persona.bindings``, ``persona.control`` and ``persona.triggers`` are
merged in record-timestamp order (ties: in that order) before they are forwarded, so
the persona inbox holds them in the order producers meant (docs/behaviour.md, section 2).
``persona.run.events`` and ``persona.run.control`` go to the run inbox in offset order;
reports that name their persona go straight to its inbox, those of one pass joined into
one record per persona (:class:`streams.inbox.ReportBatches`).
Admission itself is the pure :func:`streams.admission.admit`; bad input never stops the
stream.
"""

from __future__ import annotations

from aiokafka import ConsumerRecord

from engine.runtime import wall_ms
from engine.task import Source, TaskBatch
from streams.admission import Forward, RawRecord, admit, reason_of, redacted_dead_letter
from streams.inbox import ReportBatches, RunReportReceived
from streams.outputs import Output
from streams.settings import Settings
from streams.topics import TopicNames
from tables.state import PersonaState

PERSONA_ROLES = ("bindings", "control", "triggers")  # this order breaks timestamp ties
RUN_ROLES = ("run_events", "run_control")
BATCHES = "report_batches"  # this pass's ReportBatches, in the task batch's scratch


def sources(settings: Settings) -> list[Source]:
    names = TopicNames(settings.topic_prefix)
    role_of = {names.name(role): role for role in (*PERSONA_ROLES, *RUN_ROLES)}
    hold_ms, max_future_ms = settings.unbound_grace_ms, settings.max_future_ms

    def handle(batch: TaskBatch, record: ConsumerRecord) -> None:
        headers = tuple(record.headers) if record.headers else ()
        raw = RawRecord(
            record.topic, record.partition, record.offset, record.key, record.value, record.timestamp, headers
        )
        role = role_of[record.topic]
        verdict = admit(role, raw, hold_ms=hold_ms, now_ms=wall_ms(), max_future_ms=max_future_ms)
        if isinstance(verdict, Forward):
            record = verdict.record
            if isinstance(record, RunReportReceived):
                batches = batch.scratch.get(BATCHES)
                if batches is None:
                    batches = batch.scratch[BATCHES] = ReportBatches()
                record = batches.add(record, len(raw.value or b""))
                if record is None:  # it joined a batch this pass already emitted
                    return
            batch.emit(Output(verdict.inbox, verdict.key, record))
            return
        if role in PERSONA_ROLES:  # a persona that redacts metadata: so does its dead letter
            verdict = redacted_dead_letter(verdict, raw, redact_keys(batch, raw.key))
        batch.emit(Output("dlq", raw.key, verdict, (("error", verdict.error[:200]), ("reason", reason_of(verdict)))))

    return [
        Source("persona-ingress", PERSONA_ROLES, handle, in_time_order=True, stage=0),
        Source("run-ingress", RUN_ROLES, handle, stage=0),
    ]


def redact_keys(batch: TaskBatch, key: bytes | None) -> frozenset[str]:
    """The ``redact_metadata_keys`` of the persona a record is keyed by (its binding lives
    in this task: persona-keyed topics are co-partitioned)."""
    if key is None:
        return frozenset()
    try:
        head = PersonaState(batch.txn, key.decode("utf-8")).head()
    except UnicodeDecodeError:
        return frozenset()
    binding = head.binding if head is not None else None
    return frozenset(binding.redact_metadata_keys) if binding is not None else frozenset()
