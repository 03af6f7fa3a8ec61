"""App construction: the embedded broker's compatibility settings and stale-state wipe."""

from __future__ import annotations

import json

from engine import compat
from streams.app import create_app, reset_stale_state, worker_dir
from engine.kafka import BrokerAddress
from streams.settings import Settings


def settings(tmp_path) -> Settings:
    return Settings(PERSONAFLOW_DATA_DIR=str(tmp_path), PERSONAFLOW_PARTITIONS="3")  # type: ignore[call-arg]


def test_the_embedded_broker_gets_the_tansu_transport_and_short_session_timeouts(tmp_path):
    embedded = create_app(settings(tmp_path), BrokerAddress("127.0.0.1:9999", embedded=True, instance="a"))
    assert embedded.app.conf.broker[0].scheme == "tansu"
    assert embedded.app.conf.broker_session_timeout == compat.FAUST_SETTINGS["broker_session_timeout"]
    assert embedded.app.conf.broker_heartbeat_interval == compat.FAUST_SETTINGS["broker_heartbeat_interval"]


def test_real_kafka_keeps_stock_faust_settings(tmp_path):
    pipeline = create_app(settings(tmp_path), BrokerAddress("k1:9092,k2:9092", embedded=False))
    assert [url.scheme for url in pipeline.app.conf.broker] == ["kafka", "kafka"]
    assert pipeline.app.conf.broker_session_timeout != compat.FAUST_SETTINGS["broker_session_timeout"]
    assert set(pipeline.topics) >= {"triggers", "persona_inbox", "status"}
    assert pipeline.topics["status"].compacting and pipeline.topics["triggers"].partitions == 3


def test_local_state_from_an_earlier_embedded_broker_is_wiped(tmp_path):
    directory = worker_dir(settings(tmp_path))
    first = BrokerAddress("127.0.0.1:1", embedded=True, instance="first")
    assert reset_stale_state(directory, first) is False  # nothing there yet
    (directory / "tables").mkdir()
    assert reset_stale_state(directory, first) is False  # same broker: kept
    assert (directory / "tables").exists()
    assert reset_stale_state(directory, BrokerAddress("127.0.0.1:2", embedded=True, instance="second")) is True
    assert not (directory / "tables").exists()
    assert json.loads((directory / "broker.json").read_text()) == {"instance": "second"}


def test_local_state_is_never_wiped_against_real_kafka(tmp_path):
    directory = worker_dir(settings(tmp_path))
    directory.mkdir(parents=True)
    (directory / "tables").mkdir()
    assert reset_stale_state(directory, BrokerAddress("k:9092", embedded=False)) is False
    assert (directory / "tables").exists()
