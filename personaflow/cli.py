"""The ``personaflow`` command line: broker, worker, schema and producer/ops tools."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import click

from streams.settings import Settings, SettingsError, load_settings

from .embedded import BrokerNotFound, EmbeddedBroker


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """personaflow: a Kafka control plane for long-running AI personas."""


@main.command()
@click.option("--port", type=int, default=None, help="Loopback port (default: a free one).")
def broker(port: int | None) -> None:
    """Run the embedded Tansu broker until interrupted; other commands find it.

    The project's topics are created as soon as it answers (partition count, compaction),
    so producers may publish before any worker runs.

    Clients built on librdkafka (kcat, confluent-kafka) cannot talk to it: their first
    request fails with "ApiVersionRequest failed: Local: Read underflow". Read its topics
    with `personaflow tail` (e.g. `personaflow tail status`, `personaflow tail receipts
    --follow`); aiokafka, which personaflow is built on, works.
    """
    import asyncio

    from engine.kafka import ensure_topics

    settings = settings_or_exit()
    embedded = EmbeddedBroker(settings.data_dir, port, tie_to_parent=True)
    try:
        address = embedded.start()
        asyncio.run(ensure_topics(settings, address.bootstrap))
    except BrokerNotFound as exc:
        embedded.stop()
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"embedded broker on {address.bootstrap} (address in {settings.data_dir / 'broker.json'});"
        f" topics created with {settings.partitions} partitions"
        + (f", prefix {settings.topic_prefix!r}" if settings.topic_prefix else "")
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if embedded.process is None or embedded.process.poll() is not None:
                raise click.ClickException("the broker process exited; see broker.log in the data dir")
    finally:
        embedded.stop()
        click.echo("embedded broker stopped")


@main.command()
def worker() -> None:
    """Run a pipeline worker against KAFKA_BOOTSTRAP_SERVERS or the embedded broker."""
    settings = settings_or_exit()
    from agents.worker import run_worker

    from .embedded import resolve_broker
    from .keys import SigningKeyError, load

    try:
        # Without a key no dispatch could carry a capability token: refuse to start.
        signer = load(settings.data_dir)
    except SigningKeyError as exc:
        raise click.ClickException(f"no signing key: {exc}") from None
    try:
        broker = resolve_broker(settings)
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(run_worker(settings, broker, signer))


@main.command()
@click.option("--group", default="personaflow-executor", show_default=True, help="Consumer group of executors.")
def executor(group: str) -> None:
    """Run the reference executor: simulated workflows for dispatched runs, driven by the
    binding's executor_options and the trigger's executor.* metadata."""
    import asyncio

    from .embedded import resolve_broker
    from .executor import run_executor

    settings = settings_or_exit()
    try:
        broker = resolve_broker(settings)
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"reference executor (group {group}) on {broker.bootstrap}; Ctrl-C stops it")
    asyncio.run(run_executor(settings, broker, group))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=6070, show_default=True, help="Port to listen on.")
def webhooks(host: str, port: int) -> None:
    """Serve POST /webhooks/{github,slack,linear}/{persona}: each verified delivery becomes
    one trigger on persona.triggers (secrets from PERSONAFLOW_WEBHOOK_SECRET_<PROVIDER>)."""
    import asyncio

    from .embedded import resolve_broker
    from .webhooks import WebhookConfig, run_webhooks

    settings = settings_or_exit()
    try:
        config = WebhookConfig.from_env()
        broker = resolve_broker(settings)
    except (ValueError, BrokerNotFound) as exc:
        raise click.ClickException(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_webhooks(settings, broker, config, host, port, click.echo))


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def schema(out_dir: Path) -> None:
    """Write one JSON Schema file per public record into DIR."""
    from streams.schema import write_schemas

    for path in write_schemas(out_dir):
        click.echo(str(path))


@main.command()
@click.option(
    "--write",
    "document",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Replace the machines' section of this Markdown file (e.g. docs/behaviour.md) instead of printing.",
)
def machines(document: Path | None) -> None:
    """Print the run, dispatch and persona state machines (every declared transition)."""
    from tables.machines import describe, splice

    if document is None:
        click.echo(describe(), nl=False)
        return
    document.write_text(splice(document.read_text()))
    click.echo(f"updated {document}")


TAIL_ROLES = {
    "receipts": "receipts",
    "outbox": "outbox",
    "dlq": "dlq",
    "status": "status",
    "inbox": "persona_inbox",
    "audit": "audit",
}


def client_for(settings: Settings):
    from .client import Client
    from .embedded import resolve_broker

    try:
        return Client(settings, resolve_broker(settings))
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("what", type=click.Choice(sorted(TAIL_ROLES)))
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON values, one per line.")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep reading new records until Ctrl-C (default: stop at the topic's end)."
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="With --follow, start at the earliest offset instead of the end. Without --follow the"
    " tail always starts at the earliest offset.",
)
@click.option(
    "--key", "--persona", "key", metavar="PERSONA", default=None, help="Only records with this key (a persona)."
)
def tail(what: str, as_json: bool, follow: bool, from_beginning: bool, key: str | None) -> None:
    """Print receipts, outbox, dlq, status, inbox or audit, one readable line per record. Against
    the embedded broker it stands in for kcat, which cannot talk to it; it reads any Kafka.

    \b
    personaflow tail status                   every record, earliest first, up to the end
                                              the topic had at start, then exit (kcat -C -e)
    personaflow tail receipts --follow        new records as they come (kcat -C -o end)
    personaflow tail outbox -f --from-beginning --key merge_captain
                                              what the topic holds, then new records

    Each partition is read in order; records of different partitions interleave. A line on
    stderr says where the tail stands (stdout holds only records).
    """
    import json

    from . import ops, render

    role = TAIL_ROLES[what]

    async def read(client) -> None:
        topic = client.names.name(role)
        if follow:
            start = "the earliest offset" if from_beginning else "the end"
            click.echo(f"% following {topic} from {start}; Ctrl-C stops", err=True)
        printed = 0
        async for record in ops.read_topic(client, role, follow=follow, from_beginning=from_beginning, key=key):
            click.echo(json.dumps(record.value) if as_json else render.line(role, record))
            printed += 1
        click.echo(f"% reached the end of {topic}: {printed} record(s)", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_with_client(read)


def run_with_client(work):
    """Run ``work(client)`` on a started client; OpsError and a missing topic become a
    clean CLI error."""
    import asyncio

    from .client import MissingTopic
    from .ops import OpsError

    async def go():
        client = client_for(settings_or_exit())
        await client.start()
        try:
            return await work(client)
        finally:
            await client.stop()

    try:
        return asyncio.run(go())
    except (OpsError, MissingTopic) as exc:
        raise click.ClickException(str(exc)) from None


def echo_json_or(value, as_json: bool, render_line) -> None:
    import json

    click.echo(json.dumps(value, indent=2) if as_json else render_line(value))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-wait", is_flag=True, help="Do not wait for a worker to apply the bindings.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def bind(file: Path, no_wait: bool, timeout: float) -> None:
    """Publish the PersonaBinding(s) in FILE (YAML or JSON; one, a list, or several documents)."""
    from . import ops, render

    try:
        bindings = ops.load_bindings(file)
    except ops.OpsError as exc:
        raise click.ClickException(str(exc)) from None
    seen = run_with_client(lambda client: ops.bind(client, bindings, None if no_wait else timeout))
    for binding in bindings:
        click.echo(f"bound {binding.name} (entry {binding.entry_workflow}, execution {binding.execution})")
    for record in seen[-len(bindings) :] if seen else []:
        click.echo("  " + render.status(record.value, record.key))


@main.command()
@click.argument("name")
def unbind(name: str) -> None:
    """Remove a persona's binding (a tombstone on persona.bindings)."""
    from . import ops

    run_with_client(lambda client: ops.unbind(client, name))
    click.echo(f"unbound {name}")


