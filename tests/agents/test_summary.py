"""The run summary over a real broker: ``GET /personas/{name}/runs/summary`` counts what the
runs' own views say (``GET /runs/{id}`` for each), ``personaflow runs PERSONA --summary``
prints it, and a dispatch nobody answers shows ``executor.silent`` after ``lease_ttl_ms``
(in the summary, the published status and the dashboard)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from personaflow.process import settings_env

from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually
from .test_dashboard import Cells, chromium

pytestmark = pytest.mark.broker

STATUSES = ("ready", "dispatched", "running", "waiting", "paused", "retry_wait", "completed", "failed", "cancelled")
TTL = 1000


def view(worker, path: str) -> Any:
    return json.loads(worker.get(path))


def codes(diagnostics: list[dict[str, Any]] | None) -> list[str]:
    return [d["code"] for d in diagnostics or []]


def runs_by_status(worker, persona: str) -> Counter[str]:
    """Each of the persona's runs, as its own view says."""
    page = view(worker, f"/personas/{persona}/runs?limit=100")
    assert not page["has_more"]
    return Counter(view(worker, f"/runs/{run['run_id']}")["status"] for run in page["runs"])


def test_the_summary_counts_what_the_runs_say_and_an_unanswered_dispatch_shows_executor_silent(
    worker, kafka, settings, persona_name
):
    counted = PersonaProbe(kafka, f"{persona_name}-count")
    silent = PersonaProbe(kafka, f"{persona_name}-silent")
    try:
        counted.bind({**SELF_REPORTED, "retry": {"max_attempts": 3, "backoff_ms": 300_000}})
        done = counted.trigger("linear", "issue", {"issue_key": "S-1"})
        counted.report(done["run_id"], done["lease"]["id"], "started")
        counted.report(done["run_id"], done["lease"]["id"], "completed", cost={"cost_usd": 0.02, "tokens": 7})
        assert counted.final_receipt(done["request_id"])["status"] == "completed"
        broken = counted.trigger("linear", "issue", {"issue_key": "S-2"})
        counted.report(broken["run_id"], broken["lease"]["id"], "failed", error="broken", retryable=False)
        assert counted.final_receipt(broken["request_id"])["status"] == "failed"
        flaky = counted.trigger("linear", "issue", {"issue_key": "S-3"})
        counted.report(flaky["run_id"], flaky["lease"]["id"], "failed", error="flaky")
        assert counted.receipts_for(flaky["request_id"], 2)[1]["status"] == "retrying"  # waits 300 s
        parent = counted.trigger("linear", "issue", {"issue_key": "S-4"})
        run_id, lease = parent["run_id"], parent["lease"]["id"]
        counted.report(run_id, lease, "started")
        counted.report(run_id, lease, "spawn", child_key="c", entry_workflow="workflows/child.harn#run")
        counted.wait_run_events(run_id, "run.spawned")
        [child] = view(worker, f"/runs/{run_id}")["children"]
        assert counted.run_control(child, "cancel")["status"] == "completed"
        counted.report(run_id, lease, "waiting", name="approval")
        counted.wait_run_events(run_id, "run.waiting")
        assert counted.run_control(run_id, "pause")["status"] == "completed"
        assert counted.trigger("linear", "issue", {"issue_key": "S-5"})["status"] == "lease_busy"

        def settled() -> dict[str, Any] | None:
            summary = view(worker, f"/personas/{counted.name}/runs/summary")
            return summary if summary["queued_triggers"] == 1 and summary["runs"]["paused"] == 1 else None

        summary = eventually(settled, what="the summary of the runs")
        scanned = runs_by_status(worker, counted.name)
        assert {s: summary["runs"][s] for s in STATUSES} == {s: scanned[s] for s in STATUSES}
        assert scanned == Counter(completed=1, failed=1, retry_wait=1, cancelled=1, paused=1)
        assert (summary["runs"]["total"], summary["runs"]["open"], summary["runs"]["active"]) == (5, 2, 0)
        assert (summary["retries"], summary["lease_expiries"], summary["queued_triggers"]) == (1, 0, 1)
        assert summary["spent_today_usd"] == pytest.approx(0.02) and summary["tokens_today"] == 7
        assert summary["oldest_queued_age_ms"] >= 0 and summary["diagnostics"] == []

        printed = subprocess.run(
            [sys.executable, "-m", "personaflow.cli", "runs", counted.name, "--summary"],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert printed.returncode == 0, printed.stderr
        assert "completed=1 failed=1 cancelled=1 expired=0" in printed.stdout
        assert "retry_wait=1" in printed.stdout and "diagnostics: none" in printed.stdout

        kafka.send("bindings", counted.name, None)  # unbound with runs open: the summary says so
        counted.wait_events("persona.binding.removed")
        unbound = view(worker, f"/personas/{counted.name}/runs/summary")
        assert unbound["bound"] is False and codes(unbound["diagnostics"]) == ["persona.unbound_with_runs"]
        for open_run in (flaky["run_id"], run_id):  # nothing left to change under other tests
            assert counted.run_control(open_run, "cancel")["status"] == "completed"

        silent.bind({**SELF_REPORTED, "lease_ttl_ms": TTL, "retry": {"max_attempts": 50, "backoff_ms": 500}})
        unanswered = silent.trigger("linear", "issue", {"issue_key": "S-9"})  # nobody reports
        status = silent.status(lambda s: "executor.silent" in codes(s.get("diagnostics")))
        [diagnostic] = status["diagnostics"]
        assert diagnostic["severity"] == "warning"
        assert "no executor answered a dispatch within lease_ttl_ms (1000 ms" in diagnostic["message"]
        assert "is an executor consuming persona.runs.dispatch?" in diagnostic["message"]
        assert silent.wait_events("persona.lease.expired")  # the status came with the lease's expiry
        summary = view(worker, f"/personas/{silent.name}/runs/summary")
        assert codes(summary["diagnostics"]) == ["executor.silent"] and summary["lease_expiries"] >= 1
        assert summary["unanswered_dispatch_since_ms"] == unanswered["at_ms"]
        assert summary["at_ms"] - summary["unanswered_dispatch_since_ms"] >= TTL
        assert summary["last_report_ms"] is None
        assert codes(view(worker, f"/personas/{silent.name}")["diagnostics"]) == ["executor.silent"]
        page = Cells()
        page.feed(chromium("--dump-dom", worker.settings.web_url + "/").stdout)
        shown = [row for row in page.tables["diagnostics"] if row.get("persona") == silent.name]
        assert [(row["severity"], row["code"]) for row in shown] == [("warning", "executor.silent")]
        assert shown[0]["message"].startswith("no executor answered a dispatch")  # as text
        assert silent.run_control(unanswered["run_id"], "cancel")["status"] == "completed"
    finally:
        counted.close()
        silent.close()
