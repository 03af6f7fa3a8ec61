"""The hash chain of outbox streams (README, "Audit"): each event links to the last one of
its stream, a replay gives the same digests, a changed event no longer recomputes."""

from __future__ import annotations

import json

import msgspec

from streams import chain, records, wire
from tables import replay
from tables.runstate import RunState
from tables.state import PersonaHead, PersonaState
from tables.step import outbox_output

from .harness import T0, Harness, cost
from .test_execution import P, Runs, runner
from .test_replay import inbox, published


def chained(h: Harness) -> dict[str, list[dict]]:
    streams: dict[str, list[dict]] = {}
    for output in h.outputs:
        if output.role == "outbox":
            event = json.loads(output.raw)
            streams.setdefault(event["stream"], []).append(event)
    return streams


def test_each_stream_starts_at_genesis_and_every_event_names_its_predecessor():
    h = Runs()
    run_id = h.start(runner()).run_id
    h.say(run_id, "started")
    h.say(run_id, "completed", cost=cost(0.02, 7))
    streams = chained(h)
    assert {f"persona:{P}", f"run:{run_id}"} <= streams.keys()
    for events in streams.values():
        assert events[0]["prev_digest"] == chain.GENESIS
        for before, after in zip(events, events[1:], strict=False):
            assert after["prev_digest"] == before["digest"]
        assert [chain.recompute(event) for event in events] == [event["digest"] for event in events]
    # The state keeps each stream's head for the next event.
    state = PersonaState(h.store.transaction(), P)
    head = state.head()
    assert head is not None and head.digest == streams[f"persona:{P}"][-1]["digest"]
    run = RunState(state).run(run_id)
    assert run is not None and run.digest == streams[f"run:{run_id}"][-1]["digest"]


def test_the_replay_reproduces_every_digest():
    records_ = inbox()
    _, outbox = published(records_)
    again = [
        json.loads(o.value_bytes() or b"null") for o in replay.expected_outputs(records_, []) if o.role == "outbox"
    ]
    assert [(e["event_id"], e["digest"]) for e in again] == [(e["event_id"], e["digest"]) for e in outbox]
    assert all(result.ok for result in replay.verify(records_, [], [], outbox)[1:])


def test_a_changed_event_no_longer_recomputes_and_its_successor_names_the_original():
    _, outbox = published(inbox())
    changed = dict(outbox[1], payload={**outbox[1]["payload"], "tampered": True})
    assert chain.recompute(outbox[1]) == outbox[1]["digest"]
    assert chain.recompute(changed) != changed["digest"]
    # Recomputing the changed event's digest does not help: the next event names the old one.
    assert outbox[2]["prev_digest"] == outbox[1]["digest"] != chain.recompute(changed)


def test_the_published_event_is_the_canonical_body_with_the_digests_appended():
    output, digest = outbox_output("persona:p", 1, "k", "p", None, T0, {"b": 1, "a": [1.5, "é"]}, {"type": "t"})
    raw = output.value_bytes()
    assert raw is not None
    event = records.OutboxEvent.model_validate_json(raw)  # contract-valid
    assert event.digest == digest and event.prev_digest == chain.GENESIS
    body = raw[: raw.index(b',"prev_digest"')] + b"}"
    assert body == chain.canonical(json.loads(raw))
    assert digest == chain.link(chain.GENESIS, body)
    # Every field of the contract's event except the digests is covered by the body.
    covered = set(json.loads(body))
    assert covered == set(records.OutboxEvent.model_fields) - set(chain.DIGEST_FIELDS)


def test_rows_from_before_the_chain_decode_with_the_genesis_head():
    head = msgspec.json.decode(b'{"name": "p", "seq": 3}', type=PersonaHead)
    assert head.digest == chain.GENESIS
    old = (
        b'{"event_id":"persona:p/1","stream":"persona:p","seq":1,"kind":"k","persona":"p",'
        b'"occurred_at_ms":1,"payload":{},"cause":{}}'
    )
    assert msgspec.json.decode(old, type=wire.OutboxEvent).digest is None


def test_the_replay_ignores_digests_only_in_streams_published_partly_before_the_chain():
    records_ = inbox()
    _, outbox = published(records_)
    legacy = [{k: v for k, v in e.items() if k not in chain.DIGEST_FIELDS} for e in outbox[:2]]
    relinked = [dict(e, prev_digest=chain.GENESIS) if e["seq"] == 3 else e for e in outbox[2:]]
    assert replay.verify(records_, [], [], legacy + relinked)[1].ok
    forged = [dict(e, digest="0" * 64) if e["seq"] == 3 else e for e in outbox]
    assert not replay.verify(records_, [], [], forged)[1].ok