@main.command()
@click.argument("persona")
@click.argument("provider")
@click.argument("kind")
@click.argument("metadata", nargs=-1)
@click.option("--request-id", default=None, help="Idempotency key (default: a new one).")
@click.option("--cost-usd", type=float, default=None, help="Run inline with this cost.")
@click.option("--tokens", type=int, default=0, show_default=True)
@click.option("--avoided-cost-usd", type=float, default=0.0)
@click.option("--deterministic-steps", type=int, default=0)
@click.option("--llm-steps", type=int, default=0)
@click.option("--frontier-escalations", type=int, default=0)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--raw", default=None, help="Raw provider payload (JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as JSON.")
@click.option("--no-wait", is_flag=True, help="Publish and exit without waiting for the receipt.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def trigger(
    persona: str,
    provider: str,
    kind: str,
    metadata: tuple[str, ...],
    request_id: str | None,
    cost_usd: float | None,
    tokens: int,
    avoided_cost_usd: float,
    deterministic_steps: int,
    llm_steps: int,
    frontier_escalations: int,
    priority: int,
    raw: str | None,
    as_json: bool,
    no_wait: bool,
    timeout: float,
) -> None:
    """Send a trigger for PERSONA (metadata as key=value ...) and print its receipt."""
    import json

    from . import ops, render

    costed = (
        cost_usd is not None or tokens or avoided_cost_usd or deterministic_steps or llm_steps or frontier_escalations
    )
    cost = (
        None
        if not costed
        else {
            "cost_usd": cost_usd or 0.0,
            "tokens": tokens,
            "avoided_cost_usd": avoided_cost_usd,
            "deterministic_steps": deterministic_steps,
            "llm_steps": llm_steps,
            "frontier_escalations": frontier_escalations,
        }
    )
    try:
        request = ops.build_trigger(
            persona,
            provider,
            kind,
            ops.parse_metadata(metadata),
            request_id=request_id,
            cost=cost,
            priority=priority,
            raw=None if raw is None else json.loads(raw),
        )
    except (ops.OpsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    receipt = run_with_client(lambda client: ops.trigger(client, request, None if no_wait else timeout))
    if receipt is None:
        click.echo(f"sent {request.request_id}")
    else:
        echo_json_or(receipt, as_json, render.receipt)


@main.command()
@click.argument("persona")
@click.argument("target")
@click.option(
    "--by",
    type=click.Choice(["auto", "work_key", "request_id"]),
    default="auto",
    show_default=True,
    help="What TARGET is; auto tries it as a work key, then as a request id.",
)
@click.option("--reason", default=None)
@click.option("--actor", default=lambda: __import__("getpass").getuser(), show_default="current user")
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=float, default=30.0, show_default=True)
def cancel(persona: str, target: str, by: str, reason: str | None, actor: str, as_json: bool, timeout: float) -> None:
    """Cancel PERSONA's queued work TARGET (a work key or a request id): it leaves the queue
    and its request gets a ``cancelled`` receipt."""
    import json
    import uuid

    from streams.records import ControlCommand

    from . import ops, render

    answer: dict = {}
    for field in ("work_key", "request_id") if by == "auto" else (by,):
        command = ControlCommand.model_validate(
            {
                "command_id": f"cli-{uuid.uuid4()}",
                "persona": persona,
                "action": "cancel",
                "actor": actor,
                "reason": reason,
                "target": {field: target},
            }  # fmt: skip
        )
        answer = run_with_client(lambda client, command=command: ops.control(client, command, timeout))
        receipt = answer.get("receipt") or {}
        if receipt.get("status") != "rejected":
            break
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(render.receipt(answer["receipt"]) if "receipt" in answer else render.outbox(answer["event"]))
    if (answer.get("receipt") or {}).get("status") == "rejected":
        sys.exit(1)


@main.command()
@click.argument("persona")
@click.argument("action", type=click.Choice(["pause", "resume", "disable", "enable", "drain", "record_spend"]))
@click.option("--reason", default=None)
@click.option("--actor", default=lambda: __import__("getpass").getuser(), show_default="current user")
@click.option("--cost-usd", type=float, default=None, help="For record_spend.")
@click.option("--tokens", type=int, default=0)
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=float, default=30.0, show_default=True)
def control(
    persona: str,
    action: str,
    reason: str | None,
    actor: str,
    cost_usd: float | None,
    tokens: int,
    as_json: bool,
    timeout: float,
) -> None:
    """Send a control command to PERSONA and print what it caused."""
    import json
    import uuid

    from pydantic import ValidationError

    from streams.codec import describe_validation_error
    from streams.records import ControlCommand

    from . import ops, render

    body = {
        "command_id": f"cli-{uuid.uuid4()}",
        "persona": persona,
        "action": action,
        "actor": actor,
        "reason": reason,
        "cost": None if cost_usd is None else {"cost_usd": cost_usd, "tokens": tokens},
    }
    try:
        command = ControlCommand.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        raise click.ClickException(describe_validation_error(exc, "control command")) from None
    answer = run_with_client(lambda client: ops.control(client, command, timeout))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    elif "receipt" in answer:
        click.echo(render.receipt(answer["receipt"]))
    else:
        click.echo(render.outbox(answer["event"]))


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(name: str | None, as_json: bool) -> None:
    """Print one persona's status (or all), from a worker or the persona.status topic."""
    import json

    from . import ops, render

    settings = settings_or_exit()
    result = run_with_client(lambda client: ops.status(client, name, settings.web_url, settings.web_token))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif name is not None:
        click.echo(render.status(result, name))
    else:
        for key, value in result.items():
            click.echo(render.status(value, key))


