"""The web port with ``PERSONAFLOW_WEB_TOKEN``: every view of the app's router but ``/health``,
``/ready`` and the dashboard's page answers 401 without the token (or with a wrong one) and
200 with it, on either of two workers, so that every routed view is also answered through a
forward to its owner; the command line sends the token from the environment.

Two workers of a pipeline of their own (topic prefix and consumer group) on the session
broker, so their token and rebalances do not touch the session worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.web import FORWARDED, application
from engine.publish import Partitioner
from engine.runtime import Engine
from personaflow.embedded import free_port
from personaflow.process import settings_env
from streams.settings import Settings

from ..support.cluster import SyncWorker, own_pipeline
from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually

TOKEN = secrets.token_urlsafe(24)
#: Views a probe or a browser reaches without the token (the page holds no data).
PUBLIC = {"/health", "/ready", "/"}


def routes(settings: Settings) -> list[tuple[str, Any]]:
    """(method, resource) of every route the worker's app serves (HEAD is GET's twin)."""
    app, _ = application(cast(Engine, SimpleNamespace(settings=settings)))
    return [(route.method, route.resource) for route in app.router.routes() if route.method != "HEAD"]


def concrete_paths(resource: Any, values: dict[str, list[str]]) -> list[str]:
    """Every path of ``resource`` made from the candidate ``values`` of its parameters that
    the route's pattern accepts (``{view:events|transcript}`` gives two)."""
    info = resource.get_info()
    if "path" in info:
        return [info["path"]]
    formatter, pattern = info["formatter"], info["pattern"]
    names = re.findall(r"{(\w+)}", formatter)
    missing = [name for name in names if name not in values]
    assert not missing, f"{resource.canonical}: give this test values for {missing}"
    paths = [
        formatter.format(**dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*(values[n] for n in names))
    ]
    return [path for path in paths if pattern.fullmatch(path)]


