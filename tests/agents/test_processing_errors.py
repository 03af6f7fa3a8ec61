"""A record that makes a transition raise is dead-lettered with the error; the stream goes on.

No public input can make a transition raise (ingress validates it), so the poison is
written straight to the internal inbox, as a buggy or older producer of that topic
could: a ``record_spend`` command without a cost, which the contract forbids and the
transition asserts never to see.
"""

from __future__ import annotations

import base64
import uuid

import pytest

from engine.publish import Partitioner
from streams.inbox import ControlReceived
from streams.inbox import encode as encode_inbox
from streams.wire import ControlCommand

from ..support.personas import PersonaProbe

pytestmark = pytest.mark.broker


def neighbour(name: str, partitions: int) -> str:
    """Another persona name in the same partition as ``name``."""
    partition = Partitioner(partitions)
    target = partition(name.encode())
    while True:
        candidate = f"{name[:50]}-n{uuid.uuid4().hex[:6]}"
        if partition(candidate.encode()) == target:
            return candidate


def test_a_record_that_makes_the_transition_raise_is_dead_lettered_and_the_partition_goes_on(
    worker, kafka, settings, persona_name
):
    poisoned, other = (
        PersonaProbe(kafka, persona_name),
        PersonaProbe(kafka, neighbour(persona_name, settings.partitions)),
    )
    dlq = kafka.tail("dlq")
    try:
        poisoned.bind({"budget": {"daily_usd": 1.0}})
        other.bind({"budget": {"daily_usd": 1.0}})
        poison = ControlReceived(
            at_ms=1,
            command=ControlCommand(
                command_id=f"{persona_name}-poison", persona=persona_name, action="record_spend", actor="buggy-producer"
            ),
        )
        kafka.send("persona_inbox", persona_name, encode_inbox(poison))
        after = poisoned.trigger("linear", "issue", {"issue_key": "P-1"}, cost={"cost_usd": 0.25, "tokens": 1})
        beside = other.trigger("linear", "issue", {"issue_key": "P-2"}, cost={"cost_usd": 0.5, "tokens": 1})
        assert (after["status"], beside["status"]) == ("completed", "completed")

        [letter] = [
            r.value
            for r in dlq.until(lambda seen: any(r.key == persona_name for r in seen), 30, "the letter")
            if r.key == persona_name
        ]
        assert letter["source_topic"].endswith("persona.inbox")
        assert letter["error"].startswith(
            "processing failed: AssertionError: record_spend without a cost passed"
            " validation (in _record_spend at commands.py:"
        )
        assert "the record was skipped and the stream went on" in letter["error"]
        assert base64.b64decode(letter["value_b64"]) == encode_inbox(poison)
        # The poison changed nothing: the persona's spend is its one run.
        assert poisoned.status(lambda s: s["last_run"] is not None)["budget"]["spent_today_usd"] == 0.25
    finally:
        poisoned.close()
        other.close()
