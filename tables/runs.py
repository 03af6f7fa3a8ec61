"""The run directory: which persona a run belongs to, and routing to it.

``persona.run.inbox`` is keyed by run id. A persona registers every run it starts here
before any executor can see its dispatch (the registration is acknowledged first), so
reports and run control about the run, which ingress forwards into the same partition
later, always find it. The directory forwards them into the persona's inbox, where the
run's state lives (:mod:`tables.execution`). A report or command about a run nobody
registered is dead-lettered with the reason.

State: one row per run, ``directory[run_id]`` = the persona's name.
"""

from __future__ import annotations

from streams.inbox import (
    RunCommanded,
    RunControlReceived,
    RunInput,
    RunRegistered,
    RunReported,
    RunReportReceived,
    run_of,
)
from streams.outputs import Output
from streams.wire import encode

from .step import dead_letter_output
from .store import Transaction

DIRECTORY = "directory"


def apply(txn: Transaction, record: RunInput, position: int | None = None) -> list[Output]:
    run_id = run_of(record)
    if isinstance(record, RunRegistered):
        if txn.get(DIRECTORY, run_id) is None:
            txn.put(DIRECTORY, run_id, record.persona.encode())
        return []
    persona = txn.get(DIRECTORY, run_id)
    if persona is None:
        what = "report" if isinstance(record, RunReported) else "command"
        return [
            dead_letter_output(
                record,
                run_id,
                f"unknown run {run_id!r}: no persona dispatched a run with this id; the {what} is ignored",
                record.at_ms,
                "persona.run.inbox",
                "unknown_run",
            )
        ]
    name = persona.decode()
    # What ingress decided travels on: the admission time and a refusal, if any.
    admitted_at_ms, refused = record.admitted_at_ms, record.refused
    if isinstance(record, RunReported):
        routed: RunReportReceived | RunControlReceived = RunReportReceived(
            at_ms=record.at_ms,
            source=record.source,
            persona=name,
            event=record.event,
            admitted_at_ms=admitted_at_ms,
            refused=refused,
        )
    else:
        assert isinstance(record, RunCommanded)
        routed = RunControlReceived(
            at_ms=record.at_ms,
            source=record.source,
            persona=name,
            command=record.command,
            admitted_at_ms=admitted_at_ms,
            refused=refused,
        )
    return [Output("persona_inbox", name, encode(routed), (("persona", name), ("run_id", run_id)))]


def persona_of_run(txn: Transaction, run_id: str) -> str | None:
    raw = txn.get(DIRECTORY, run_id)
    return None if raw is None else raw.decode()
