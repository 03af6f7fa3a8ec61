"""Settings come from the environment; bad values name their variable."""

from __future__ import annotations

import pytest

from streams.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("PERSONAFLOW_", "KAFKA_")):
            monkeypatch.delenv(name)


def test_defaults_need_no_environment():
    settings = load_settings()
    assert (settings.partitions, settings.topic_prefix, settings.store, settings.web_port) == (8, "", "memory://", 6066)
    assert settings.bootstrap_servers is None


def test_event_times_are_bounded_to_an_hour_ahead_by_default_as_kafka_does(monkeypatch):
    assert load_settings().max_future_ms == 3_600_000  # message.timestamp.after.max.ms since Kafka 4.0
    monkeypatch.setenv("PERSONAFLOW_MAX_FUTURE_MS", "60000")
    assert load_settings().max_future_ms == 60_000
    monkeypatch.setenv("PERSONAFLOW_MAX_FUTURE_MS", "-1")
    with pytest.raises(SettingsError, match="PERSONAFLOW_MAX_FUTURE_MS"):
        load_settings()


def test_values_are_read_from_their_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("PERSONAFLOW_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("PERSONAFLOW_PARTITIONS", "12")
    monkeypatch.setenv("PERSONAFLOW_STORE", "rocksdb://")
    monkeypatch.setenv("PERSONAFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "secret")
    settings = load_settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9093"
    assert (settings.topic_prefix, settings.partitions, settings.store) == ("prod.", 12, "rocksdb://")
    assert settings.sasl_mechanism == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PERSONAFLOW_PARTITIONS", "many", "PERSONAFLOW_PARTITIONS: Input should be a valid integer"),
        ("PERSONAFLOW_PARTITIONS", "0", "PERSONAFLOW_PARTITIONS: Input should be greater than or equal to 1"),
        ("PERSONAFLOW_STORE", "redis://", "PERSONAFLOW_STORE: Input should be 'memory://' or 'rocksdb://'"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "KAFKA_BOOTSTRAP_SERVERS: expected host:port"),
        ("PERSONAFLOW_TOPIC_PREFIX", "a b", "PERSONAFLOW_TOPIC_PREFIX: only letters"),
        ("KAFKA_SSL_CAFILE", "/nonexistent/ca.pem", "KAFKA_SSL_CAFILE: file '/nonexistent/ca.pem' does not exist"),
        ("PERSONAFLOW_WEB_PORT", "70000", "PERSONAFLOW_WEB_PORT: Input should be less than or equal to 65535"),
    ],
)
def test_invalid_values_fail_with_a_message_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value)


def test_sasl_mechanism_without_credentials_is_refused(monkeypatch):
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(SettingsError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required"):
        load_settings()


def test_security_settings_reach_the_kafka_client_config(monkeypatch, tmp_path):
    from engine.kafka import client_config

    ca = tmp_path / "ca.pem"
    ca.write_text("not a real cert")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")
    config = client_config(load_settings(), "k:9092")
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "PLAIN",
        "svc",
        "pw",
    )
