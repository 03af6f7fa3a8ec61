"""``personaflow audit`` against the session broker: outbox records into SQLite and a real
PostgreSQL server, each event once, across SIGKILLs; the CLI reads them back."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from audit.recorder import AuditRecorder
from personaflow.embedded import free_port
from personaflow.process import AuditProcess, settings_env
from streams import chain

from ..agents.test_dashboard import Cells, chromium
from ..support.cluster import SyncWorker, own_pipeline
from ..support.personas import PersonaProbe
from ..support.wait import eventually
from .test_recorder import event

EVENTS = 10_000
CHUNK = 1_000
STREAMS = 50


def publish(kafka, records: list[tuple[str, bytes]]) -> None:
    """Publish (key, value) records to the outbox, pipelined, and wait for every ack."""

    async def send_all() -> None:
        client = kafka.client
        topic = client.names.outbox
        pending = [await client.producer.send(topic, value, key=key.encode()) for key, value in records]
        await asyncio.gather(*pending)

    kafka.run(send_all())


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return request.getfixturevalue("postgres_url")


def test_ten_thousand_events_through_two_sigkills_are_stored_once_with_no_gap(settings, broker, tmp_path, database):
    with own_pipeline(settings, broker, "audit") as (own, kafka):
        auditor = AuditProcess(own, tmp_path / "logs", database, group=f"{own.app_id}-audit")
        recorder = AuditRecorder.open(database)
        try:
            auditor.spawn()
            asyncio.run(auditor.wait_ready())
            events = [
                event(f"persona:a{n % STREAMS}", n // STREAMS + 1, persona=f"a{n % STREAMS}") for n in range(EVENTS)
            ]
            for chunk in range(EVENTS // CHUNK):
                publish(kafka, [(e["persona"], orjson.dumps(e)) for e in events[chunk * CHUNK : (chunk + 1) * CHUNK]])
                if chunk in (2, 6):  # kill while it is storing this chunk, start it again
                    eventually(lambda: recorder.counts()["events"] > chunk * CHUNK, 60, f"chunk {chunk} being stored")
                    auditor.stop(kill=True)
                    auditor.spawn()
                    asyncio.run(auditor.wait_ready())
            eventually(lambda: recorder.counts()["events"] == EVENTS, 120, "every event stored")
            assert auditor.starts == 3
            assert recorder.gaps() == [] and recorder.problems() == []
            positions = recorder.positions(f"{own.app_id}-audit", kafka.client.names.outbox)
            assert sum(positions.values()) == EVENTS  # fresh topic: every partition's end

            forged = event("persona:a0", 1, persona="a0", payload={"forged": True})
            publish(kafka, [("a0", orjson.dumps(forged)), ("a0", orjson.dumps(events[STREAMS]))])
            [problem] = eventually(lambda: recorder.problems(), 60, "the forged copy flagged")
            assert (problem["kind"], problem["event_id"]) == ("conflict", "persona:a0/1")
            eventually(
                lambda: (
                    sum(recorder.positions(f"{own.app_id}-audit", kafka.client.names.outbox).values()) == EVENTS + 2
                ),
                60,
                "positions past both copies",
            )
            [stored] = recorder.query(persona="a0", limit=1)
            assert stored["payload"] == {} and recorder.counts()["events"] == EVENTS
        finally:
            auditor.stop()
            recorder.close()


def test_the_pipelines_outbox_is_stored_and_read_back_with_the_cli(worker, kafka, settings, persona_name, tmp_path):
    probe = PersonaProbe(kafka, persona_name)
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    auditor = AuditProcess(settings, tmp_path / "logs", database, group=f"{settings.app_id}-audit-{persona_name}")
    recorder = AuditRecorder.open(database)
    try:
        probe.bind({})
        receipt = probe.trigger("linear", "issue", {"issue_key": "A-1"}, cost={"cost_usd": 0.01, "tokens": 3})
        auditor.spawn()
        asyncio.run(auditor.wait_ready())
        eventually(lambda: recorder.query(persona=persona_name, kind="persona.lease.released"), 120, "the run stored")
        cli = [sys.executable, "-m", "personaflow.cli", "audit", "--db", database]
        env = settings_env(settings)
        shown = subprocess.run(
            [*cli, "query", "--persona", persona_name], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert "persona.run.completed object(keys=" in shown and f"work_key={receipt['work_key']}" in shown
        rows = json.loads(
            subprocess.run(
                [*cli, "query", "--persona", persona_name, "--kind", "persona.run.*", "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert [r["kind"] for r in rows] == ["persona.run.started", "persona.run.completed"]
        assert rows[0]["run_id"] == receipt["run_id"]
        problems = subprocess.run([*cli, "problems"], env=env, capture_output=True, text=True)
        assert problems.returncode == 0 and " 0 problem(s); 0 gap(s)" in problems.stdout
    finally:
        auditor.stop()
        recorder.close()
        probe.close()


def test_a_nul_bearing_record_is_listed_and_the_consumer_stores_the_rest_without_exiting(
    settings, broker, tmp_path, database
):
    with own_pipeline(settings, broker, "auditnul") as (own, kafka):
        group = f"{own.app_id}-audit"
        auditor = AuditProcess(own, tmp_path / "logs", database, group=group)
        recorder = AuditRecorder.open(database)

        def stored(count: int) -> bool:
            assert auditor.alive(), f"the audit consumer exited:\n{auditor.log_tail()}"
            return recorder.counts()["events"] == count

        try:
            auditor.spawn()
            asyncio.run(auditor.wait_ready())
            poison = b"\x00\xffnot an event\x00"
            nul = event("persona:n", 1, persona="n", payload={"text": "a\x00b"})
            good = [event("persona:n", seq, persona="n") for seq in range(2, 12)]
            publish(kafka, [("n", poison), ("n", orjson.dumps(nul)), *[("n", orjson.dumps(e)) for e in good]])
            eventually(lambda: stored(11), 60, "the events after the poison stored")
            [problem] = recorder.problems(raw=True)
            assert (problem["kind"], problem["raw"]) == ("undecodable", poison)
            assert recorder.query(persona="n", limit=1)[0]["payload"] == {"text": "a\x00b"}

            publish(kafka, [("n", orjson.dumps(event("persona:n", 12, persona="n")))])  # a later batch
            eventually(lambda: stored(12), 60, "a later event stored")
            assert auditor.alive() and auditor.starts == 1
            assert sum(recorder.positions(group, kafka.client.names.outbox).values()) == 13
            assert recorder.gaps() == [] and recorder.counts()["problems"] == 1
        finally:
            auditor.stop()
            recorder.close()


def chained(stream: str, persona: str, prev: str, seq: int) -> tuple[bytes, str]:
    """An outbox event as the pipeline writes it: chained to ``prev``."""
    return chain.seal(prev, chain.canonical(event(stream, seq, persona=persona)))


def test_a_broken_chain_and_the_checkpoints_reach_persona_audit_the_dashboard_view_and_verify(
    settings, broker, tmp_path
):
    # A pipeline of its own: a forged outbox event in the session's would fail its replay check.
    with own_pipeline(settings, broker, "auditchain", web_port=free_port()) as (own, kafka):
        worker = SyncWorker(own, kafka, tmp_path / "worker-logs")
        database = f"sqlite:///{tmp_path / 'audit.db'}"
        group = f"{own.app_id}-audit"
        auditor = AuditProcess(own, tmp_path / "logs", database, group=group)
        stream = "persona:forged"
        first, _ = chained(stream, "forged", chain.GENESIS, 1)
        relinked, _ = chained(stream, "forged", "f" * 64, 2)  # not seq 1's digest

        def audit_view() -> dict:
            with urllib.request.urlopen(own.web_url + "/audit", timeout=10) as answer:
                return json.loads(answer.read())

        try:
            worker.start()
            auditor.spawn()
            asyncio.run(auditor.wait_ready())
            publish(kafka, [("forged", first), ("forged", relinked)])
            view = eventually(lambda: (v := audit_view())["broken"] and v, 120, "the broken chain on /audit")
            assert [(b["stream"], b["seq"], b["event_id"], b["group"]) for b in view["broken"]] == [
                (stream, 2, f"{stream}/2", group)
            ]
            assert "is not the stored head" in view["broken"][0]["detail"] and view["watched"] is True
            page = Cells()
            page.feed(dom := chromium("--dump-dom", own.web_url + "/").stdout)
            assert page.body.get("data-loaded") == "1", dom[-2000:]
            badge = re.search(r'<span id="audit" class="badge (\w+)"[^>]*data-broken="(\d+)"[^>]*>([^<]*)<', dom)
            assert badge is not None and badge.groups() == ("broken", "1", "1 broken chain"), dom[:3000]
            assert [(row["stream"], row["seq"]) for row in page.tables["chains"]] == [(stream, "2")]
            auditor.stop()  # a clean stop writes a checkpoint and publishes its copy
            view = eventually(lambda: (v := audit_view())["checkpoint"] and v, 60, "the checkpoint on /audit")
            assert view["checkpoint"]["number"] == 1 and view["checkpoint"]["group"] == group
            env = settings_env(own)
            cli = [sys.executable, "-m", "personaflow.cli", "audit", "--db", database, "--group", group, "verify"]
            shown = subprocess.run([*cli, "--with-topic"], env=env, capture_output=True, text=True)
            assert shown.returncode == 1, shown.stdout + shown.stderr
            assert "2 event(s) in 1 stream(s), 1 checkpoint(s) (1 on persona.audit): 1 broken stream(s)" in shown.stdout
            assert f"{stream} seq 2: broken link" in shown.stdout
        finally:
            auditor.stop()
            worker.stop()
