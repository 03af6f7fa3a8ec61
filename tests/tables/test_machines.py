"""The state machines as data: the docs print them, every status and mode change goes
through them, and an undeclared edge is a rejection that changes nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tables import machines
from tables.machines import ATTEMPTS, PERSONAS, RUNS, Rejected, close_attempt, move_persona, move_run
from tables.runstate import Attempt

ROOT = Path(__file__).resolve().parents[2]
#: Fields only the machines may assign.
GUARDED = {"status", "mode", "paused_from"}


def test_the_behaviour_document_prints_the_machines_as_the_code_declares_them():
    document = (ROOT / "docs" / "behaviour.md").read_text()
    assert machines.splice(document) == document, "run `personaflow machines --write docs/behaviour.md`"
    assert machines.describe() in document


def test_no_module_of_tables_assigns_a_status_or_a_mode_but_the_machines():
    offenders = []
    for path in sorted((ROOT / "tables").glob("*.py")):
        if path.name == "machines.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Attribute) and leaf.attr in GUARDED:
                        offenders.append(f"{path.name}:{leaf.lineno} assigns .{leaf.attr}")
    assert offenders == []


class Run:
    def __init__(self, status: machines.RunStatus) -> None:
        self.status: machines.RunStatus = status
        self.paused_from: machines.RunStatus | None = None


@pytest.mark.parametrize("before", ["dispatched", "running", "waiting"])
def test_resume_returns_a_run_to_the_state_it_was_paused_from(before):
    run = Run(before)
    move_run(run, "pause")
    assert (run.status, run.paused_from) == ("paused", before)
    move_run(run, "resume")
    assert (run.status, run.paused_from) == (before, None)


def test_an_undeclared_run_edge_is_rejected_with_its_reason_and_changes_nothing():
    run = Run("running")
    with pytest.raises(Rejected, match="a running run cannot be resumed"):
        move_run(run, "resume")
    assert run.status == "running"
    for terminal in machines.RUN_TERMINAL:
        assert all(RUNS.target(terminal, event) is None for event in RUNS.events), terminal


def test_a_dispatch_closes_once():
    attempt = Attempt(dispatch=1, attempt=1, lease_id="l", started_at_ms=0)
    assert close_attempt(attempt, "complete") and attempt.status == "completed"
    assert not close_attempt(attempt, "cancel") and attempt.status == "completed"
    assert ATTEMPTS.target("completed", "cancel") is None


def test_a_disabled_persona_is_taken_back_only_by_enable():
    class Head:
        mode: machines.Mode = "disabled"

    head = Head()
    for event in ("pause", "resume", "drain"):
        with pytest.raises(Rejected, match="disabled"):
            move_persona(head, event)  # type: ignore[arg-type]
        assert head.mode == "disabled"
    assert move_persona(head, "enable") == "idle"
    with pytest.raises(Rejected, match="not disabled"):
        move_persona(head, "enable")
    assert PERSONAS.target("failed", "run_started") == "idle"
