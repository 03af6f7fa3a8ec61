"""Capability tokens and signed bills of materials over a real broker: a dispatch's token
verifies with the worker's public key (kept in the data dir), a report presenting another
run's token is fenced, a finished run's ``run.bom`` verifies and lists what its executor
reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from personaflow import capability as cap
from personaflow.keys import public_keys

from ..personaflow.test_cli import personaflow
from ..support.personas import SELF_REPORTED, PersonaProbe

pytestmark = pytest.mark.broker

ISSUE = {"issue_key": "CAP-1"}


@pytest.fixture
def persona(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    yield probe
    probe.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_dispatch_token_verifies_and_another_runs_token_is_fenced(persona, settings, data_dir: Path) -> None:
    persona.bind({**SELF_REPORTED, "lease_ttl_ms": 60_000})
    first = persona.trigger("linear", "issue", ISSUE)
    dispatch = persona.dispatch_for(first["run_id"])
    claims = cap.verify(dispatch["capability"], public_keys(data_dir), cap.AUDIENCE, now_ms())
    assert (claims.sub, claims.attempt, claims.lease) == (first["run_id"], 1, first["lease"]["id"])
    assert claims.exp <= dispatch["deadline_ms"] and claims.scope == {"workflow": dispatch["entry_workflow"]}
    checked = personaflow(settings, "capability", "verify", dispatch["capability"], "--data-dir", str(data_dir))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["sub"] == first["run_id"]

    persona.report(first["run_id"], first["lease"]["id"], "completed")  # frees the persona's lease
    persona.final_receipt(first["request_id"])
    second = persona.trigger("linear", "issue", {"issue_key": "CAP-2"})
    stolen = dispatch["capability"]  # the first run's token, presented for the second run
    persona.report(second["run_id"], second["lease"]["id"], "completed", capability=stolen)
    [fenced] = persona.wait_run_events(second["run_id"], "run.report_rejected")
    assert f"capability token for run {first['run_id']}" in fenced["payload"]["reason"]
    own = persona.dispatch_for(second["run_id"])["capability"]
    persona.report(second["run_id"], second["lease"]["id"], "completed", capability=own)
    assert persona.final_receipt(second["request_id"])["status"] == "completed"


def test_a_finished_runs_bom_is_signed_and_lists_what_its_executor_reported(
    persona, executor, worker, settings, data_dir: Path
) -> None:
    persona.bind({"execution": "external", "lease_ttl_ms": 60_000})
    options = {"executor.steps": "2", "executor.tool": "web-search", "executor.checkpoint": "true"}
    receipt = persona.trigger("linear", "issue", {**ISSUE, **options, "executor.tokens_per_step": "5"})
    assert persona.final_receipt(receipt["request_id"])["status"] == "completed"
    [bom_event] = persona.wait_run_events(receipt["run_id"], "run.bom")
    bom = bom_event["payload"]
    (attempt,) = bom["attempts"]
    assert attempt["lease_id"] == receipt["lease"]["id"] and attempt["status"] == "completed"
    assert attempt["executor"]["id"].startswith("personaflow-reference-executor/") and attempt["tokens"] == 10
    assert bom["models"] == ["simulated-llm-1"] and bom["tools"] == ["web-search"] and len(bom["checkpoints"]) == 2
    keys = public_keys(data_dir)
    [record] = [r for r in persona.outbox.seen if (r.value or {}).get("event_id") == bom_event["event_id"]]
    cap.verify_bom(bom, json.loads(record.headers["signature"]), keys)  # as published
    served = json.loads(worker.get(f"/runs/{receipt['run_id']}/bom"))  # as `personaflow run --bom` reads it
    assert served["bom"] == bom and served["signature"] == json.loads(record.headers["signature"])
    cap.verify_bom(served["bom"], served["signature"], keys)
    printed = personaflow(settings, "run", receipt["run_id"], "--bom")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["verified"] is True and "signature: verified" in printed.stderr
