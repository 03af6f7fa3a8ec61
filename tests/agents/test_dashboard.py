"""The dashboard (``/``) in headless Chromium against the session worker: its numbers
are the ones ``/personas`` and ``/unsettled`` serve; a screenshot is written to
``build/test-artifacts/dashboard.png``."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ..support.personas import SELF_REPORTED, PersonaProbe

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "test-artifacts" / "dashboard.png"


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Debian chromium (``make test`` installs it), JavaScript given 5 s of virtual time."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is missing: `make browser` installs it"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--hide-scrollbars",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


class Cells(HTMLParser):
    """Rows of the page's tables: {table id: [{data-field: text} with the row's data-*]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.table: str | None = None
        self.row: dict[str, str] | None = None
        self.field: str | None = None
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "body":
            self.body = attributes
        elif tag == "table":
            self.table = attributes.get("id")
            self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.row = {k[5:]: v for k, v in attributes.items() if k.startswith("data-")}
        elif tag == "td" and self.row is not None:
            self.field = attributes.get("data-field")
            self.row[self.field] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.field = None
        elif tag == "tr" and self.row is not None:
            if any(k for k in self.row if self.row[k] != "") and self.table:
                self.tables[self.table].append(self.row)
            self.row = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.row is not None and self.field is not None:
            self.row[self.field] += data


def test_the_dashboard_shows_personas_runs_and_unsettled_work_as_the_views_serve_them(worker, kafka, persona_name):
    spender, waiting, runner = (PersonaProbe(kafka, f"{persona_name}-{n}") for n in ("spend", "wait", "run"))
    try:
        spender.bind({"budget": {"daily_usd": 2.0, "hourly_usd": 1.0, "max_tokens": 1000}})
        spender.trigger("linear", "issue", {"issue_key": "D-1"}, cost={"cost_usd": 0.25, "tokens": 40})
        waiting.bind({})
        waiting.control("pause")
        waiting.trigger("linear", "issue", {"issue_key": "D-2"})
        waiting.trigger("linear", "issue", {"issue_key": "D-3"})
        runner.bind({**SELF_REPORTED, "run_limits": {"max_tokens": 500}})
        run = runner.trigger("github", "pull_request", {"repository": "r", "number": "5"})
        runner.report(run["run_id"], run["lease"]["id"], "usage", tokens=120, cost_usd=0.05)
        runner.wait_run_events(run["run_id"], "run.usage")
        waiting.status(lambda s: s["queued_events"] == 2)

        dom = chromium("--dump-dom", worker.settings.web_url + "/").stdout
        personas = json.loads(worker.get("/personas"))
        in_flight = json.loads(worker.get("/unsettled"))["in_flight_llm_calls"]
        page = Cells()
        page.feed(dom)
        assert page.body.get("data-loaded") == "1", dom[-2000:]

        rows = {row["persona"]: row for row in page.tables["personas"]}
        assert set(rows) == set(personas)  # every bound persona, nothing else
        for name, status in personas.items():
            assert (rows[name]["state"], int(rows[name]["queued"])) == (status["state"], status["queued_events"])
        assert rows[spender.name]["spent_today_usd"].startswith("$0.2500 / $2.0000")
        assert rows[spender.name]["spent_this_hour_usd"].startswith("$0.2500 / $1.0000")
        assert rows[spender.name]["tokens_today"].startswith("40 / 1000")
        assert int(rows[waiting.name]["queued"]) == 2 and rows[waiting.name]["state"] == "paused"

        runs = {row["run"]: row for row in page.tables["runs"]}
        assert set(runs) == {item["run_id"] for item in in_flight}
        mine = runs[run["run_id"]]
        assert (mine["persona"], mine["usage_tokens"].split(" / ")) == (runner.name, ["120", "500"])
        assert mine["lease_expires_in"].endswith(" s")

        unsettled_ids = {row["id"] for row in page.tables["unsettled"]}
        assert f"run://{runner.name}/{run['run_id']}" in unsettled_ids
        assert sum(1 for i in unsettled_ids if i.startswith(f"trigger://{waiting.name}/")) == 2

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        chromium(f"--screenshot={SCREENSHOT}", "--window-size=1400,1600", worker.settings.web_url + "/")
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        for probe in (spender, waiting, runner):
            probe.close()
