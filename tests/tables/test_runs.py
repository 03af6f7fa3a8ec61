"""The run directory: registration, and routing of reports and run control to the persona."""

from __future__ import annotations

import itertools

from streams.inbox import RunCommanded, RunControlReceived, RunRegistered, RunReported, RunReportReceived
from streams.records import DeadLetter
from streams.wire import RunControl, RunEvent
from tables import runs
from tables.store import MemoryStore

from .harness import T0, seen


class Directory:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.offsets = itertools.count()

    def feed(self, record):
        txn = self.store.transaction()
        outputs = seen(runs.apply(txn, record, next(self.offsets)))
        self.store.apply(txn)
        return outputs

    def report(self, run_id="run-1"):
        return self.feed(
            RunReported(at_ms=T0, event=RunEvent(event_id="e1", run_id=run_id, lease_id="l1", kind="heartbeat"))
        )

    def command(self, run_id="run-1"):
        return self.feed(
            RunCommanded(at_ms=T0, command=RunControl(command_id="c1", run_id=run_id, action="pause", actor="ops"))
        )


def test_a_registered_run_routes_reports_and_control_to_its_persona_inbox():
    d = Directory()
    assert d.feed(RunRegistered(at_ms=T0, run_id="run-1", persona="alice")) == []
    [report] = d.report()
    assert (report.role, report.key) == ("persona_inbox", "alice")
    assert isinstance(report.value, RunReportReceived) and report.value.event.run_id == "run-1"
    [command] = d.command()
    assert isinstance(command.value, RunControlReceived) and command.value.persona == "alice"
    assert ("run_id", "run-1") in command.headers


def test_a_second_registration_does_not_move_a_run_to_another_persona():
    d = Directory()
    d.feed(RunRegistered(at_ms=T0, run_id="run-1", persona="alice"))
    d.feed(RunRegistered(at_ms=T0, run_id="run-1", persona="bob"))
    assert d.report()[0].key == "alice"
    txn = d.store.transaction()
    assert runs.persona_of_run(txn, "run-1") == "alice"


def test_reports_and_commands_for_an_unknown_run_are_dead_lettered_with_the_reason():
    d = Directory()
    [letter] = d.report("nope")
    assert letter.role == "dlq" and isinstance(letter.value, DeadLetter)
    assert ("reason", "unknown_run") in letter.headers and "unknown run 'nope'" in letter.value.error
    [letter] = d.command("nope")
    assert ("reason", "unknown_run") in letter.headers and "the command is ignored" in letter.value.error
