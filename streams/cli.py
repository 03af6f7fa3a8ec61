"""The ``personaflow`` command line: broker, worker, schema and producer/ops tools."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import click

from .embedded import BrokerNotFound, EmbeddedBroker
from .settings import Settings, SettingsError, load_settings


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """personaflow: a Kafka/Faust control plane for long-running AI personas."""


@main.command()
@click.option("--port", type=int, default=None, help="Loopback port (default: a free one).")
def broker(port: int | None) -> None:
    """Run the embedded Tansu broker until interrupted; other commands find it."""
    settings = settings_or_exit()
    embedded = EmbeddedBroker(settings.data_dir, port, tie_to_parent=True)
    try:
        address = embedded.start()
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"embedded broker on {address.bootstrap} (address in {settings.data_dir / 'broker.json'})")
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

    try:
        run_worker(settings)
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def schema(out_dir: Path) -> None:
    """Write one JSON Schema file per public record into DIR."""
    from .schema import write_schemas

    for path in write_schemas(out_dir):
        click.echo(str(path))


TAIL_ROLES = {"receipts": "receipts", "outbox": "outbox", "dlq": "dlq", "status": "status", "inbox": "persona_inbox"}


def client_for(settings: Settings):
    from .client import Client
    from .embedded import resolve_broker

    try:
        return Client(settings, resolve_broker(settings).bootstrap)
    except BrokerNotFound as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("what", type=click.Choice(sorted(TAIL_ROLES)))
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON values, one per line.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record instead of now.")
@click.option("--persona", default=None, help="Only records keyed by this persona.")
def tail(what: str, as_json: bool, from_beginning: bool, persona: str | None) -> None:
    """Follow receipts, outbox, dlq, status or inbox, one readable line per record."""
    import asyncio
    import json

    from . import render

    role = TAIL_ROLES[what]

    async def follow() -> None:
        client = client_for(settings_or_exit())
        await client.start()
        try:
            tail_ = await client.tail(role, from_beginning=from_beginning)
            while True:
                for record in await tail_.poll(1.0):
                    if persona is not None and record.key != persona:
                        continue
                    click.echo(json.dumps(record.value) if as_json else render.line(role, record))
        finally:
            await client.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())


@main.command()
def demo() -> None:
    """Start a broker and a worker, run a short scenario, print what came back, stop."""
    import asyncio

    from .demo import run_demo

    asyncio.run(run_demo(settings_or_exit()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
