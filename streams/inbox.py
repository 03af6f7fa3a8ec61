"""Internal inbox records.

Everything that changes a persona, and its runs, goes through ``persona.inbox`` (keyed by
persona). ``persona.run.inbox`` (keyed by run id) is the run directory: it learns which
persona a run belongs to and routes executors' reports and run control there.
Ingress forwards validated public input here, stamped with its event time and the
position it came from; the pipeline adds internal notices. Replaying an inbox through
the transition functions reproduces the pipeline's outputs exactly.

The records are msgspec structs (a tagged union on ``type``): the inbox is written only
by the pipeline, after validation, so reading it back needs no second validation.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from .wire import ControlCommand, PersonaBinding, RunControl, RunEvent, TriggerRequest


class Source(msgspec.Struct, frozen=True, gc=False):
    """Where a forwarded record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int


class _Inbox(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    #: Event time of the input, in ms (the transition's "now" once the input is accepted).
    at_ms: int
    source: Source | None = None
    #: Public input: the admitting worker's wall clock when ingress admitted it.
    admitted_at_ms: int | None = None
    #: Public input that ingress refused to apply (decided once, at admission, so that a
    #: replay decides the same): e.g. ``timestamp_in_future: ...``. The transition answers
    #: it with a rejection and changes nothing else.
    refused: str | None = None

    def cause(self, position: int | None, **ids: str) -> dict[str, Any]:
        """The ``cause`` of outbox events this record leads to: its type, the ids that
        identify it, where it was read from and its inbox offset, and for public input the
        producer's event time and the time it was admitted."""
        cause: dict[str, Any] = {"type": self.__struct_config__.tag, **ids}
        source = self.source
        if source is not None:
            cause["topic"], cause["partition"], cause["offset"] = source.topic, source.partition, source.offset
        if position is not None:
            cause["inbox_offset"] = position
        if self.admitted_at_ms is not None:
            cause["producer_at_ms"], cause["admitted_at_ms"] = self.at_ms, self.admitted_at_ms
        return cause


# ----------------------------------------------------------------- persona inbox


class BindingChanged(_Inbox, frozen=True, kw_only=True, tag="binding"):
    persona: str
    binding: PersonaBinding | None  # None: unbound (tombstone)


class TriggerReceived(_Inbox, frozen=True, kw_only=True, tag="trigger"):
    request: TriggerRequest
    #: How long the trigger waits for a binding if its persona has none (ms).
    hold_ms: int = 0


class ControlReceived(_Inbox, frozen=True, kw_only=True, tag="control"):
    command: ControlCommand


class RunReportReceived(_Inbox, frozen=True, kw_only=True, tag="run_report"):
    """An executor's report about one of the persona's runs (routed by the run directory)."""

    persona: str
    event: RunEvent


class RunReportsReceived(_Inbox, frozen=True, kw_only=True, tag="run_reports"):
    """Reports that name this persona, read together by ingress, in their order: one inbox
    record instead of one each (an executor's burst of started, steps, usage and outcome
    costs one record). Applied as its reports one after another, each with its own event
    time, source and cause; ``at_ms`` is the first report's. Ingress bounds a batch (see
    :data:`MAX_BATCH_REPORTS`, :data:`MAX_BATCH_BYTES`) so that it stays far below the
    broker's record size limit whatever the reports' sizes."""

    persona: str
    reports: list[RunReportReceived]


#: At most this many reports in one :class:`RunReportsReceived`.
MAX_BATCH_REPORTS = 64
#: A report joins a batch only while the producers' bytes of its reports stay within this
#: (a report larger than that travels alone, exactly as large as it was produced).
MAX_BATCH_BYTES = 256 * 1024


class ReportBatches:
    """The batches of one ingress pass, one open batch per persona. A report either joins
    its persona's open batch (which has not been published yet: outputs are encoded when
    the pass publishes them) or starts a new one, which the caller publishes where this
    report stands, so a persona's reports keep their order."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, tuple[RunReportsReceived, list[int]]] = {}

    def add(self, report: RunReportReceived, size: int) -> RunReportsReceived | None:
        """Take ``report`` (``size``: its producer's bytes). Returns the new batch to
        publish, or None when the report joined the open one."""
        current = self._open.get(report.persona)
        if current is not None:
            batch, used = current
            if len(batch.reports) < MAX_BATCH_REPORTS and used[0] + size <= MAX_BATCH_BYTES:
                batch.reports.append(report)
                used[0] += size
                return None
        batch = RunReportsReceived(at_ms=report.at_ms, persona=report.persona, reports=[report])
        self._open[report.persona] = (batch, [size])
        return batch


class RunControlReceived(_Inbox, frozen=True, kw_only=True, tag="run_control"):
    """A control message for one of the persona's runs (routed by the run directory)."""

    persona: str
    command: RunControl


class Tick(_Inbox, frozen=True, kw_only=True, tag="tick"):
    """A timer saw something of this persona fall due by ``at_ms`` (a lease expiry, a
    cron occurrence, a held trigger's grace): the transition decides what is due."""

    persona: str


class HandoffSettled(_Inbox, frozen=True, kw_only=True, tag="handoff_settled"):
    """The target persona took its final decision about a handoff ``persona`` sent: the
    run for it finished, or the handoff was dead-lettered, rejected or superseded."""

    persona: str  # the sender
    handoff_id: str
    target_persona: str
    request_id: str
    decision: str  # the target's final receipt status
    run_id: str | None = None
    error: str | None = None
    receipt_id: str


PersonaInput: TypeAlias = (
    BindingChanged
    | TriggerReceived
    | ControlReceived
    | RunReportReceived
    | RunReportsReceived
    | RunControlReceived
    | Tick
    | HandoffSettled
)
PERSONA_INPUT = msgspec.json.Decoder(PersonaInput)


def persona_of(record: PersonaInput) -> str:
    if isinstance(record, TriggerReceived):
        return record.request.persona
    if isinstance(record, ControlReceived):
        return record.command.persona
    return record.persona


# --------------------------------------------------------------------- run inbox


class RunRegistered(_Inbox, frozen=True, kw_only=True, tag="registered"):
    """A persona dispatched a new run: the directory now routes its reports to the persona."""

    run_id: str
    persona: str


class RunReported(_Inbox, frozen=True, kw_only=True, tag="event"):
    event: RunEvent


class RunCommanded(_Inbox, frozen=True, kw_only=True, tag="control"):
    command: RunControl


RunInput: TypeAlias = RunRegistered | RunReported | RunCommanded
RUN_INPUT = msgspec.json.Decoder(RunInput)


def run_of(record: RunInput) -> str:
    if isinstance(record, RunReported):
        return record.event.run_id
    if isinstance(record, RunCommanded):
        return record.command.run_id
    return record.run_id


def encode(record: _Inbox) -> bytes:
    return msgspec.json.encode(record)
