"""``personaflow demo``: a broker, a worker and a short scenario, printed readably.

Everything it starts it also stops, so ``make run`` leaves no process behind.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable

import click

from . import render
from .client import Client
from .embedded import EmbeddedBroker, free_port
from .kafka import ensure_topics
from .process import WorkerProcess
from .settings import Settings

PERSONA = "merge_captain"


@contextlib.asynccontextmanager
async def demo_cluster(settings: Settings, workdir: Path, say: Callable[[str], None]) -> AsyncIterator[tuple[Settings, Client, WorkerProcess]]:
    """A broker (the configured one, else a fresh embedded one) and one worker."""
    broker = None
    overrides: dict[str, object] = {"data_dir": workdir, "web_port": free_port()}
    if settings.bootstrap_servers:
        tag = uuid.uuid4().hex[:6]
        overrides.update(topic_prefix=f"{settings.topic_prefix}demo-{tag}.", app_id=f"personaflow-demo-{tag}")
        bootstrap = settings.bootstrap_servers
        say(f"using Kafka at {bootstrap} (topic prefix {overrides['topic_prefix']})")
    else:
        broker = EmbeddedBroker(workdir)
        bootstrap = broker.start().bootstrap
        say(f"embedded broker (Tansu) on {bootstrap}")
    demo_settings = settings.with_overrides(**overrides)
    worker = WorkerProcess(demo_settings, workdir / "logs")
    client = Client(demo_settings, bootstrap)
    try:
        await ensure_topics(demo_settings, bootstrap)
        await client.start()
        worker.spawn()
        say(f"worker starting (web {demo_settings.web_url}, log {worker.log_path})")
        await worker.wait_ready(client)
        say("worker ready")
        yield demo_settings, client, worker
    finally:
        await client.stop()
        worker.stop()
        if broker is not None:
            broker.stop()
        say("stopped worker and broker")


async def scenario(client: Client, say: Callable[[str], None]) -> None:
    inbox = await client.tail("persona_inbox", from_beginning=True)
    dlq = await client.tail("dlq", from_beginning=True)
    run = uuid.uuid4().hex[:6]

    def trigger(number: str) -> dict:
        return {"request_id": f"demo-{run}-pr-{number}", "persona": PERSONA, "provider": "github",
                "kind": "pull_request", "metadata": {"repository": "burin-labs/harn", "number": number},
                "cost": {"cost_usd": 0.01, "tokens": 10}}

    def control(action: str) -> dict:
        return {"command_id": f"demo-{run}-{action}", "persona": PERSONA, "action": action, "actor": "demo"}

    await client.send("triggers", PERSONA, trigger("462"))
    await client.send("control", PERSONA, control("pause"))
    await client.send("triggers", PERSONA, trigger("463"))
    await client.send("control", PERSONA, control("resume"))
    await client.send("triggers", PERSONA, b"{not json")
    await inbox.until(lambda seen: sum(1 for r in seen if r.key == PERSONA) >= 4, 60, "4 inbox records")
    await dlq.until(lambda seen: any(r.key == PERSONA for r in seen), 60, "a dead letter")
    say("-- persona inbox (validated input, keyed by persona)")
    for record in inbox.seen:
        if record.key == PERSONA:
            say("  " + render.line("persona_inbox", record))
    say("-- persona.dlq")
    for record in dlq.seen:
        say("  " + render.line("dlq", record))


async def run_demo(settings: Settings, say: Callable[[str], None] = click.echo) -> None:
    with tempfile.TemporaryDirectory(prefix="personaflow-demo-") as tmp:
        async with demo_cluster(settings, Path(tmp), say) as (_, client, _worker):
            await scenario(client, say)
