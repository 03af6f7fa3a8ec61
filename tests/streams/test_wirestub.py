"""``streams/wire.pyi`` declares the fast twins for the type checker: it is what the
generator writes from the contract now, it agrees with the module at run time, and it
types the twins precisely enough for strict code."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from mypy import api as mypy_api

from streams import records, wire, wirestub

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_stub_is_what_the_generator_writes_from_the_contract_now():
    committed = wirestub.STUB.read_text()
    generated = wirestub.render()
    if committed != generated:
        diff = difflib.unified_diff(committed.splitlines(True), generated.splitlines(True), "committed", "now")
        pytest.fail("streams/wire.pyi is stale: run `make wire-stub`\n" + "".join(diff))


def test_the_stub_agrees_with_the_module_at_run_time(tmp_path):
    # stubtest cannot read the constructors msgspec makes (it sees ``__init__(self)``);
    # the twins' fields come from the twins themselves, see the test above.
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(r"streams\.wire\.\w+\.__init__" + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "streams.wire", "--allowlist", str(allowlist)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class Gadget(records.Record):
    """A record the contract might gain."""

    name: str
    mode: Literal["on", "off"] = "off"
    limits: records.RunLimits = records.RunLimits()
    cost: records.RunCost | None = None
    tags: list[str] = []
    kind: records.RunEventKind = "started"


def test_a_new_contract_record_is_declared_field_by_field(monkeypatch):
    monkeypatch.setattr(records, "Gadget", Gadget, raising=False)
    monkeypatch.setattr(wire, "Gadget", wire.twin(Gadget), raising=False)
    assert wirestub._twin_class("Gadget").splitlines() == [
        "class Gadget(msgspec.Struct, kw_only=True, frozen=True, gc=False):",
        '    """A record the contract might gain."""',
        "    name: str",
        '    mode: Literal["on", "off"] = "off"',
        "    limits: RunLimits = msgspec.field(default_factory=RunLimits)",
        "    cost: RunCost | None = None",
        "    tags: list[str] = []",
        '    kind: records.RunEventKind = "started"',
    ]


USES = """
from streams import records, wire

def spend(command: wire.ControlCommand) -> float:
    return 0.0 if command.cost is None else command.cost.cost_usd

def dispatch(run: wire.RunDispatch) -> str:
    return run.envelope.subject_key + run.kind

wire.ControlCommand(command_id="c", persona="p", action="explode", actor="ops")
wire.RunCost(cost_usd=1.0)
wire.RunCost(cost_usd=1.0, tokens=2).tokens = 3
reveal_type(wire.from_model(records.RunCost(cost_usd=1.0, tokens=2)))
reveal_type(wire.decoder(wire.RunDispatch).decode(b"{}").spawn_mode)
"""


def test_code_using_the_twins_is_type_checked_strictly(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the project's mypy settings, and streams importable
    uses = tmp_path / "uses.py"
    uses.write_text(USES)
    out, err, _ = mypy_api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(uses)])
    found = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(str(uses))]
    assert found == [
        'error: Argument "action" to "ControlCommand" has incompatible type "Literal[\'explode\']"; expected'
        " \"Literal['pause', 'resume', 'disable', 'enable', 'drain', 'record_spend', 'cancel']\"  [arg-type]",
        'error: Missing named argument "tokens" for "RunCost"  [call-arg]',
        'error: Property "tokens" defined in "RunCost" is read-only  [misc]',
        'note: Revealed type is "streams.wire.RunCost"',
        "note: Revealed type is \"Literal['inline'] | Literal['child'] | None\"",
    ], out + err