@main.command()
@click.argument("persona")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--cursor", type=int, default=None, help="Page below this run number (from --json's next_cursor).")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--summary",
    "as_summary",
    is_flag=True,
    help="Counts by status, spend, retries, lease expiries, the queue and diagnostics instead of the list.",
)
def runs(persona: str, limit: int, cursor: int | None, as_json: bool, as_summary: bool) -> None:
    """List PERSONA's external runs, newest first (from a worker's web port); --summary:
    the persona's run summary and diagnostics."""
    import json

    from . import ops, render

    settings = settings_or_exit()
    if as_summary:
        try:
            answer = ops.worker_view(settings.web_url, f"/personas/{persona}/runs/summary", settings.web_token)
        except ops.OpsError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps(answer, indent=2) if as_json else render.runs_summary(answer))
        return
    path = f"/personas/{persona}/runs?limit={limit}" + (f"&cursor={cursor}" if cursor is not None else "")
    try:
        page = ops.worker_view(settings.web_url, path, settings.web_token)
    except ops.OpsError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(f"{page['total']} run(s) of {persona}" + (", newest first" if page["runs"] else ""))
    for run in page["runs"]:
        click.echo("  " + render.run_summary(run))
    if page["has_more"]:
        click.echo(f"  ... more: --cursor {page['next_cursor']}")


