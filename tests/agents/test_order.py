"""Order across input topics (contract guarantee 7) and the grace for unbound personas.

Producers publish back to back without waiting for any effect: both records are in
flight at once, on different topics, as a webhook bridge would send them.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.kafka import new_producer

from ..support.personas import PersonaProbe

pytestmark = pytest.mark.broker

COUNT = 50


async def back_to_back(kafka, pairs: list[tuple[tuple[str, str, dict], tuple[str, str, dict]]]) -> None:
    """Send each pair's two records without awaiting the first before the second."""
    client = kafka.client
    producer = new_producer(client.settings, client.bootstrap, linger_ms=0)
    await producer.start()
    try:
        pending = []
        for first, second in pairs:
            for role, key, value in (first, second):
                pending.append(
                    await producer.send(client.names.name(role), json.dumps(value).encode(), key=key.encode())
                )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def trigger(persona: str, request_id: str) -> dict:
    return {
        "request_id": request_id,
        "persona": persona,
        "provider": "linear",
        "kind": "issue",
        "metadata": {"issue_key": request_id},
    }


def test_bind_then_trigger_back_to_back_reach_the_inbox_in_that_order_for_50_personas(worker, kafka, persona_name):
    names = [f"{persona_name[:60]}-{n}" for n in range(COUNT)]
    inbox = kafka.tail("persona_inbox")
    receipts = kafka.tail("receipts")
    kafka.run(
        back_to_back(
            kafka,
            [
                (
                    ("bindings", name, {"name": name, "entry_workflow": "wf"}),
                    ("triggers", name, trigger(name, f"{name}-t")),
                )
                for name in names
            ],
        )
    )
    receipts.until(
        lambda seen: {r.key for r in seen if (r.value or {}).get("status") == "completed"} >= set(names),
        60,
        "a completed receipt for every persona",
    )
    seen = inbox.catch_up()
    order = {name: [r.value["type"] for r in seen if r.key == name] for name in names}
    assert all(types[:2] == ["binding", "trigger"] for types in order.values()), order
    assert not [r for r in receipts.seen if r.key in names and r.value["status"] != "completed"]


def test_pause_then_trigger_back_to_back_queue_the_trigger_for_50_personas(worker, kafka, persona_name):
    names = [f"{persona_name[:60]}-{n}" for n in range(COUNT)]
    statuses = kafka.tail("status")
    for name in names:
        kafka.send("bindings", name, {"name": name, "entry_workflow": "wf"})
    statuses.until(lambda seen: {r.key for r in seen} >= set(names), 60, "every persona bound")
    receipts = kafka.tail("receipts")
    kafka.run(
        back_to_back(
            kafka,
            [
                (
                    ("control", name, {"command_id": f"{name}-p", "persona": name, "action": "pause", "actor": "ops"}),
                    ("triggers", name, trigger(name, f"{name}-t")),
                )
                for name in names
            ],
        )
    )
    decided = receipts.until(lambda seen: {r.key for r in seen} >= set(names), 60, "a receipt for every trigger")
    outcomes = {r.key: r.value["status"] for r in decided if r.key in names}
    assert set(outcomes.values()) == {"queued"}, outcomes


def test_a_trigger_published_before_its_binding_runs_once_the_binding_arrives(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    inbox = kafka.tail("persona_inbox")
    try:
        request_id = probe.trigger("linear", "issue", {"issue_key": "EARLY-1"}, wait=False)
        inbox.wait_for_key(persona_name)  # forwarded, unbound: it is held
        probe.bind({"budget": {"daily_usd": 1.0}})
        [receipt] = probe.receipts_for(request_id)
        assert receipt["status"] == "completed" and receipt["work_key"] == "linear:issue:EARLY-1"
        assert [r.value["type"] for r in inbox.catch_up() if r.key == persona_name][:2] == ["trigger", "binding"]
        [received] = probe.wait_events("persona.trigger.received")
        assert received["cause"]["request_id"] == request_id
    finally:
        probe.close()


def test_a_trigger_whose_binding_never_arrives_is_rejected_after_the_grace(worker, kafka, settings, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    inbox = kafka.tail("persona_inbox")
    try:
        request_id = probe.trigger("linear", "issue", {"issue_key": "LATE-1"}, wait=False)
        [receipt] = probe.receipts_for(request_id)
        assert receipt["status"] == "rejected"
        assert receipt["error"] == (
            f"unknown persona {persona_name!r}: no binding arrived on persona.bindings within"
            f" {settings.unbound_grace_ms} ms of the trigger"
        )
        [held] = inbox.wait_for_key(persona_name)
        assert receipt["at_ms"] >= held["at_ms"] + settings.unbound_grace_ms
        # The same request again later gets the same answer, not a second wait.
        probe.trigger("linear", "issue", {"issue_key": "LATE-1"}, request_id=request_id, wait=False)
        assert probe.receipts_for(request_id, 2)[1] == receipt
    finally:
        probe.close()
