"""``personaflow demo``: a broker, a worker and a short scenario, printed readably.

Everything it starts it also stops, so ``make run`` leaves no process behind.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import click

from engine.kafka import BrokerAddress, ensure_topics
from streams.records import ControlCommand, PersonaBinding, TriggerRequest
from streams.settings import Settings

from . import ops, render
from .client import Client
from .embedded import EmbeddedBroker, free_port
from .process import ExecutorProcess, WorkerProcess

PERSONA = "merge_captain"


@contextlib.asynccontextmanager
async def demo_cluster(
    settings: Settings, workdir: Path, say: Callable[[str], None]
) -> AsyncIterator[tuple[Settings, Client, WorkerProcess]]:
    """A broker (the configured one, else a fresh embedded one), one worker and the
    reference executor."""
    broker = None
    overrides: dict[str, object] = {"data_dir": workdir, "web_port": free_port()}
    if settings.bootstrap_servers:
        tag = uuid.uuid4().hex[:6]
        overrides.update(topic_prefix=f"{settings.topic_prefix}demo-{tag}.", app_id=f"personaflow-demo-{tag}")
        address = BrokerAddress(settings.bootstrap_servers, embedded=False)
        say(f"using Kafka at {address.bootstrap} (topic prefix {overrides['topic_prefix']})")
    else:
        broker = EmbeddedBroker(workdir)
        address = broker.start()
        say(f"embedded broker (Tansu) on {address.bootstrap}")
    demo_settings = settings.with_overrides(**overrides)
    worker = WorkerProcess(demo_settings, workdir / "logs")
    executor = ExecutorProcess(demo_settings, workdir / "logs", group=f"{demo_settings.app_id}-executor")
    client = Client(demo_settings, address)
    try:
        await ensure_topics(demo_settings, address.bootstrap)
        await client.start()
        worker.spawn()
        executor.spawn()
        say(f"worker starting (web {demo_settings.web_url}, log {worker.log_path}); reference executor starting")
        await worker.wait_ready()
        await executor.wait_ready()
        say("worker and executor ready")
        yield demo_settings, client, worker
    finally:
        await client.stop()
        executor.stop()
        worker.stop()
        if broker is not None:
            broker.stop()
        say("stopped executor, worker and broker")


DEMO_BINDING = {
    "name": PERSONA,
    "template_ref": "software_factory@v0",
    "entry_workflow": "workflows/merge.harn#run",
    "schedules": ["*/30 * * * *"],
    "triggers": ["github.pr_opened"],
    "budget": {"daily_usd": 0.05, "run_usd": 0.02, "max_tokens": 1000},
}


async def scenario(client: Client, say: Callable[[str], None], web_url: str, persona: str = PERSONA) -> None:
    """Bind a persona, trigger it, pause, trigger (queued), resume (drained), send junk."""
    receipts = await client.tail("receipts", from_beginning=True)
    dlq = await client.tail("dlq", from_beginning=True)
    outbox = await client.tail("outbox", from_beginning=True)
    run = uuid.uuid4().hex[:6]

    def pr(number: str) -> TriggerRequest:
        return TriggerRequest.model_validate(
            {
                "request_id": f"demo-{run}-pr-{number}",
                "persona": persona,
                "provider": "github",
                "kind": "pull_request",
                "metadata": {"repository": "burin-labs/harn", "number": number},
                "cost": {"cost_usd": 0.01, "tokens": 10},
            }
        )

    def command(action: str) -> ControlCommand:
        return ControlCommand(command_id=f"demo-{run}-{action}", persona=persona, action=action, actor="demo")

    await ops.bind(client, [PersonaBinding.model_validate({**DEMO_BINDING, "name": persona})])
    say(f"bound {persona}")
    await ops.trigger(client, pr("462"))
    await ops.control(client, command("pause"))
    await ops.trigger(client, pr("463"))
    await ops.control(client, command("resume"))
    await receipts.until(
        lambda seen: sum(1 for r in seen if (r.value or {}).get("request_id") == f"demo-{run}-pr-463") >= 2,
        60,
        "the queued trigger drained on resume",
    )
    await client.send("triggers", persona, b"{not json")
    await dlq.until(lambda seen: any(r.key == persona for r in seen), 60, "a dead letter")
    await outbox.until(
        lambda seen: (
            sum(1 for r in seen if r.key == persona and (r.value or {}).get("kind") == "persona.run.completed") >= 2
        ),
        30,
        "both runs on the outbox",
    )

    # The topics may hold other personas' records (a shared broker): show this one's only.
    say("-- persona.receipts")
    for record in receipts.seen:
        if record.key == persona:
            say("  " + render.line("receipts", record))
    say("-- persona.dlq")
    for record in dlq.seen:
        if record.key == persona:
            say("  " + render.line("dlq", record))
    events = [record for record in outbox.seen if record.key == persona]
    say(f"-- persona.outbox ({len(events)} events; control and run lifecycle shown)")
    for record in events:
        kind = (record.value or {}).get("kind", "")
        if kind.startswith(("persona.control.", "persona.trigger.queued", "persona.run.completed")):
            say("  " + render.line("outbox", record))
    say("-- status")
    say("  " + render.status(await ops.status(client, persona, web_url)))


EXTERNAL_PERSONA = "repo_gardener"

EXTERNAL_BINDING = {
    "name": EXTERNAL_PERSONA,
    "template_ref": "software_factory@v0",
    "entry_workflow": "workflows/garden.harn#run",
    "execution": "external",
    "lease_ttl_ms": 1500,
    "estimated_run_usd": 0.01,
    "budget": {"daily_usd": 1.0},
    "retry": {"max_attempts": 3, "backoff_ms": 500, "factor": 2.0},
    # The reference executor's simulated workflow: 3 steps over 2.4 s (longer than the
    # lease: heartbeats keep it), 120 tokens and $0.002 per step.
    "executor_options": {
        "steps": "3",
        "duration_ms": "2400",
        "tokens_per_step": "120",
        "cost_per_step_usd": "0.002",
        "heartbeat_ms": "400",
    },
}


async def external_scenario(
    client: Client, say: Callable[[str], None], web_url: str, persona: str = EXTERNAL_PERSONA
) -> None:
    """External runs with the reference executor: one completes while it heartbeats past
    its lease's time to live, one fails on attempt 1 and succeeds on the retry."""
    receipts = await client.tail("receipts", from_beginning=True)
    outbox = await client.tail("outbox", from_beginning=True)
    tag = uuid.uuid4().hex[:6]

    def issue(number: str, **metadata: str) -> TriggerRequest:
        return TriggerRequest.model_validate(
            {
                "request_id": f"demo-{tag}-issue-{number}",
                "persona": persona,
                "provider": "linear",
                "kind": "issue",
                "metadata": {"issue_key": f"GARDEN-{number}", **metadata},
            }
        )

    await ops.bind(client, [PersonaBinding.model_validate({**EXTERNAL_BINDING, "name": persona})])
    say(
        f"bound {persona} (external runs, lease_ttl_ms 1500, reference executor options"
        f" {EXTERNAL_BINDING['executor_options']})"
    )
    steady, flaky = issue("1"), issue("2", **{"executor.fail_on_attempt": "1"})
    for request in (steady, flaky):
        await ops.trigger(client, request)

    def finals(seen: list) -> int:
        return sum(
            1
            for r in seen
            if r.key == persona
            and (r.value or {}).get("request_id") in (steady.request_id, flaky.request_id)
            and r.value.get("status") in ("completed", "failed")
        )

    await receipts.until(lambda seen: finals(seen) >= 2, 90, "both external runs finished")
    say("-- persona.receipts (external runs)")
    run_ids = []
    for record in receipts.seen:
        if record.key == persona:
            say("  " + render.line("receipts", record))
            run_id = (record.value or {}).get("run_id")
            if run_id and run_id not in run_ids:
                run_ids.append(run_id)
    await outbox.catch_up()
    for run_id in run_ids:
        events = [r.value for r in outbox.seen if r.key == persona and (r.value or {}).get("stream") == f"run:{run_id}"]
        kinds = [e["kind"].removeprefix("run.") for e in events]
        beats = kinds.count("heartbeat")
        shown = [k for k in kinds if k not in ("heartbeat", "step_started", "step_completed", "usage")]
        say(f"-- run:{run_id}: {len(events)} events, {beats} heartbeats; " + " -> ".join(shown))
    for run_id in run_ids:
        say(render.run_detail(ops.worker_view(web_url, f"/runs/{run_id}")))
    say("-- status")
    say("  " + render.status(await ops.status(client, persona, web_url)))
    say("-- unsettled (GET /unsettled; the dashboard is at the worker's /)")
    say(render.unsettled(ops.worker_view(web_url, "/unsettled")))


async def run_demo(settings: Settings, say: Callable[[str], None] = click.echo) -> None:
    with tempfile.TemporaryDirectory(prefix="personaflow-demo-") as tmp:
        async with demo_cluster(settings, Path(tmp), say) as (demo_settings, client, _worker):
            await scenario(client, say, demo_settings.web_url)
            await external_scenario(client, say, demo_settings.web_url)