@main.command()
@click.option("--persona", default=None, help="Only this persona's work.")
@click.option("--json", "as_json", is_flag=True)
def unsettled(persona: str | None, as_json: bool) -> None:
    """Work that is not settled, across all personas: queued triggers, runs waiting for a
    retry, runs in flight, paused runs, handoffs not acknowledged (from the workers)."""
    import json

    from . import ops, render

    path = "/unsettled" + (f"?persona={persona}" if persona else "")
    settings = settings_or_exit()
    try:
        answer = ops.worker_view(settings.web_url, path, settings.web_token)
    except ops.OpsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(answer, indent=2) if as_json else render.unsettled(answer))


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--bom", "as_bom", is_flag=True, help="Print the run's signed bill of materials and check its signature.")
def run(run_id: str, as_json: bool, as_bom: bool) -> None:
    """Show a run: status, attempts and cost ledger, children, last events."""
    import json

    from . import ops, render

    settings = settings_or_exit()
    try:
        detail = ops.worker_view(settings.web_url, f"/runs/{run_id}" + ("/bom" if as_bom else ""), settings.web_token)
    except ops.OpsError as exc:
        raise click.ClickException(str(exc)) from None
    if as_bom:
        _check_bom(settings.data_dir, detail)
        return
    click.echo(json.dumps(detail, indent=2) if as_json else render.run_detail(detail))