def get(url: str, token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, errors included."""
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def names_on_every_partition(prefix: str, partitions: int) -> list[str]:
    """Persona names whose keys fall on each partition once, so each worker owns some."""
    partition_of, found = Partitioner(partitions), {}
    for n in itertools.count():
        found.setdefault(partition_of(f"{prefix}-{n}".encode()), f"{prefix}-{n}")
        if len(found) == partitions:
            return [found[p] for p in sorted(found)]
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def token_workers(settings, broker, data_dir) -> Iterator[tuple[Settings, Any, list[SyncWorker]]]:
    with own_pipeline(settings, broker, "auth", web_token=TOKEN) as (base, kafka):
        workers = [
            SyncWorker(base.with_overrides(web_port=free_port()), kafka, data_dir / f"logs-{base.app_id}-{n}")
            for n in (1, 2)
        ]
        try:
            for worker in workers:
                worker.start()
            yield base, kafka, workers
        finally:
            for worker in workers:
                worker.stop()


@pytest.mark.broker
def test_every_view_but_health_ready_and_the_page_answers_401_without_the_token_and_200_with_it_on_both_workers(
    token_workers, persona_name
):
    base, kafka, workers = token_workers
    probes = [PersonaProbe(kafka, name) for name in names_on_every_partition(persona_name[:50], base.partitions)]
    try:
        for probe in probes[1:]:
            probe.bind({})
        runner = probes[0]
        runner.bind(SELF_REPORTED)
        run = runner.trigger("github", "pull_request", {"repository": "r", "number": "1"})
        runner.report(run["run_id"], run["lease"]["id"], "usage", tokens=5, cost_usd=0.01)
        runner.wait_run_events(run["run_id"], "run.usage")
        everyone = {probe.name for probe in probes}

        def owned() -> list[set[str]] | None:
            """Each worker's own personas, once both are ready and own some of them."""
            if any(get(w.settings.web_url + "/ready")[0] != 200 for w in workers):
                return None
            local = [set(json.loads(get(w.settings.web_url + "/personas?local=1", TOKEN)[2])) for w in workers]
            return local if all(local) and local[0] | local[1] == everyone else None

        eventually(owned, 60, "both workers ready, each owning some of the personas")

        values = {"name": [runner.name], "run_id": [run["run_id"]], "view": ["events", "transcript", "nothing"]}
        checked = set()
        for method, resource in routes(base):
            paths = concrete_paths(resource, values)
            assert paths, f"no path of {resource.canonical} to ask: give this test its parameters"
            for path, worker in itertools.product(paths, workers):
                url = worker.settings.web_url + path
                if method != "GET":  # refused before any handler runs
                    request = urllib.request.Request(url, method=method)
                    with pytest.raises(urllib.error.HTTPError) as refused:
                        urllib.request.urlopen(request, timeout=10)
                    assert refused.value.code == 401, (method, path)
                    continue
                if path in PUBLIC:
                    assert get(url)[0] == 200, path
                    continue
                for token in (None, "not-" + TOKEN):
                    status, headers, body = get(url, token)
                    assert status == 401, (path, token is not None, status)
                    assert headers["WWW-Authenticate"].startswith("Bearer"), path
                    assert "token" in json.loads(body)["error"], path
                status, _, body = get(url, TOKEN)
                assert status == 200, (path, worker.settings.web_url, body[:300])
                checked.add(resource.canonical)
        assert {"/personas", "/personas/{name}/runs/{run_id}/{view}", "/runs/{run_id}/persona"} <= checked

        for probe in probes:  # forwarded to the owner with the token: both answer with its data
            answers = [json.loads(get(w.settings.web_url + f"/personas/{probe.name}", TOKEN)[2]) for w in workers]
            assert answers[0] == answers[1] and answers[0]["name"] == probe.name
        for worker in workers:  # gathered from the other worker with the token
            assert set(json.loads(get(worker.settings.web_url + "/personas", TOKEN)[2])) == everyone
        # The forwarding header lets nothing through without the token.
        assert get(workers[0].settings.web_url + f"/personas/{runner.name}", headers={FORWARDED: "1"})[0] == 401
    finally:
        for probe in probes:
            probe.close()


@pytest.mark.broker
def test_the_command_line_sends_the_token_from_the_environment(token_workers, persona_name):
    base, kafka, workers = token_workers
    probe = PersonaProbe(kafka, persona_name)
    try:
        probe.bind({})
        env = settings_env(workers[0].settings)
        assert env["PERSONAFLOW_WEB_TOKEN"] == TOKEN

        def personaflow(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "personaflow.cli", *args],
                env=environment,
                capture_output=True,
                text=True,
                timeout=90,
            )

        shown = personaflow(env, "status", probe.name, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["name"] == probe.name
        runs = personaflow(env, "runs", probe.name, "--json")
        assert runs.returncode == 0, runs.stderr
        assert json.loads(runs.stdout)["total"] == 0

        without = {key: value for key, value in env.items() if key != "PERSONAFLOW_WEB_TOKEN"}
        refused = personaflow(without, "runs", probe.name)
        assert refused.returncode == 1
        assert "asks for its token: set PERSONAFLOW_WEB_TOKEN" in refused.stderr
        wrong = personaflow({**env, "PERSONAFLOW_WEB_TOKEN": "not-" + TOKEN}, "status", probe.name)
        assert wrong.returncode == 1  # said, not read around through the status topic
        assert "refused the token in PERSONAFLOW_WEB_TOKEN" in wrong.stderr and TOKEN not in wrong.stderr
    finally:
        probe.close()


def serve(settings: Settings, *paths: str, token: str | None = None) -> list[int]:
    """Statuses of GETs of ``paths`` on the views of a worker with ``settings`` (no broker:
    only views that touch no partition)."""
    engine = SimpleNamespace(settings=settings, metrics=SimpleNamespace(exposition=lambda: b""))

    async def ask() -> list[int]:
        app, views = application(cast(Engine, engine))
        async with TestClient(TestServer(app)) as client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            statuses = [(await client.get(path, headers=headers)).status for path in paths]
        await views.close()
        return statuses

    return asyncio.run(ask())


def test_metrics_answer_without_the_token_only_when_metrics_are_open():
    closed = Settings(PERSONAFLOW_WEB_TOKEN=TOKEN)  # type: ignore[call-arg]
    assert serve(closed, "/metrics", "/") == [401, 200]
    assert serve(closed, "/metrics", token=TOKEN) == [200]
    opened = Settings(PERSONAFLOW_WEB_TOKEN=TOKEN, PERSONAFLOW_METRICS_OPEN="1")  # type: ignore[call-arg]
    assert serve(opened, "/metrics", "/dead-letters") == [200, 401]


def test_without_a_token_the_views_ask_for_none_and_the_port_binds_loopback():
    unset = Settings(PERSONAFLOW_WEB_TOKEN=" ")  # type: ignore[call-arg]
    assert unset.web_token is None and unset.web_bind == "127.0.0.1"
    assert serve(unset, "/metrics") == [200]
    assert TOKEN not in repr(Settings(PERSONAFLOW_WEB_TOKEN=TOKEN))  # type: ignore[call-arg]
