"""The ``personaflow`` command line: broker, worker, schema and producer/ops tools."""

from __future__ import annotations

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
