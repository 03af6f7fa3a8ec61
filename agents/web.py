"""HTTP views on the worker's web port (aiohttp).

``GET /personas/{name}`` (and the persona's runs and their summary) is answered by the worker that owns the
persona's partition; any other worker forwards the request there (the assignment tells
every worker who owns what). ``GET /runs/{id}`` first asks the owner of the run id's
partition which persona the run belongs to (the run directory), then answers as
``/personas/{persona}/runs/{id}``. ``GET /personas`` gathers every worker's personas.
Views read committed state. ``/health`` answers while the process runs; ``/ready`` once
every assigned partition is recovered and processing; ``/metrics`` is Prometheus text;
``/audit`` the streams whose hash chain the audit consumer found broken, and its newest
signed checkpoint (what this worker read of ``persona.audit``).

With ``PERSONAFLOW_WEB_TOKEN`` set, every view but ``/health``, ``/ready`` and the dashboard's
page ``/`` (a shell without data: its fetches carry the token) wants ``Authorization: Bearer
<token>``, else answers 401; ``PERSONAFLOW_METRICS_OPEN`` leaves ``/metrics`` open too. Workers
send the token with the requests they forward to each other.

Paged views take ``limit`` (at most the view's maximum: a larger one is HTTP 400 naming
the maximum) and ``cursor`` (events, run lists) or ``start`` (transcript).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.runtime import Engine, wall_ms
from engine.state import PartitionStore
from streams.capability import Signer
from tables import runviews, summary
from tables.lifecycle import UnsettledSnapshot
from tables.runs import persona_of_run
from tables.runstate import RunState
from tables.state import PERSONAS, PersonaState, decode_head
from tables.status import status_json
from tables.store import Transaction
from tables.unsettled import partition_unsettled

from .auditwatch import AuditView
from .capability import bom_signature
from .dashboard import dashboard_html

FORWARDED = "X-Personaflow-Forwarded"
#: Paths answered without the token: probes carry none, and the dashboard's page holds no
#: data (it asks for the token and sends it with every fetch).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/"})
#: Dead letters ``/dead-letters`` shows.
RECENT_SHOWN = 50


def persona_status(store: PartitionStore, name: str) -> dict[str, Any] | None:
    state = PersonaState(Transaction(store), name)
    head = state.head()
    if head is None or not head.bound:
        return None
    return json.loads(status_json(state, head))


def _int(request: web.Request, name: str, default: int | None = None) -> Any:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"query parameter {name!r} must be an integer, got {raw!r}") from None


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), status=status, content_type="application/json")


def bearer_auth(token: str, public: frozenset[str]) -> Middleware:
    """Middleware: a request for any path outside ``public`` needs ``Authorization: Bearer
    <token>``, else it gets 401 (before routing, so an unknown path says nothing either)."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            # Constant time, so that the answer's timing says nothing about the token.
            if hmac.compare_digest(given.strip().encode(), expected):
                return await handler(request)
            error, challenge = "wrong bearer token", 'Bearer realm="personaflow", error="invalid_token"'
        else:
            error, challenge = (
                "this view needs the worker's token (Authorization: Bearer ...)",
                'Bearer realm="personaflow"',
            )
        return web.Response(
            body=json.dumps({"error": error}).encode(),
            status=401,
            content_type="application/json",
            headers={"WWW-Authenticate": challenge},
        )

    return check


