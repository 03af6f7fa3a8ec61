"""The dashboard (``/``) in headless Chromium against the session worker: its numbers
are the ones ``/personas`` and ``/unsettled`` serve; a screenshot is written to
``build/test-artifacts/dashboard.png``. Against a worker with a token, the page asks for
it once and sends it with every fetch (Chromium driven over its DevTools protocol)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from personaflow.embedded import free_port

from ..support.cluster import TRACE_URL, SyncWorker, own_pipeline
from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "test-artifacts" / "dashboard.png"


HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium_binary() -> str:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is missing: `make browser` installs it"
    return binary


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Debian chromium (``make test`` installs it), JavaScript given 5 s of virtual time."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium_binary(), *HEADLESS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


class Tab:
    """One page of a headless chromium, driven over the DevTools protocol (a WebSocket):
    evaluate JavaScript in it and type into it as a person would."""

    def __init__(self, websocket_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)
        self.session = self.loop.run_until_complete(self._open())
        self.socket = self.loop.run_until_complete(self.session.ws_connect(websocket_url, max_msg_size=0))

    async def _open(self) -> aiohttp.ClientSession:  # aiohttp wants a running loop at construction
        return aiohttp.ClientSession()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        async def ask() -> dict[str, Any]:
            sent = next(self.ids)
            await self.socket.send_json({"id": sent, "method": method, "params": params})
            while True:  # events of the page come in between
                answer = await asyncio.wait_for(self.socket.receive_json(), 30)
                if answer.get("id") == sent:
                    assert "error" not in answer, answer
                    return answer["result"]

        return self.loop.run_until_complete(ask())

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def close(self) -> None:
        self.loop.run_until_complete(self.socket.close())
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


@contextlib.contextmanager
def browser_tab(url: str) -> Iterator[Tab]:
    """Headless chromium showing ``url``, with a :class:`Tab` on that page."""
    # Chromium's helper processes may still write to the profile for a moment after the
    # browser exits: stop the whole process group, and let a late file not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [chromium_binary(), *HEADLESS, f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        tab = None
        try:
            # Chromium writes the port it chose into the profile once it listens.
            active = Path(profile) / "DevToolsActivePort"
            port = eventually(lambda: active.exists() and active.read_text().split("\n")[0], 30, "DevTools port")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [target for target in json.loads(response.read()) if target["type"] == "page"]
            tab = Tab(pages[0]["webSocketDebuggerUrl"])
            yield tab
        finally:
            if tab is not None:
                tab.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


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


@pytest.fixture
def token_worker(settings, broker, data_dir):
    """A worker with a token, in a pipeline of its own (the session worker has none)."""
    with own_pipeline(settings, broker, "dash", web_token=secrets.token_urlsafe(24), web_port=free_port()) as (
        own,
        kafka,
    ):
        worker = SyncWorker(own, kafka, data_dir / f"logs-{own.app_id}")
        try:
            worker.start()
            yield worker, kafka
        finally:
            worker.stop()


def test_the_dashboard_asks_once_for_the_token_keeps_it_for_the_tab_and_sends_it_with_every_fetch(
    token_worker, persona_name
):
    worker, kafka = token_worker
    token = worker.settings.web_token
    probe = PersonaProbe(kafka, persona_name)
    try:
        probe.bind({"budget": {"daily_usd": 2.0}})
        probe.trigger("linear", "issue", {"issue_key": "T-1"}, cost={"cost_usd": 0.5, "tokens": 7})
        probe.status(lambda s: s["budget"]["spent_today_usd"] == 0.5)

        with browser_tab(worker.settings.web_url + "/") as tab:
            # The page comes without the token; its first fetch answers 401 and the form asks.
            login_shown = "document.getElementById('login')?.hidden === false"  # once the page is there
            eventually(lambda: tab.evaluate(login_shown), 30, "the login form")
            assert tab.evaluate("document.body.dataset.loaded") is None  # no data shown
            assert tab.evaluate("document.querySelectorAll('#personas tbody tr').length") == 0

            tab.type_into("#token", "not-" + token)
            tab.evaluate("document.querySelector('#login button').click()")
            asked_again = eventually(
                lambda: tab.evaluate(f"{login_shown} && document.getElementById('login-error').textContent"),
                30,
                "the form asking again",
            )
            assert asked_again == "wrong token"
            assert tab.evaluate("sessionStorage.getItem('personaflow.token')") is None  # refused: dropped

            tab.type_into("#token", token)
            tab.evaluate("document.querySelector('#login button').click()")
            eventually(lambda: tab.evaluate("document.body.dataset.loaded === '1'"), 30, "the data, with the token")
            page = Cells()
            page.feed(tab.evaluate("document.documentElement.outerHTML"))
            [row] = [row for row in page.tables["personas"] if row.get("persona") == probe.name]
            assert row["spent_today_usd"].startswith("$0.5000 / $2.0000")
            assert tab.evaluate("sessionStorage.getItem('personaflow.token')") == token
            assert tab.evaluate("document.getElementById('token').value") == ""

            # Asked once per tab: a reload finds the token in sessionStorage, no form.
            tab.evaluate("window.before_reload = true; location.reload()")
            eventually(
                lambda: tab.evaluate("!window.before_reload && document.body?.dataset.loaded === '1'"),
                30,
                "the data after a reload",
            )
            assert tab.evaluate(login_shown) is False
    finally:
        probe.close()


def test_a_run_opens_with_its_steps_as_a_timeline_and_its_trace_linked_to_the_tracing_ui(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    try:
        probe.bind(
            {
                **SELF_REPORTED,
                "policy": {"pack": "review", "rules": [{"match": {}, "effect": "allow", "reason": "reviewed"}]},
            }
        )
        run = probe.trigger("github", "pull_request", {"repository": "r", "number": "8"})
        run_id, lease = run["run_id"], run["lease"]["id"]
        trace_id = run["trace"]["traceparent"].split("-")[1]
        probe.report(run_id, lease, "started", executor={"id": "probe-1"}, model="model-a")
        probe.report(run_id, lease, "step_started", step_id="s1", name="plan")
        probe.report(run_id, lease, "step_completed", step_id="s1")
        probe.report(run_id, lease, "step_started", step_id="s2", name="act")
        probe.wait_run_events(run_id, "run.step_started", 2)

        with browser_tab(f"{worker.settings.web_url}/#run={run_id}") as tab:
            shown = (
                f"document.body?.dataset.run === {json.dumps(run_id)} || document.getElementById('error')?.textContent"
            )
            assert eventually(lambda: tab.evaluate(shown), 30, "the run") is True
            page = Cells()
            page.feed(tab.evaluate("document.documentElement.outerHTML"))
            timeline = page.tables["timeline"]
            assert [(r["step_id"], r["name"], r["ended"]) for r in timeline] == [
                ("s1", "plan", "completed"),
                ("s2", "act", "running"),
            ]
            assert tab.evaluate("document.getElementById('run-trace').textContent") == trace_id
            link = tab.evaluate("document.getElementById('run-trace').getAttribute('href')")
            assert link == TRACE_URL.replace("{trace_id}", trace_id)
            bars = tab.evaluate("[...document.querySelectorAll('#timeline .lane > span')].map(b => b.style.left)")
            assert len(bars) == 2 and float(bars[0].rstrip("%")) <= float(bars[1].rstrip("%"))
            assert [(r["boundary"], r["effect"], r["summary"]) for r in page.tables["policy"]] == [
                ("dispatch", "allow", "reviewed")
            ]
            assert [list(row) for row in page.tables["bom"]] == [["empty"]]  # not ended: no bill of materials yet

            probe.report(run_id, lease, "step_completed", step_id="s2")
            probe.report(run_id, lease, "completed")
            probe.wait_run_events(run_id, "run.bom")
            eventually(lambda: tab.evaluate("document.body.dataset.runEnded === '1'"), 30, "the bill of materials")
            page = Cells()
            page.feed(tab.evaluate("document.documentElement.outerHTML"))
            bom = {row["what"]: row["value"] for row in page.tables["bom"]}
            assert (bom["executors"], bom["models"], bom["status"]) == ("probe-1", "model-a", "completed")
            assert bom["signature"].startswith("signed, key ")
    finally:
        probe.close()
