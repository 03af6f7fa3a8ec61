"""Replay the inboxes through the transitions and compare with what was published.

Replayable: folding ``persona.inbox`` and ``persona.run.inbox`` through the
transition functions reproduces ``persona.receipts`` and ``persona.outbox`` exactly. The
live pipeline may have published some records twice (after a crash) but always with the
same id and the same content, so the comparison is by id: every expected id present
with identical content, no id with two different contents, no id nobody expects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streams.inbox import PERSONA_INPUT, RUN_INPUT
from streams.outputs import Output

from . import persona, runs
from .store import MemoryStore

InboxRecord = tuple[int, int, bytes | None]  # partition, offset, value


def fold(
    records: Iterable[InboxRecord], decoder: msgspec.json.Decoder[Any], apply: Callable[..., list[Output]]
) -> list[Output]:
    """Apply every decodable record, per partition in offset order, from empty state."""
    store = MemoryStore()
    outputs: list[Output] = []
    for _partition, offset, value in sorted(records, key=lambda r: (r[0], r[1])):
        if value is None:
            continue
        try:
            record = decoder.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the live agent dead-letters these too
        txn = store.transaction()
        try:
            produced = apply(txn, record, offset)
        except Exception:
            continue
        outputs.extend(produced)
        store.apply(txn)
    return outputs


def expected_outputs(persona_inbox: Iterable[InboxRecord], run_inbox: Iterable[InboxRecord]) -> list[Output]:
    return fold(persona_inbox, PERSONA_INPUT, persona.apply) + fold(run_inbox, RUN_INPUT, runs.apply)


@dataclass
class Comparison:
    topic: str
    id_field: str
    expected: int = 0
    published: int = 0
    matching: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def describe(value: dict[str, Any]) -> str:
    """What a receipt or outbox event is about, for problem reports."""
    if "receipt_id" in value:
        return f"{value['persona']} request {value['request_id']} ({value['status']})"
    return f"{value.get('stream')}#{value.get('seq')} {value.get('kind')}"


def compare(
    topic: str, id_field: str, expected: Iterable[dict[str, Any]], published: Iterable[dict[str, Any] | None]
) -> Comparison:
    result = Comparison(topic, id_field)
    wanted: dict[str, dict[str, Any]] = {}
    for value in expected:
        identifier = value[id_field]
        if identifier in wanted and wanted[identifier] != value:
            result.problems.append(f"{identifier}: the replay itself produced two different records")
        wanted[identifier] = value
    seen: dict[str, dict[str, Any]] = {}
    for copy in published:
        if not copy or id_field not in copy:
            continue
        result.published += 1
        identifier = copy[id_field]
        if identifier in seen and seen[identifier] != copy:
            result.problems.append(f"{identifier}: published twice with different content")
        seen.setdefault(identifier, copy)
    result.expected = len(wanted)
    for identifier, value in wanted.items():
        if identifier not in seen:
            result.problems.append(f"{identifier}: expected but never published: {describe(value)}")
        elif seen[identifier] != value:
            result.problems.append(f"{identifier}: published content differs from the replay: {describe(value)}")
        else:
            result.matching += 1
    for identifier in sorted(seen.keys() - wanted.keys()):
        result.problems.append(f"{identifier}: published but not produced by the replay: {describe(seen[identifier])}")
    return result


def verify(
    persona_inbox: Iterable[InboxRecord],
    run_inbox: Iterable[InboxRecord],
    receipts: Iterable[dict[str, Any] | None],
    outbox: Iterable[dict[str, Any] | None],
) -> list[Comparison]:
    outputs = expected_outputs(persona_inbox, run_inbox)

    def values(role: str) -> list[dict[str, Any]]:
        return [json.loads(o.value_bytes() or b"null") for o in outputs if o.role == role]

    expected, published = values("outbox"), list(outbox)
    # A stream published partly before the hash chain existed continued from the genesis value
    # where the replay (from its first event) chains from seq 1: compare its events without
    # the digest fields. Every other stream's digests must match too.
    legacy = {e["stream"] for e in published if e and "stream" in e and e.get("digest") is None}
    if legacy:
        expected, published = _without_digests(expected, legacy), _without_digests(published, legacy)
    return [
        compare("persona.receipts", "receipt_id", values("receipts"), receipts),
        compare("persona.outbox", "event_id", expected, published),
    ]


def _without_digests(events: list[Any], streams: set[str]) -> list[Any]:
    return [
        {k: v for k, v in e.items() if k not in ("prev_digest", "digest")} if e and e.get("stream") in streams else e
        for e in events
    ]