class Views:
    def __init__(
        self, engine: Engine, signer: Signer | None = None, audit: Callable[[], AuditView] | None = None
    ) -> None:
        self.engine = engine
        self.signer = signer
        #: What the audit consumer reported (None: not watched, e.g. a test's bare views).
        self.audit_view = audit
        self.page = dashboard_html(engine.settings.trace_url)
        self.session: aiohttp.ClientSession | None = None
        token = engine.settings.web_token
        # Sent with every request to another worker (forwarded views, gathered lists): the
        # workers of one app share the token.
        self.peer_headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _local_store(self, key: str) -> PartitionStore | None:
        task = self.engine.tasks.get(self.engine.partition_of(key))
        return task.store if task is not None and task.active else None

    async def _routed(
        self,
        request: web.Request,
        key: str,
        local: Callable[[PartitionStore], Awaitable[web.Response] | web.Response],
        path_qs: str | None = None,
    ) -> web.Response:
        """Answer from this worker's store if it owns ``key``, else from the owner's (at
        ``path_qs``, default the request's own path)."""
        store = self._local_store(key)
        if store is not None:
            try:
                answer = local(store)
                return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[return-value]
            except runviews.LimitTooLarge as exc:
                return json_response({"error": str(exc), "requested": exc.requested, "max": exc.maximum}, 400)
            except ValueError as exc:
                return json_response({"error": str(exc)}, 400)
        owner = self.engine.owner_url(self.engine.partition_of(key))
        if owner is None or request.headers.get(FORWARDED) or owner.rstrip("/") == self.engine.settings.web_url:
            return json_response({"error": f"the partition of {key!r} is not served yet (rebalancing?)"}, 503)
        session = await self.client()
        try:
            async with session.get(
                owner.rstrip("/") + (path_qs or request.path_qs), headers={**self.peer_headers, FORWARDED: "1"}
            ) as response:
                return web.Response(body=await response.read(), status=response.status, content_type="application/json")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return json_response({"error": f"owner {owner} did not answer: {exc}"}, 502)

    async def persona(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def local(store: PartitionStore) -> web.Response:
            status = persona_status(store, name)
            if status is None:
                return json_response({"error": f"unknown persona {name!r}"}, 404)
            return json_response(status)

        return await self._routed(request, name, local)

    # ------------------------------------------------------------------- runs

    async def persona_runs(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def local(store: PartitionStore) -> web.Response:
            cursor = _int(request, "cursor")
            page = runviews.persona_runs(PersonaState(Transaction(store), name), cursor, _int(request, "limit", 20))
            if page is None:
                return json_response({"error": f"unknown persona {name!r}"}, 404)
            return json_response(page)

        return await self._routed(request, name, local)

    async def persona_runs_summary(self, request: web.Request) -> web.Response:
        """``/personas/{name}/runs/summary``: counts by status, spend, retries, expiries,
        preemptions, the queue and the diagnostics, at this worker's wall clock."""
        name = request.match_info["name"]

        def local(store: PartitionStore) -> web.Response:
            answer = summary.summary(PersonaState(Transaction(store), name), wall_ms())
            if answer is None:
                return json_response({"error": f"unknown persona {name!r}"}, 404)
            return json_response(answer)

        return await self._routed(request, name, local, f"/personas/{name}/runs/summary")

    async def persona_run(self, request: web.Request) -> web.Response:
        """``/personas/{name}/runs/{run_id}[/events|/transcript]``."""
        info = request.match_info
        return await self._run_view(request, info["name"], info["run_id"], info.get("view"))

    async def _run_view(self, request: web.Request, name: str, run_id: str, view: str | None) -> web.Response:
        def local(store: PartitionStore) -> web.Response:
            state = RunState(PersonaState(Transaction(store), name))
            if view == "events":
                answer = runviews.run_events(state, run_id, _int(request, "cursor", 1), _int(request, "limit", 50))
            elif view == "transcript":
                answer = runviews.transcript(state, run_id, _int(request, "start", 0), _int(request, "limit", 50))
            elif view == "bom":
                answer = self._bom(state, run_id)
            else:
                answer = runviews.run_detail(state, run_id)
            if answer is None:
                return json_response({"error": f"unknown run {run_id!r} of persona {name!r}"}, 404)
            return json_response(answer)

        path = f"/personas/{name}/runs/{run_id}" + (f"/{view}" if view else "")
        query = request.query_string
        return await self._routed(request, name, local, path + (f"?{query}" if query else ""))

    def _bom(self, state: RunState, run_id: str) -> dict[str, Any] | None:
        """The run's ``run.bom`` event with its signature: the worker signs it again as it
        did when it was published (Ed25519 is deterministic: the same bytes)."""
        run = state.run(run_id)
        if run is None:
            return None
        for seq in range(run.seq, max(run.seq - 64, 0), -1):  # the BOM follows the terminal event
            raw = state.event(run, seq)
            event = json.loads(raw) if raw is not None else None
            if event is not None and event.get("kind") == "run.bom":
                signature = None if self.signer is None else bom_signature(event["payload"], self.signer)
                return {"run_id": run_id, "event": event, "bom": event["payload"], "signature": signature}
        return {"run_id": run_id, "status": run.status, "bom": None, "signature": None}

    async def run_persona(self, request: web.Request) -> web.Response:
        """``/runs/{run_id}/persona``: the run directory's answer."""
        run_id = request.match_info["run_id"]

        def local(store: PartitionStore) -> web.Response:
            persona = persona_of_run(Transaction(store), run_id)
            if persona is None:
                return json_response({"error": f"unknown run {run_id!r}"}, 404)
            return json_response({"run_id": run_id, "persona": persona})

        return await self._routed(request, run_id, local, f"/runs/{run_id}/persona")

    async def run(self, request: web.Request) -> web.Response:
        """``/runs/{run_id}[/events|/transcript]``: find the persona in the run directory,
        then answer as the persona's run view."""
        run_id, view = request.match_info["run_id"], request.match_info.get("view")
        found = await self.run_persona(request)
        if found.status != 200:
            return found
        persona = json.loads(found.body)["persona"]  # type: ignore[arg-type]
        return await self._run_view(request, persona, run_id, view)

    async def _peers(self, path: str) -> list[Any]:
        """The answers of every other worker of the app to ``path`` (``local=1`` added)."""
        me = self.engine.settings.web_url.rstrip("/")
        peers = sorted({url.rstrip("/") for url in self.engine.assignor.owners.values()} - {me})
        session = await self.client()
        answers = []
        for url in peers:
            try:
                async with session.get(
                    f"{url}{path}{'&' if '?' in path else '?'}local=1", headers=self.peer_headers
                ) as response:
                    if response.status != 200:  # an error body is not a list of personas
                        continue
                    answers.append(json.loads(await response.read()))
            except (TimeoutError, aiohttp.ClientError, ValueError):
                continue  # a worker leaving: its partitions move and show up on the next ask
        return answers

    def _active_stores(self) -> list[PartitionStore]:
        return [task.store for task in list(self.engine.tasks.values()) if task.active]

    async def personas(self, request: web.Request) -> web.Response:
        found: dict[str, Any] = {}
        for store in self._active_stores():
            for name, raw in list(store.items(PERSONAS)):
                if decode_head(raw).bound:
                    status = persona_status(store, name)
                    if status is not None:
                        found[name] = status
        if request.query.get("local") != "1":
            for answer in await self._peers("/personas"):
                found.update(answer)
        return json_response(dict(sorted(found.items())))

    async def unsettled(self, request: web.Request) -> web.Response:
        """``/unsettled[?persona=]``: unsettled work of every worker's partitions, sorted by
        ``queued_at_ms`` then ``id``, with ``counts`` and the one-line ``summary``."""
        persona = request.query.get("persona") or None
        try:
            limit = _int(request, "limit", 1000)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        now = wall_ms()
        snapshot = UnsettledSnapshot()
        for store in self._active_stores():
            snapshot.extend(partition_unsettled(store, now, persona=persona, limit=limit))
        if request.query.get("local") != "1":
            query = f"/unsettled?limit={limit}" + (f"&persona={persona}" if persona else "")
            for answer in await self._peers(query):
                snapshot.extend(UnsettledSnapshot.from_json(answer))
        snapshot.sort()
        return json_response(
            {**snapshot.to_json(), "counts": snapshot.counts_json(), "summary": snapshot.summary(), "at_ms": now}
        )

    async def dead_letters(self, request: web.Request) -> web.Response:
        """``/dead-letters``: the latest dead letters every worker published, newest first."""
        found: list[Any] = []
        for raw in list(self.engine.recent.get("dlq", ())):
            try:
                found.append(json.loads(raw or b"null"))
            except ValueError:
                continue
        if request.query.get("local") != "1":
            for answer in await self._peers("/dead-letters"):
                found.extend(answer)
        found = [letter for letter in found if isinstance(letter, dict)]
        found.sort(key=lambda letter: letter.get("at_ms") or 0, reverse=True)
        return json_response(found[:RECENT_SHOWN])

    async def audit(self, request: web.Request) -> web.Response:
        """``/audit``: the streams whose hash chain the audit consumer found broken, and its
        newest signed checkpoint (from ``persona.audit``; every worker reads all of it)."""
        if self.audit_view is None:
            return json_response({"watched": False, "broken": [], "broken_total": 0, "checkpoint": None})
        return json_response({"watched": True, **self.audit_view().to_json()})

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=self.page, content_type="text/html")

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "app": self.engine.settings.app_id, "ready": self.engine.ready})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.engine.ready
        return json_response({"ready": ready, "partitions": sorted(self.engine.tasks)}, 200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.engine.metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )


