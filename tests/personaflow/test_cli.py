"""The producer/ops commands against a real broker and worker (as subprocesses)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from personaflow.process import settings_env

from ..support.personas import PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker


def personaflow(settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "personaflow.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bind_trigger_control_status_and_verify_from_the_command_line(worker, settings, tmp_path, persona_name):
    bindings = tmp_path / "personas.yaml"
    bindings.write_text(
        f"name: {persona_name}\nentry_workflow: workflows/merge.harn#run\n"
        "budget: {daily_usd: 1.0}\nschedules: ['0 9 * * *']\n"
    )
    bound = personaflow(settings, "bind", str(bindings))
    assert bound.returncode == 0, bound.stderr
    assert f"bound {persona_name}" in bound.stdout and "state=idle" in bound.stdout

    triggered = personaflow(
        settings,
        "trigger",
        persona_name,
        "github",
        "pull_request",
        "repository=acme/app",
        "number=7",
        "--cost-usd",
        "0.25",
        "--tokens",
        "40",
        "--json",
    )
    assert triggered.returncode == 0, triggered.stderr
    receipt = json.loads(triggered.stdout)
    assert (receipt["status"], receipt["work_key"]) == ("completed", "github:acme/app:pr:7")

    paused = personaflow(settings, "control", persona_name, "pause", "--reason", "freeze")
    assert paused.returncode == 0, paused.stderr
    assert "persona.control.paused" in paused.stdout
    queued = personaflow(settings, "trigger", persona_name, "linear", "issue", "issue_key=A-1")
    assert "queued" in queued.stdout

    status = personaflow(settings, "status", persona_name, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["state"], shown["queued_events"], shown["budget"]["spent_today_usd"]) == ("paused", 1, 0.25)
    assert "state=paused" in personaflow(settings, "status", persona_name).stdout

    rejected = personaflow(settings, "control", persona_name, "enable", "--json")
    assert json.loads(rejected.stdout)["receipt"]["status"] == "rejected"

    verified = personaflow(settings, "verify", timeout=180)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 problems" in verified.stdout


def test_bind_reports_every_invalid_field_with_the_persona_and_publishes_nothing(worker, settings, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- name: ok_one\n  entry_workflow: w\n- name: bad one\n  entry_workflow: w\n"
        "  schedules: ['every day']\n  budget: {daily_usd: -1}\n"
    )
    result = personaflow(settings, "bind", str(bad))
    assert result.returncode != 0
    assert "binding #2 ('bad one')" in result.stderr
    assert "name:" in result.stderr and "schedules.0" in result.stderr and "budget.daily_usd" in result.stderr


def test_a_trigger_for_an_unknown_persona_prints_the_rejection(worker, settings, persona_name):
    result = personaflow(settings, "trigger", persona_name, "github", "push")
    assert result.returncode == 0, result.stderr
    assert "rejected" in result.stdout and persona_name in result.stdout


def test_commands_without_a_broker_explain_how_to_get_one(tmp_path):
    from streams.settings import Settings

    alone = Settings(PERSONAFLOW_DATA_DIR=str(tmp_path))  # type: ignore[call-arg]
    result = personaflow(alone, "status", "x", timeout=30)
    assert result.returncode != 0
    assert "set KAFKA_BOOTSTRAP_SERVERS" in result.stderr and "personaflow broker" in result.stderr


def test_commands_on_a_broker_without_the_topics_ask_whether_a_worker_runs(kafka, settings, persona_name):
    empty = settings.with_overrides(topic_prefix=f"{persona_name}.")  # no worker created these topics
    result = personaflow(empty, "trigger", persona_name, "github", "push", "--timeout", "5", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"topic '{persona_name}.persona.receipts' does not exist (is a worker running?)" in result.stderr


def test_tail_without_follow_prints_every_record_of_the_key_up_to_the_end_at_start_then_exits(
    worker, kafka, settings, persona_name
):
    probe, other = PersonaProbe(kafka, persona_name), PersonaProbe(kafka, f"{persona_name}-other")
    try:
        probe.bind({})
        other.bind({})
        for n in (1, 2):
            probe.trigger("linear", "issue", {"issue_key": f"T-{n}"}, cost={"cost_usd": 0.01, "tokens": 1})
        other.trigger("linear", "issue", {"issue_key": "T-3"}, cost={"cost_usd": 0.01, "tokens": 1})
        published = probe.receipts.catch_up() and probe.receipts.for_key(persona_name)
        assert len(published) == 2

        receipts = personaflow(settings, "tail", "receipts", "--key", persona_name, "--json", timeout=60)
        assert receipts.returncode == 0, receipts.stderr
        assert [json.loads(line) for line in receipts.stdout.splitlines()] == published  # in order, no other key
        topic = f"{settings.topic_prefix}persona.receipts"
        assert f"% reached the end of {topic}: 2 record(s)" in receipts.stderr

        statuses = personaflow(settings, "tail", "status", "--persona", persona_name, timeout=60)
        assert statuses.returncode == 0, statuses.stderr
        lines = statuses.stdout.splitlines()
        assert lines and all(persona_name in line and f"{persona_name}-other" not in line for line in lines)
        assert "state=idle" in lines[-1] and "spent_today_usd=0.02" in lines[-1]
    finally:
        probe.close()
        other.close()


@contextlib.contextmanager
def tail_process(settings, *args: str) -> Iterator[tuple[list[str], list[str]]]:
    """``personaflow tail ...`` running, its stdout and stderr lines as they come; stopped
    with Ctrl-C (SIGINT) at the end of the block, which it takes as the way to stop."""
    process = subprocess.Popen(
        [sys.executable, "-m", "personaflow.cli", "tail", *args],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda s=stream, lines=lines: lines.extend(line.rstrip("\n") for line in s))
        for stream, lines in ((process.stdout, out), (process.stderr, err))
    ]
    for reader in readers:
        reader.start()
    try:
        eventually(lambda: any(line.startswith("% following") for line in err) or process.poll() is not None, 60)
        assert process.poll() is None, "\n".join(err)
        yield out, err
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        finally:
            process.kill()
            for reader in readers:
                reader.join(10)
    assert code == 0, "\n".join(err)


def test_tail_follow_prints_new_records_of_the_key_from_the_end_or_from_the_beginning_until_interrupted(
    worker, kafka, settings, persona_name
):
    probe = PersonaProbe(kafka, persona_name)
    try:
        probe.bind({})
        before = probe.trigger("linear", "issue", {"issue_key": "F-1"}, cost={"cost_usd": 0.01, "tokens": 1})
        key = ("--key", persona_name, "--json")
        with (
            tail_process(settings, "receipts", "--follow", *key) as (new, new_err),
            tail_process(settings, "receipts", "-f", "--from-beginning", *key) as (every, every_err),
        ):
            assert any("from the end; Ctrl-C stops" in line for line in new_err)
            assert any("from the earliest offset; Ctrl-C stops" in line for line in every_err)
            after = probe.trigger("linear", "issue", {"issue_key": "F-2"}, cost={"cost_usd": 0.01, "tokens": 1})

            def ids(lines: list[str]) -> list[str]:
                return [json.loads(line)["request_id"] for line in lines]

            eventually(lambda: after["request_id"] in ids(new), 60, "the new receipt, from the end")
            eventually(lambda: after["request_id"] in ids(every), 60, "the new receipt, from the beginning")
            assert ids(new) == [after["request_id"]]  # nothing from before it started
            assert ids(every) == [before["request_id"], after["request_id"]]
    finally:
        probe.close()
