"""Internal inbox records.

Everything that changes a persona goes through ``persona.inbox`` (keyed by persona);
everything that changes a run goes through ``persona.run.inbox`` (keyed by run id).
Ingress forwards validated public input here, stamped with its event time and the
position it came from; agents and timers add internal notices. Replaying an inbox
through the transition functions reproduces the pipeline's outputs exactly.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .records import ControlCommand, PersonaBinding, RunControl, RunCost, RunEvent, RunLimits, TriggerEnvelope, TriggerRequest


class Source(BaseModel):
    """Where a forwarded record was read: topic, partition, offset."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int

    def as_cause(self) -> dict[str, object]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class InboxRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Event time of the input, in ms (the transition's "now").
    at_ms: int
    source: Source | None = None

    def cause(self, position: int | None, **ids: str) -> dict[str, object]:
        """The ``cause`` of outbox events this record leads to: its type, the ids that
        identify it, where it was read from and its inbox offset."""
        cause: dict[str, object] = {"type": self.type, **ids}  # type: ignore[attr-defined]
        if self.source is not None:
            cause.update(self.source.as_cause())
        if position is not None:
            cause["inbox_offset"] = position
        return cause


# ----------------------------------------------------------------- persona inbox


class BindingChanged(InboxRecord):
    type: Literal["binding"] = "binding"
    persona: str
    binding: PersonaBinding | None  # None: unbound (tombstone)


class TriggerReceived(InboxRecord):
    type: Literal["trigger"] = "trigger"
    request: TriggerRequest
    #: How long the trigger waits for a binding if its persona has none (ms).
    hold_ms: int = 0


class ControlReceived(InboxRecord):
    type: Literal["control"] = "control"
    command: ControlCommand


class RunFinished(InboxRecord):
    """The run agent saw a run end (reported by its executor, or cancelled)."""

    type: Literal["run_finished"] = "run_finished"
    persona: str
    run_id: str
    lease_id: str
    outcome: Literal["completed", "failed", "cancelled"]
    cost: RunCost | None = None
    error: str | None = None
    event_id: str


class LeaseTick(InboxRecord):
    """The lease reaper saw a lease that may have expired at ``at_ms``."""

    type: Literal["lease_tick"] = "lease_tick"
    persona: str


class ScheduleTick(InboxRecord):
    """The schedule ticker saw a cron occurrence due by ``at_ms`` (the tick decides which)."""

    type: Literal["schedule_tick"] = "schedule_tick"
    persona: str


PersonaInput = Annotated[
    Union[BindingChanged, TriggerReceived, ControlReceived, RunFinished, LeaseTick, ScheduleTick],
    Field(discriminator="type"),
]
PERSONA_INPUT: TypeAdapter[PersonaInput] = TypeAdapter(PersonaInput)


def persona_of(record: PersonaInput) -> str:
    if isinstance(record, TriggerReceived):
        return record.request.persona
    if isinstance(record, ControlReceived):
        return record.command.persona
    return record.persona


# --------------------------------------------------------------------- run inbox


class RunRegistered(InboxRecord):
    """The persona agent dispatched a run; the run agent now owns its lifecycle."""

    type: Literal["registered"] = "registered"
    run_id: str
    persona: str
    lease_id: str
    request_id: str
    attempt: int
    entry_workflow: str
    envelope: TriggerEnvelope
    deadline_ms: int
    limits: RunLimits


class RunReported(InboxRecord):
    type: Literal["event"] = "event"
    event: RunEvent


class RunCommanded(InboxRecord):
    type: Literal["control"] = "control"
    command: RunControl


class RunLeaseLost(InboxRecord):
    """The persona agent expired or replaced the run's lease; later reports are fenced."""

    type: Literal["lease_lost"] = "lease_lost"
    run_id: str
    lease_id: str
    reason: str


RunInput = Annotated[
    Union[RunRegistered, RunReported, RunCommanded, RunLeaseLost], Field(discriminator="type")
]
RUN_INPUT: TypeAdapter[RunInput] = TypeAdapter(RunInput)


def run_of(record: RunInput) -> str:
    if isinstance(record, RunReported):
        return record.event.run_id
    if isinstance(record, RunCommanded):
        return record.command.run_id
    return record.run_id
