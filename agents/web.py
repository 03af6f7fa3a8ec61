"""HTTP views on the worker's web port (aiohttp).

``GET /personas/{name}`` is answered by the worker that owns the persona's partition;
any other worker forwards the request there (the assignment tells every worker who owns
what). ``GET /personas`` gathers every worker's personas. Views read committed state.
``/health`` answers while the process runs; ``/ready`` once every assigned partition is
recovered and processing; ``/metrics`` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from engine.runtime import Engine
from engine.state import PartitionStore
from tables.state import PERSONAS, PersonaState, decode_head
from tables.status import status_json
from tables.store import Transaction

FORWARDED = "X-Personaflow-Forwarded"


def persona_status(store: PartitionStore, name: str) -> dict[str, Any] | None:
    state = PersonaState(Transaction(store), name)
    head = state.head()
    if head is None or not head.bound:
        return None
    return json.loads(status_json(state, head))


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), status=status, content_type="application/json")


class Views:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session: aiohttp.ClientSession | None = None

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

    async def _routed(self, request: web.Request, key: str,
                      local: Callable[[PartitionStore], Awaitable[web.Response] | web.Response]) -> web.Response:
        """Answer from this worker's store if it owns ``key``, else from the owner's."""
        store = self._local_store(key)
        if store is not None:
            answer = local(store)
            return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[return-value]
        owner = self.engine.owner_url(self.engine.partition_of(key))
        if owner is None or request.headers.get(FORWARDED) or owner.rstrip("/") == self.engine.settings.web_url:
            return json_response({"error": f"the partition of {key!r} is not served yet (rebalancing?)"}, 503)
        session = await self.client()
        try:
            async with session.get(owner.rstrip("/") + request.path_qs, headers={FORWARDED: "1"}) as response:
                return web.Response(body=await response.read(), status=response.status,
                                    content_type="application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return json_response({"error": f"owner {owner} did not answer: {exc}"}, 502)

    async def persona(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def local(store: PartitionStore) -> web.Response:
            status = persona_status(store, name)
            if status is None:
                return json_response({"error": f"unknown persona {name!r}"}, 404)
            return json_response(status)

        return await self._routed(request, name, local)

    async def personas(self, request: web.Request) -> web.Response:
        found: dict[str, Any] = {}
        for task in list(self.engine.tasks.values()):
            if not task.active:
                continue
            for name, raw in list(task.store.items(PERSONAS)):
                head = decode_head(raw)
                if head.bound:
                    status = persona_status(task.store, name)
                    if status is not None:
                        found[name] = status
        if request.query.get("local") != "1":
            me = self.engine.settings.web_url.rstrip("/")
            peers = sorted({url.rstrip("/") for url in self.engine.assignor.owners.values()} - {me})
            session = await self.client()
            for url in peers:
                try:
                    async with session.get(f"{url}/personas?local=1") as response:
                        found.update(json.loads(await response.read()))
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    continue
        return json_response(dict(sorted(found.items())))

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "app": self.engine.settings.app_id, "ready": self.engine.ready})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.engine.ready
        return json_response({"ready": ready, "partitions": sorted(self.engine.tasks)}, 200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.engine.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def application(engine: Engine) -> tuple[web.Application, Views]:
    views = Views(engine)
    app = web.Application()
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/personas", views.personas)
    app.router.add_get("/personas/{name}", views.persona)
    return app, views
