"""HTTP views on the worker's web port."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from streams.app import Pipeline


def register(pipeline: Pipeline, *, ingress_stats: faust.Table) -> None:
    app = pipeline.app

    @app.page("/ingress/stats")
    class IngressStats(View):
        """Per input partition: last offset handled, records accepted and dead-lettered."""

        async def get(self, request: Request) -> Response:
            rows: dict[str, Any] = {key: value for key, value in ingress_stats.items()}
            return self.json(dict(sorted(rows.items())))

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "app": pipeline.settings.app_id})