def _check_bom(data_dir: Path, answer: dict) -> None:
    """Print a ``/runs/{id}/bom`` answer with the verdict on its signature; exit 1 unless it verifies."""
    import json

    from .capability import CapabilityError, verify_bom
    from .keys import public_keys

    bom, signature = answer.get("bom"), answer.get("signature")
    if bom is None:
        raise click.ClickException(f"run {answer.get('run_id')} has no bill of materials yet ({answer.get('status')})")
    verdict = "unsigned (the worker has no signing key)"
    if signature is not None:
        try:
            verify_bom(bom, signature, public_keys(data_dir))
            verdict = f"verified (key {signature['kid']})"
        except CapabilityError as exc:
            verdict = f"NOT verified: {exc}"
    click.echo(json.dumps({"bom": bom, "signature": signature, "verified": verdict.startswith("verified")}, indent=2))
    click.echo(f"signature: {verdict}", err=True)
    if not verdict.startswith("verified"):
        sys.exit(1)


@main.command("run-control")
@click.argument("run_id")
@click.argument(
    "action",
    type=click.Choice(
        ["pause", "resume", "cancel", "checkpoint", "compact", "guidance", "evidence", "a2a", "break", "clear_breaks"]
    ),
)
@click.option("--content", default=None, help="Guidance/evidence/a2a content (JSON, or plain text).")
@click.option("--at-step", default=None, help="For break: pause the run when this step (name or id) starts.")
@click.option("--reason", default=None)
@click.option("--actor", default=lambda: __import__("getpass").getuser(), show_default="current user")
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=float, default=30.0, show_default=True)
def run_control(
    run_id: str,
    action: str,
    content: str | None,
    at_step: str | None,
    reason: str | None,
    actor: str,
    as_json: bool,
    timeout: float,
) -> None:
    """Send run control to RUN_ID (forwarded to its executor) and print the answer."""
    import json
    import uuid

    from pydantic import ValidationError

    from streams.codec import describe_validation_error
    from streams.records import RunControl

    from . import ops, render

    body_content: object = content
    if action == "break":
        if at_step is None:
            raise click.UsageError("break needs --at-step NAME")
        content = json.dumps({"step": at_step})
    if content is not None:
        try:
            body_content = json.loads(content)
        except ValueError:
            body_content = content
    try:
        command = RunControl.model_validate(
            {
                "command_id": f"cli-{uuid.uuid4()}",
                "run_id": run_id,
                "action": action,
                "actor": actor,
                "reason": reason,
                "content": body_content,
            }
        )
    except ValidationError as exc:
        raise click.ClickException(describe_validation_error(exc, "run control")) from None
    answer = run_with_client(lambda client: ops.run_control(client, command, timeout))
    echo_json_or(answer, as_json, render.run_control_answer)
    if answer and answer.get("status") == "rejected":
        sys.exit(1)


@main.group()
def policy() -> None:
    """Governance: a binding's policy rules (allow, redact, deny)."""


