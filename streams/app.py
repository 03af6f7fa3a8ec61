"""The Faust app: configuration and topic declarations, nothing else.

Agents, tables and views are registered by :mod:`agents.worker`, which keeps this
module free of pipeline logic (no god-object app).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TopicT

from engine import compat
from engine.kafka import BrokerAddress
from engine.kafka import client_config
from .records import MAX_RECORD_BYTES
from .settings import Settings
from .topics import SPECS, TopicNames


@dataclass
class Pipeline:
    """The app plus everything agents need to find: settings, broker, topics."""

    app: faust.App
    settings: Settings
    broker: BrokerAddress
    names: TopicNames
    topics: dict[str, TopicT]

    def topic(self, role: str) -> TopicT:
        return self.topics[role]


def _credentials(settings: Settings, bootstrap: str) -> Any:
    config = client_config(settings, bootstrap)
    protocol = config.get("security_protocol")
    if protocol is None:
        return None
    context = config.get("ssl_context")
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


def worker_dir(settings: Settings) -> Path:
    """Local state of one worker (table stores); one per web port on a host."""
    return Path(settings.data_dir).absolute() / "state" / f"{settings.app_id}@{settings.web_port}"


def reset_stale_state(directory: Path, broker: BrokerAddress) -> bool:
    """Wipe local table state built against an earlier embedded broker.

    Tansu keeps topics in memory only: a new embedded broker has empty changelogs, so
    any local store left from the last one describes offsets that no longer exist.
    Against a real cluster local state is kept (Faust resumes from its offsets).
    """
    marker = directory / "broker.json"
    if not broker.embedded:
        return False
    try:
        previous = json.loads(marker.read_text()).get("instance")
    except (FileNotFoundError, json.JSONDecodeError):
        previous = None
    wiped = False
    if previous != broker.instance and directory.exists():
        shutil.rmtree(directory)
        wiped = True
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"instance": broker.instance}))
    return wiped


def create_app(settings: Settings, broker: BrokerAddress) -> Pipeline:
    scheme = "tansu" if broker.embedded else "kafka"
    servers = [f"{scheme}://{server.strip()}" for server in broker.bootstrap.split(",")]
    options: dict[str, Any] = dict(
        broker=servers,
        store=settings.store,
        datadir=str(worker_dir(settings)),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        canonical_url=settings.web_url,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=MAX_RECORD_BYTES * 4,
        consumer_max_fetch_size=MAX_RECORD_BYTES * 4,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        topic_disable_leader=True,
    )
    credentials = _credentials(settings, broker.bootstrap)
    if credentials is not None:
        options["broker_credentials"] = credentials
    if broker.embedded:
        options.update(compat.FAUST_SETTINGS)
    app = faust.App(settings.app_id, **options)
    names = TopicNames(settings.topic_prefix)
    topics = {
        spec.role: app.topic(
            names.name(spec.role),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            compacting=spec.compacted or None,
        )
        for spec in SPECS
    }
    return Pipeline(app, settings, broker, names, topics)
