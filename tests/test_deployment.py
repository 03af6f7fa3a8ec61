"""docker-compose.yml, the Dockerfile and the metrics deployment (Prometheus, Grafana) reference
only things that exist, and the compose file is valid by the compose specification."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

from agents.worker import build
from engine.kafka import BrokerAddress
from personaflow.cli import main
from streams.settings import Settings

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


# ------------------------------------------------------------------ metrics: Prometheus, Grafana

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "personaflow.json"
METRIC_NAME = re.compile(r"\bpersonaflow_[a-z0-9_]+\b")


def compose_spec() -> dict:
    """The compose-spec JSON schema, as the check-jsonschema package ships it (a test
    dependency; read from its files, its code is not imported)."""
    try:
        path = metadata.distribution("check-jsonschema").locate_file(
            "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
        )
    except metadata.PackageNotFoundError:
        pytest.fail("check-jsonschema is not installed: pip install -e '.[test]'")
    return json.loads(Path(str(path)).read_text())


def exposed_samples() -> set[str]:
    """Every sample name a worker's /metrics can show (its registry, gauges included)."""
    engine = build(Settings(), BrokerAddress("localhost:9092", embedded=False))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in engine.metrics.registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of the service's bind mounts (``./path:/target[:mode]``)."""
    found = []
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found.append((source, target))
    return found


def test_compose_validates_against_the_compose_spec_schema():
    errors = sorted(jsonschema.Draft7Validator(compose_spec()).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_runs_prometheus_and_grafana_with_their_configuration_mounted():
    services = compose()["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    prometheus = dict(bind_mounts(services["prometheus"]))
    assert prometheus["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = dict(bind_mounts(services["grafana"]))
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/personaflow.yml").read_text())
    [dashboards] = provider["providers"]
    assert grafana["./deploy/grafana/dashboards"] == dashboards["options"]["path"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards['options']['path']}/{DASHBOARD.name}"


def test_prometheus_scrapes_every_worker_whose_metrics_are_open_to_it():
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    workers = {name: s for name, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert targets == {f"{name}:{s['environment']['PERSONAFLOW_WEB_PORT']}" for name, s in workers.items()}
    for service in workers.values():
        assert service["environment"]["PERSONAFLOW_METRICS_OPEN"] == "1"  # no bearer token on /metrics
        assert service["environment"]["PERSONAFLOW_WEB_BIND"] == "0.0.0.0"  # reachable from Prometheus


def test_grafana_reads_the_compose_prometheus_as_the_datasource_the_dashboard_names():
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = config["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(target["datasource"]["uid"] == source["uid"] for target in panel["targets"]), panel["title"]


def test_the_dashboard_is_a_grafana_dashboard_whose_queries_name_only_metrics_workers_expose():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "personaflow" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    assert panels and len({p["id"] for p in panels}) == len(panels)
    exposed = exposed_samples()
    used: set[str] = set()
    for panel in panels:
        assert panel["type"] and panel["title"], panel
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= exposed, f"{panel['title']}: not exposed: {names - exposed}"
            used |= names
    for variable in dashboard["templating"]["list"]:
        assert set(METRIC_NAME.findall(variable["definition"])) <= exposed, variable["name"]
    # a panel for each of the seed's metrics, and for receipts and dead letters
    for family in (
        "personaflow_queue_depth",
        "personaflow_queue_lag_seconds_bucket",
        "personaflow_run_latency_seconds_bucket",
        "personaflow_step_latency_seconds_bucket",
        "personaflow_budget_cost_usd_total",
        "personaflow_budget_tokens_total",
        "personaflow_budget_remaining_usd",
        "personaflow_budget_remaining_tokens",
        "personaflow_budget_projected_burn_usd",
        "personaflow_retries_total",
        "personaflow_slo_queue_slack_ms_bucket",
        "personaflow_slo_preemptions_total",
        "personaflow_lease_expiries_total",
        "personaflow_fenced_reports_total",
        "personaflow_policy_denials_total",
        "personaflow_receipts_total",
        "personaflow_dead_letters_total",
    ):
        assert family in used, family
