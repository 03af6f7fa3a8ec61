"""The audit store's write protocol and queries: one suite, run against SQLite and a real
PostgreSQL server (``RecorderContract`` below, one subclass per backend)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from audit.recorder import AuditRecorder, LogRecord
from audit.schema import MIGRATIONS, current_version, migrate

T = "persona.outbox"


def event(
    stream: str,
    seq: int,
    kind: str = "persona.trigger.received",
    persona: str = "p",
    payload: dict[str, Any] | None = None,
    run_id: str | None = None,
    at: int | None = None,
) -> dict[str, Any]:
    return {
        "event_id": f"{stream}/{seq}",
        "stream": stream,
        "seq": seq,
        "kind": kind,
        "persona": persona,
        "run_id": run_id,
        "occurred_at_ms": at if at is not None else 1000 + seq,
        "payload": payload or {},
        "cause": {"type": "trigger"},
    }


def records(events: list[dict[str, Any]], partition: int = 0, first_offset: int = 0) -> list[LogRecord]:
    return [LogRecord(T, partition, first_offset + n, orjson.dumps(e)) for n, e in enumerate(events)]


class RecorderContract:
    """What every backend must do. Subclasses provide the ``recorder`` fixture."""

    def test_each_event_is_stored_once_and_positions_move_with_it(self, recorder: AuditRecorder):
        batch = records([event("persona:p", n) for n in range(1, 6)])
        assert recorder.record("g", batch).stored == 5
        again = recorder.record("g", batch)  # read again after a crash
        assert (again.stored, again.already, again.problems) == (0, 5, [])
        assert recorder.counts()["events"] == 5
        assert recorder.positions("g", T) == {0: 5}
        assert recorder.positions("other", T) == {}

    def test_a_copy_with_other_content_is_a_problem_and_not_stored(self, recorder: AuditRecorder):
        recorder.record("g", records([event("persona:p", 1, payload={"a": 1})]))
        forged = recorder.record("g", records([event("persona:p", 1, payload={"a": 2})], first_offset=1))
        assert forged.stored == 0 and "persona:p/1 was stored from persona.outbox[0]@0" in forged.problems[0]
        [stored] = recorder.query()
        assert stored["payload"] == {"a": 1}
        [problem] = recorder.problems()
        assert (problem["kind"], problem["event_id"], problem["offset"]) == ("conflict", "persona:p/1", 1)
        recorder.record("g", records([event("persona:p", 1, payload={"a": 2})], first_offset=1))  # found again
        assert recorder.counts()["problems"] == 1

    def test_a_conflict_inside_one_batch_is_caught_too(self, recorder: AuditRecorder):
        result = recorder.record(
            "g",
            records(
                [
                    event("s:x", 1, payload={"a": 1}),
                    event("s:x", 1, payload={"a": 2}),
                    event("s:x", 1, payload={"a": 1}),
                ]
            ),
        )
        assert (result.stored, result.already, len(result.problems)) == (1, 1, 1)

    def test_undecodable_and_invalid_records_are_problems_and_the_position_still_moves(self, recorder: AuditRecorder):
        batch = [
            LogRecord(T, 2, 0, b"not json"),
            LogRecord(T, 2, 1, orjson.dumps({"event_id": "x"})),
            LogRecord(T, 2, 2, None),
            LogRecord(T, 2, 3, orjson.dumps({**event("s:y", 1), "event_id": "s:y/2"})),
            *records([event("s:y", 1)], partition=2, first_offset=4),
        ]
        result = recorder.record("g", batch)
        assert result.stored == 1
        assert [p["kind"] for p in recorder.problems()] == ["undecodable", "invalid", "invalid", "invalid"]
        assert recorder.positions("g", T) == {2: 5}

    def test_gaps_are_listed_until_filled(self, recorder: AuditRecorder):
        recorder.record("g", records([event("a", 1), event("a", 2), event("a", 5), event("b", 3)]))
        assert recorder.gaps() == [{"stream": "a", "first": 3, "last": 4}, {"stream": "b", "first": 1, "last": 2}]
        recorder.record("g", records([event("a", 3), event("a", 4), event("b", 1), event("b", 2)], first_offset=4))
        assert recorder.gaps() == []

    def test_query_filters_by_persona_kind_run_and_time(self, recorder: AuditRecorder):
        recorder.record(
            "g",
            records(
                [
                    event("persona:p", 1, "persona.run.started", persona="p", run_id="r1", at=10),
                    event("persona:p", 2, "persona.run.completed", persona="p", run_id="r1", at=20),
                    event("persona:q", 1, "persona.run.started", persona="q", run_id="r2", at=15),
                ]
            ),
        )
        ids = lambda **f: [r["event_id"] for r in recorder.query(**f)]  # noqa: E731
        assert ids() == ["persona:p/1", "persona:q/1", "persona:p/2"]
        assert ids(persona="q") == ["persona:q/1"]
        assert ids(kind="persona.run.completed") == ["persona:p/2"]
        assert ids(kind="persona.run.*", since_ms=15) == ["persona:q/1", "persona:p/2"]
        assert ids(run_id="r1", limit=1) == ["persona:p/1"]

    def test_the_schema_is_migrated_once_and_reopening_changes_nothing(self, recorder: AuditRecorder):
        assert current_version(recorder.engine) == MIGRATIONS[-1][0]
        recorder.record("g", records([event("s", 1)]))
        assert migrate(recorder.engine) == MIGRATIONS[-1][0]
        assert recorder.counts()["events"] == 1


class TestSQLite(RecorderContract):
    @pytest.fixture
    def recorder(self, tmp_path: Path) -> Iterator[AuditRecorder]:
        recorder = AuditRecorder.open(f"sqlite:///{tmp_path / 'audit.db'}")
        yield recorder
        recorder.close()


class TestPostgreSQL(RecorderContract):
    @pytest.fixture
    def recorder(self, postgres_url: str) -> Iterator[AuditRecorder]:
        recorder = AuditRecorder.open(postgres_url)
        assert recorder.engine.dialect.name == "postgresql"
        yield recorder
        recorder.close()


def test_a_bad_database_url_says_what_is_wrong():
    with pytest.raises(sa.exc.ArgumentError):
        AuditRecorder.open("nosuchdb://x")
