"""Joining one ingress pass's reports into one inbox record per persona."""

from __future__ import annotations

import msgspec

from streams.inbox import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REPORTS,
    PERSONA_INPUT,
    ReportBatches,
    RunReportReceived,
    RunReportsReceived,
)
from streams.wire import RunEvent


def report(persona: str, n: int) -> RunReportReceived:
    event = RunEvent(event_id=f"e{n}", run_id="run-1", lease_id="l", kind="heartbeat", persona=persona)
    return RunReportReceived(at_ms=1000 + n, persona=persona, event=event)


def joined(reports: list[tuple[RunReportReceived, int]]) -> list[RunReportsReceived]:
    """What ingress publishes for these reports (with their sizes), in order."""
    batches, published = ReportBatches(), []
    for item, size in reports:
        batch = batches.add(item, size)
        if batch is not None:
            published.append(batch)
    return published


def test_a_personas_reports_of_one_pass_become_one_record_in_their_order():
    [batch] = joined([(report("ana", n), 10) for n in range(5)])
    assert [r.event.event_id for r in batch.reports] == ["e0", "e1", "e2", "e3", "e4"]
    assert batch.persona == "ana" and batch.at_ms == 1000


def test_each_persona_gets_its_own_record_placed_where_its_first_report_was():
    published = joined([(report(p, n), 10) for n, p in enumerate(["ana", "bo", "ana", "bo", "ana"])])
    assert [(b.persona, [r.event.event_id for r in b.reports]) for b in published] == [
        ("ana", ["e0", "e2", "e4"]),
        ("bo", ["e1", "e3"]),
    ]


def test_a_batch_holds_at_most_max_batch_reports():
    published = joined([(report("ana", n), 1) for n in range(MAX_BATCH_REPORTS * 2 + 1)])
    assert [len(b.reports) for b in published] == [MAX_BATCH_REPORTS, MAX_BATCH_REPORTS, 1]


def test_a_batch_stays_within_max_batch_bytes_and_a_large_report_travels_alone():
    half = MAX_BATCH_BYTES // 2
    sizes = [half, half, 1, MAX_BATCH_BYTES + 1, 1]
    published = joined([(report("ana", n), size) for n, size in enumerate(sizes)])
    assert [[r.event.event_id for r in b.reports] for b in published] == [["e0", "e1"], ["e2"], ["e3"], ["e4"]]


def test_a_batch_reads_back_from_the_inbox_as_it_was_written():
    [batch] = joined([(report("ana", n), 10) for n in range(3)])
    assert PERSONA_INPUT.decode(msgspec.json.encode(batch)) == batch
