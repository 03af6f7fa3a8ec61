"""HTTP views on the worker's web port.

``GET /personas/{name}`` is answered by the worker that owns the persona's partition
(other workers forward the request there); ``GET /personas`` gathers every worker's
personas. Statuses are computed from committed table state at each persona's clock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from streams.app import Pipeline
from tables.state import PERSONAS, PersonaHead, PersonaState, load
from tables.status import project

from .persona import PersonaStore


def register(pipeline: Pipeline, *, ingress_stats: faust.Table, store: PersonaStore | None = None) -> None:
    app = pipeline.app
    inbox = pipeline.topic("persona_inbox")

    def local_status(name: str) -> dict[str, Any] | None:
        assert store is not None
        head = load(PersonaHead, store.tables[PERSONAS].get(name))
        if head is None or not head.bound:
            return None
        return project(PersonaState(store.transaction(name), name), head).model_dump(mode="json")

    def owned_here(name: str) -> bool:
        partition = app.producer.key_partition(inbox.get_topic_name(), name.encode()).partition
        return any(tp.topic == inbox.get_topic_name() and tp.partition == partition
                   for tp in app.assignor.assigned_actives())

    @app.page("/ingress/stats")
    class IngressStats(View):
        """Per input partition: last offset handled, records accepted and dead-lettered."""

        async def get(self, request: Request) -> Response:
            return self.json(dict(sorted(ingress_stats.items())))

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "app": pipeline.settings.app_id})

    if store is None:
        return

    @app.page("/personas/{name}")
    class PersonaView(View):
        """One persona's status, from the worker that owns it."""

        async def get(self, request: Request, name: str) -> Response:
            try:
                return await app.router.route_topic_req(inbox, name, self.web, request)
            except SameNode:
                status = local_status(name)
                if status is None:
                    return self.json({"error": f"unknown persona {name!r}"}, status=404)
                return self.json(status)

    @app.page("/personas")
    class PersonasView(View):
        """Every persona's status; ``?local=1`` limits the answer to this worker's partitions."""

        async def get(self, request: Request) -> Response:
            assert store is not None
            mine = {name: local_status(name) for name in list(store.tables[PERSONAS].keys()) if owned_here(name)}
            found = {name: status for name, status in mine.items() if status is not None}
            if request.query.get("local") != "1":
                for url in await self._peers():
                    try:
                        async with app.http_client.get(f"{url.rstrip('/')}/personas?local=1") as response:
                            found.update(json.loads(await response.text()))
                    except (OSError, asyncio.TimeoutError, ValueError):
                        continue
            return self.json(dict(sorted(found.items())))

        async def _peers(self) -> list[str]:
            me = str(app.conf.canonical_url).rstrip("/")
            hosts = set(app.router.tables_metadata()) | set(app.router.external_topics_metadata())
            return sorted(str(host) for host in hosts if str(host).rstrip("/") != me)
