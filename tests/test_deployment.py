"""docker-compose.yml and the Dockerfile reference only things that exist."""

from __future__ import annotations

from pathlib import Path

import yaml

from personaflow.cli import main

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_parses_and_has_kafka_two_workers_and_the_audit_store():
    services = compose()["services"]
    assert {"kafka", "worker-1", "worker-2", "audit"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_compose_workers_are_built_from_the_dockerfile_and_run_real_commands():
    services = compose()["services"]
    for name in ("worker-1", "worker-2"):
        assert services[name]["build"] == "."
        assert services[name]["command"][0] in main.commands
        assert services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["audit"]["command"][0] in main.commands
    assert services["audit"]["environment"]["PERSONAFLOW_AUDIT_DB"].startswith("postgresql://")
    assert services["postgres"]["image"].startswith("postgres:")
    assert (ROOT / "Dockerfile").exists()


def test_dockerfile_installs_the_project_and_runs_the_console_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("streams", "tables", "engine", "agents", "audit", "personaflow"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["personaflow"]' in dockerfile