def application(
    engine: Engine, signer: Signer | None = None, audit: Callable[[], AuditView] | None = None
) -> tuple[web.Application, Views]:
    """The worker's HTTP views (``audit``: the current view of ``persona.audit``)."""
    views = Views(engine, signer, audit)
    settings = engine.settings
    middlewares: list[Middleware] = []
    if settings.web_token:
        public = PUBLIC_PATHS | ({"/metrics"} if settings.metrics_open else set())
        middlewares.append(bearer_auth(settings.web_token, public))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/personas", views.personas)
    app.router.add_get("/unsettled", views.unsettled)
    app.router.add_get("/dead-letters", views.dead_letters)
    app.router.add_get("/audit", views.audit)
    app.router.add_get("/", views.dashboard)
    app.router.add_get("/personas/{name}", views.persona)
    app.router.add_get("/personas/{name}/runs", views.persona_runs)
    app.router.add_get("/personas/{name}/runs/summary", views.persona_runs_summary)  # before {run_id}
    app.router.add_get("/personas/{name}/runs/{run_id}", views.persona_run)
    app.router.add_get("/personas/{name}/runs/{run_id}/{view:events|transcript|bom}", views.persona_run)
    app.router.add_get("/runs/{run_id}", views.run)
    app.router.add_get("/runs/{run_id}/persona", views.run_persona)
    app.router.add_get("/runs/{run_id}/{view:events|transcript|bom}", views.run)
    return app, views
