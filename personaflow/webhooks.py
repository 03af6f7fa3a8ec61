"""``personaflow webhooks``: provider webhooks in, triggers out (aiohttp).

``POST /webhooks/{provider}/{persona}`` for ``github``, ``slack`` and ``linear``. What is
verified and how a delivery maps to a ``TriggerRequest`` is :mod:`streams.webhooks`;
this module reads the body (bounded), publishes the request to ``persona.triggers``
keyed by the persona as ``personaflow trigger`` does, and answers ``202
{"request_id"}`` only once the broker has acknowledged it. A delivery that cannot be
published is answered 503, so the provider delivers it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError

from engine.kafka import BrokerAddress
from streams import webhooks
from streams.records import TriggerRequest, is_persona_name
from streams.settings import Settings

from .client import Client

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6070
MAX_BYTES_ENV = "PERSONAFLOW_WEBHOOK_MAX_BYTES"
DEFAULT_MAX_BYTES = 1024 * 1024

log = logging.getLogger("personaflow.webhooks")

Publisher = Callable[[TriggerRequest], Awaitable[Any]]


@dataclass(frozen=True)
class WebhookConfig:
    """The providers' signing secrets (a provider without one accepts nothing) and the
    largest body read."""

    secrets: Mapping[str, bytes]
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WebhookConfig:
        secrets = {
            provider: value.encode()
            for provider, name in webhooks.SECRET_ENV.items()
            if (value := environ.get(name, "").strip())
        }
        raw = environ.get(MAX_BYTES_ENV, "").strip()
        if not raw:
            return cls(secrets)
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{MAX_BYTES_ENV}: a positive number of bytes, got {raw!r}")
        return cls(secrets, int(raw))


def json_response(value: Any, status: int) -> web.Response:
    return web.Response(body=json.dumps(value).encode(), status=status, content_type="application/json")


async def read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes (a declared
    length is checked before anything is read; a chunked body is read up to the limit)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def make_app(config: WebhookConfig, publish: Publisher) -> web.Application:
    """The webhook routes over ``publish`` (which returns once the broker acknowledged)."""

    async def receive(request: web.Request) -> web.Response:
        provider, persona = request.match_info["provider"], request.match_info["persona"]
        try:
            outcome = await _decide(request, config, provider, persona)
        except webhooks.Refused as refused:
            log.warning("webhook %s/%s refused (%d): %s", provider, persona, refused.status, refused.reason)
            return json_response({"error": refused.reason}, refused.status)
        if isinstance(outcome, webhooks.Reply):
            return json_response(outcome.body, 200)
        try:
            await publish(outcome.request)
        except (KafkaError, OSError) as exc:  # OSError includes TimeoutError
            log.error("webhook %s/%s: could not publish %s: %s", provider, persona, outcome.request.request_id, exc)
            return json_response({"error": "could not publish the trigger; deliver again later"}, 503)
        log.info("webhook %s/%s: published %s", provider, persona, outcome.request.request_id)
        return json_response({"request_id": outcome.request.request_id}, 202)

    async def health(request: web.Request) -> web.Response:
        return json_response({"ok": True}, 200)

    # Bodies are read by read_bounded; the app's own limit is the same, should anything
    # read one with request.read().
    app = web.Application(client_max_size=config.max_bytes)
    app.router.add_post("/webhooks/{provider}/{persona}", receive)
    app.router.add_get("/health", health)
    return app


async def _decide(request: web.Request, config: WebhookConfig, provider: str, persona: str) -> webhooks.Outcome:
    # Cheap refusals first: nothing of the body is read for them.
    if provider not in webhooks.PROVIDERS:
        raise webhooks.Refused(404, f"unknown provider {provider!r}; one of {', '.join(webhooks.PROVIDERS)}")
    if not is_persona_name(persona):
        raise webhooks.Refused(404, f"{persona!r} is not a persona name")
    secret = config.secrets.get(provider)
    if not secret:
        raise webhooks.Refused(401, f"no secret configured for {provider}: set {webhooks.SECRET_ENV[provider]}")
    body = await read_bounded(request, config.max_bytes)
    if body is None:
        raise webhooks.Refused(413, f"body over {config.max_bytes} bytes ({MAX_BYTES_ENV})")
    return webhooks.handle(provider, persona, request.headers, body, secret, int(time.time() * 1000))


class WebhookServer:
    """The webhook app on ``host:port`` with its own producer; ``port`` 0 picks a free one."""

    def __init__(self, settings: Settings, broker: BrokerAddress, config: WebhookConfig, host: str, port: int) -> None:
        self.settings = settings
        self.broker = broker
        self.client: Client | None = None
        self.config = config
        self.host = host
        self.port = port
        self.runner: web.AppRunner | None = None

    async def publish(self, request: TriggerRequest) -> None:
        # Exactly as `personaflow trigger`: persona.triggers, keyed by the persona; the
        # send returns once the broker acknowledged (acks=all).
        assert self.client is not None, "start() the server first"
        await self.client.send("triggers", request.persona, request)

    async def start(self) -> int:
        """Start the producer and the listener; return the port listened on."""
        # Made here, not in __init__: the producer wants a running loop when it is made.
        self.client = await Client(self.settings, self.broker).start()
        runner = web.AppRunner(make_app(self.config, self.publish), access_log=log)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self.runner = runner
        self.port = runner.addresses[0][1]  # the port bound when 0 was asked for
        return self.port

    async def stop(self) -> None:
        try:
            if self.runner is not None:
                await self.runner.cleanup()
        finally:
            if self.client is not None:
                await self.client.stop()


async def run_webhooks(
    settings: Settings,
    broker: BrokerAddress,
    config: WebhookConfig,
    host: str,
    port: int,
    announce: Callable[[str], None],
) -> None:
    """Serve until SIGTERM or SIGINT, then stop listening and close the producer."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = WebhookServer(settings, broker, config, host, port)
    try:
        bound = await server.start()
        providers = ", ".join(sorted(config.secrets)) or "none (set PERSONAFLOW_WEBHOOK_SECRET_*)"
        announce(
            f"webhooks on http://{host}:{bound}/webhooks/{{provider}}/{{persona}}; providers with a secret: {providers}"
        )
        await stop.wait()
    finally:
        await server.stop()
