"""Replaying the inboxes reproduces the published records (README, "Guarantees")."""

from __future__ import annotations

import json

from streams.inbox import PERSONA_INPUT, BindingChanged, TriggerReceived, encode
from streams.wire import TriggerRequest
from tables.replay import compare, verify

from .harness import T0, Harness, cost, merge_captain


def inbox() -> list[tuple[int, int, bytes]]:
    records = [BindingChanged(at_ms=T0, persona="merge_captain", binding=merge_captain())]
    for n in range(3):
        records.append(
            TriggerReceived(
                at_ms=T0 + n,
                request=TriggerRequest(
                    request_id=f"r{n}",
                    persona="merge_captain",
                    provider="github",
                    kind="pull_request",
                    metadata={"repository": "r", "number": str(n % 2)},
                    cost=cost(0.001, 1),
                ),
            )
        )
    return [(0, offset, encode(record)) for offset, record in enumerate(records)]


def published(records) -> tuple[list[dict], list[dict]]:
    h = Harness()
    for _, offset, raw in records:
        h.feed(PERSONA_INPUT.decode(raw), position=offset)
    values = lambda role: [json.loads(o.value_bytes()) for o in h.outputs if o.role == role]  # noqa: E731
    return values("receipts"), values("outbox")


def test_published_records_match_the_replay_even_when_some_were_sent_twice():
    records = inbox()
    receipts, outbox = published(records)
    results = verify(records, [], receipts + receipts[:1], outbox + outbox[-2:])
    assert all(r.ok for r in results), [r.problems for r in results]
    assert results[0].matching == len(receipts) and results[1].matching == len(outbox)


def test_missing_changed_and_unexpected_records_are_reported():
    records = inbox()
    receipts, outbox = published(records)
    changed = dict(outbox[2], payload={"tampered": True})
    results = verify(records, [], receipts[1:], outbox[:2] + [changed] + outbox[3:] + [dict(outbox[0], event_id="x/1")])
    problems = results[0].problems + results[1].problems
    assert any("expected but never published" in p for p in problems)
    assert any("published content differs" in p or "published twice with different content" in p for p in problems)
    assert any("published but not produced by the replay" in p for p in problems)


def test_compare_flags_an_id_published_with_two_contents():
    result = compare("t", "id", [{"id": "a", "v": 1}], [{"id": "a", "v": 1}, {"id": "a", "v": 2}])
    assert not result.ok
    assert "a: published twice with different content" in result.problems