@policy.command("test")
@click.argument("binding_file", metavar="BINDING", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("trigger_file", metavar="TRIGGER", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--persona", default=None, help="The binding to use (default: the trigger's persona).")
@click.option("--tool", default=None, help="Decide a step of the run that calls this tool instead.")
@click.option("--attempt", type=click.IntRange(1, 1000), default=1, show_default=True)
def policy_test(binding_file: Path, trigger_file: Path, persona: str | None, tool: str | None, attempt: int) -> None:
    """Print the decision (JSON) of BINDING's policy about TRIGGER's dispatch, running nothing.

    BINDING is a binding file as `personaflow bind` reads it; TRIGGER a TriggerRequest (JSON).
    """
    from .ops import OpsError
    from .policytest import run

    try:
        click.echo(run(binding_file, trigger_file, persona, tool, attempt))
    except OpsError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
def verify() -> None:
    """Replay the inboxes through the transitions and compare with receipts and outbox."""
    from . import ops

    comparisons = run_with_client(ops.verify)
    failed = False
    for result in comparisons:
        click.echo(
            f"{result.topic}: {result.expected} expected by id, {result.published} published records,"
            f" {result.matching} identical, {len(result.problems)} problems"
        )
        for problem in result.problems[:20]:
            click.echo(f"  {problem}")
        failed |= not result.ok
    if failed:
        raise click.ClickException("published records differ from the replay")


@main.group()
def capability() -> None:
    """Capability tokens: the ones dispatches carry, for tool adapters."""


@capability.command("verify")
@click.argument("token")
@click.option("--audience", default="runtime-tool-adapter", show_default=True)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Public keys as JSON (the output of `personaflow keys`).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Use the public keys of this data dir (default: the configured one).",
)
@click.option("--now-ms", type=int, default=None, help="Check validity at this time (default: now).")
def capability_verify(
    token: str, audience: str, keys_file: Path | None, data_dir: Path | None, now_ms: int | None
) -> None:
    """Check TOKEN's signature, audience and time window; print its claims as JSON."""
    import json
    import time

    import msgspec

    from .capability import CapabilityError, verify
    from .keys import public_keys, public_keys_file

    known = public_keys_file(keys_file) if keys_file else public_keys(data_dir or settings_or_exit().data_dir)
    try:
        claims = verify(token, known, audience, int(time.time() * 1000) if now_ms is None else now_ms)
    except CapabilityError as exc:
        raise click.ClickException(f"{exc.reason}: {exc}") from None
    click.echo(json.dumps(msgspec.to_builtins(claims), indent=2))


@main.command()
def keys() -> None:
    """Print the signing key's public half and id as JSON (created in the data dir if absent)."""
    import json

    from .keys import SigningKeyError, load, public_entry, public_keys

    settings = settings_or_exit()
    try:
        current = load(settings.data_dir)
    except SigningKeyError as exc:
        raise click.ClickException(str(exc)) from None
    known = public_keys(settings.data_dir)
    entries = [current.public_json()] + [
        public_entry(kid, public) for kid, public in sorted(known.items()) if kid != current.kid
    ]
    click.echo(json.dumps({"current": current.kid, "keys": entries}, indent=2))


@main.command()
def demo() -> None:
    """Start a broker and a worker, run a short scenario, print what came back, stop."""
    import asyncio

    from .demo import run_demo

    asyncio.run(run_demo(settings_or_exit()))


# ------------------------------------------------------------------------ audit

AUDIT_DB_HELP = "Database URL: sqlite:///audit.db (default, or $PERSONAFLOW_AUDIT_DB) or postgresql://user:pw@host/db."


def _audit_recorder(db: str):
    from audit.recorder import AuditRecorder

    try:
        return AuditRecorder.open(db)
    except Exception as exc:  # a bad URL or an unreachable server: say which and stop
        raise click.ClickException(f"cannot open the audit store {db!r}: {exc}") from None


def _since_ms(value: str | None) -> int | None:
    """``1700000000000`` (epoch ms), ``15m``/``2h``/``1d`` (ago) or an ISO-8601 time."""
    import datetime
    import time

    if value is None:
        return None
    if value.isdigit():
        return int(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1] in units:
        return int((time.time() - int(value[:-1]) * units[value[-1]]) * 1000)
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use epoch ms, 15m/2h/1d, or an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


@main.group(invoke_without_command=True)
@click.option(
    "--db", envvar="PERSONAFLOW_AUDIT_DB", default="sqlite:///audit.db", show_default=True, help=AUDIT_DB_HELP
)
@click.option("--group", default=None, help="Consumer group (default: {app_id}-audit).")
@click.pass_context
def audit(ctx: click.Context, db: str, group: str | None) -> None:
    """Record persona.outbox into a database, each event once (no subcommand), or read it."""
    ctx.obj = {"db": db, "group": group}
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from audit.consumer import run_audit

    from .embedded import resolve_broker

    settings = settings_or_exit()
    try:
        broker = resolve_broker(settings)
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None
    from .keys import SigningKeyError, load

    try:  # checkpoints of stream heads are signed with the worker's key (created if absent)
        signer = load(settings.data_dir)
    except SigningKeyError as exc:
        raise click.ClickException(str(exc)) from None
    recorder = _audit_recorder(db)  # a bad URL fails here, with one line; the schema is migrated
    asyncio.run(run_audit(settings, broker, recorder, group, signer=signer))


@audit.command("query")
@click.option("--persona", default=None)
@click.option("--kind", default=None, help="An outbox kind; * matches any text (persona.run.*).")
@click.option("--run", "run_id", default=None)
@click.option("--since", default=None, help="Epoch ms, 15m/2h/1d ago, or an ISO-8601 time.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_query(
    ctx: click.Context,
    persona: str | None,
    kind: str | None,
    run_id: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Stored events, oldest first."""
    import json

    from . import render

    recorder = _audit_recorder(ctx.obj["db"])
    try:
        rows = recorder.query(persona=persona, kind=kind, run_id=run_id, since_ms=_since_ms(since), limit=limit)
    finally:
        recorder.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(render.audit_line(row))
    click.echo(f"{len(rows)} event(s)")


@audit.command("problems")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_problems(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Records not stored as they are (conflicting duplicates, undecodable, invalid), and seq gaps."""
    import json

    recorder = _audit_recorder(ctx.obj["db"])
    try:
        found, gaps, counts = recorder.problems(limit), recorder.gaps(limit), recorder.counts()
    finally:
        recorder.close()
    if as_json:
        click.echo(json.dumps({"counts": counts, "problems": found, "gaps": gaps}, indent=2))
        return
    click.echo(
        f"{counts['events']} event(s) in {counts['streams']} stream(s); {counts['problems']} problem(s);"
        f" {counts['gaps']} gap(s)"
    )
    for problem in found:
        click.echo(
            f"  {problem['kind']} {problem['topic']}[{problem['partition']}]@{problem['offset']}: {problem['detail']}"
        )
    for gap in gaps:
        missing = gap["first"] if gap["first"] == gap["last"] else f"{gap['first']}..{gap['last']}"
        click.echo(f"  gap {gap['stream']}: seq {missing} not stored yet")
    if counts["problems"] or counts["gaps"]:
        sys.exit(1)


@audit.command("verify")
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Public keys as `personaflow keys` prints them (besides the data dir's and $PERSONAFLOW_SIGNING_KEY's).",
)
@click.option(
    "--with-topic",
    is_flag=True,
    help="Also compare the store's checkpoints with the copies its consumer group (--group) published on"
    " persona.audit (needs the broker): finds the newest checkpoint deleted together with the events after it.",
)
@click.pass_context
def audit_verify(ctx: click.Context, keys_file: Path | None, with_topic: bool) -> None:
    """Re-check the whole store: digests, seq gaps, links, signed checkpoints. Names the first
    break of each stream; exit status 1 on any break."""
    import msgspec

    from audit.chain import verify as verify_chain
    from streams import wire

    witnessed: list = []
    if with_topic:  # the copies this store's consumer group published
        from .client import read_all

        group = ctx.obj["group"] or f"{settings_or_exit().app_id}-audit"
        notices = run_with_client(lambda client: read_all(client, "audit"))
        for seen in notices:
            value = seen.value
            if isinstance(value, dict) and value.get("kind") == "audit.checkpoint" and value.get("group") == group:
                with contextlib.suppress(msgspec.ValidationError, TypeError):
                    copy = msgspec.convert(seen.value, wire.AuditNotice)
                    if copy.number is not None and copy.heads is not None and copy.signature is not None:
                        witnessed.append(copy)

    from .keys import public_keys, public_keys_file

    known: dict[str, bytes] = {}
    with contextlib.suppress(SettingsError):
        known.update(public_keys(load_settings().data_dir))
    if keys_file is not None:
        try:
            known.update(public_keys_file(keys_file))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"cannot read public keys from {keys_file}: {exc}") from None
    recorder = _audit_recorder(ctx.obj["db"])
    try:
        result = verify_chain(recorder.engine, known, witnessed)
    finally:
        recorder.close()
    verdict = "intact" if result.ok else f"{len(result.breaks)} broken stream(s)"
    copies = f" ({result.witnessed} on persona.audit)" if with_topic else ""
    click.echo(
        f"{result.events} event(s) in {result.streams} stream(s), {result.checkpoints} checkpoint(s){copies}: {verdict}"
    )
    for found in result.breaks:
        click.echo(f"  {found}")
    if not result.ok:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
