"""Two workers in one group: partitions split, status is routed, unsettled work is
gathered from both, failover keeps state.

A pipeline of its own (topic prefix and consumer group) on the session broker, so the
rebalances here do not disturb the session worker.
"""

from __future__ import annotations

import json

import pytest

from personaflow.embedded import free_port

from ..support.cluster import SyncWorker, own_pipeline
from ..support.personas import PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker


@pytest.fixture
def two_worker_pipeline(settings, broker):
    with own_pipeline(settings, broker, "two") as pipeline:
        yield pipeline


def test_two_workers_share_partitions_route_status_gather_unsettled_work_and_survive_losing_one(
    two_worker_pipeline, data_dir, persona_name
):
    base, kafka = two_worker_pipeline
    workers = [
        SyncWorker(base.with_overrides(web_port=free_port()), kafka, data_dir / f"logs-{base.app_id}-{n}")
        for n in (1, 2)
    ]
    probes = [PersonaProbe(kafka, f"{persona_name[:50]}-{n}") for n in range(6)]
    try:
        for worker in workers:
            worker.start()
        for probe in probes:
            probe.bind({"budget": {"daily_usd": 1.0}})
            assert (
                probe.trigger("linear", "issue", {"issue_key": "A-1"}, cost={"cost_usd": 0.01, "tokens": 1})["status"]
                == "completed"
            )

        listings = [
            eventually(
                lambda w=w: (names := set(json.loads(w.get("/personas")))) >= {p.name for p in probes} and names,
                60,
                "every persona listed",
            )
            for w in workers
        ]
        assert listings[0] == listings[1]
        local = [set(json.loads(w.get("/personas?local=1"))) & {p.name for p in probes} for w in workers]
        assert local[0] and local[1] and not local[0] & local[1], "each persona is owned by exactly one worker"
        for probe in probes:  # either worker answers for any persona (routed to its owner)
            assert json.loads(workers[0].get(f"/personas/{probe.name}")) == json.loads(
                workers[1].get(f"/personas/{probe.name}")
            )

        for probe in probes:  # unsettled work is gathered from both workers, by either of them
            probe.control("pause")
            assert probe.trigger("linear", "issue", {"issue_key": "Q-1"})["status"] == "queued"
        expected = {f"trigger://{p.name}/linear:issue:Q-1" for p in probes}
        for worker in workers:
            answer = json.loads(worker.get("/unsettled"))
            assert {i["id"] for i in answer["queued_triggers"]} == expected and answer["counts"]["queued"] == 6
        local = [{i["id"] for i in json.loads(w.get("/unsettled?local=1"))["queued_triggers"]} for w in workers]
        assert local[0] and local[1] and local[0] | local[1] == expected and not local[0] & local[1]
        for probe in probes:
            probe.control("resume")

        workers[1].stop(kill=True)
        for probe in probes:
            assert (
                probe.trigger("linear", "issue", {"issue_key": "A-2"}, cost={"cost_usd": 0.01, "tokens": 1})["status"]
                == "completed"
            )
        survivors = eventually(
            lambda: (s := json.loads(workers[0].get("/personas?local=1"))) and all(p.name in s for p in probes) and s,
            60,
            "the survivor owns every persona",
        )
        assert {survivors[p.name]["budget"]["spent_today_usd"] for p in probes} == {0.02}
    finally:
        for probe in probes:
            probe.close()
        for worker in workers:
            worker.stop()
