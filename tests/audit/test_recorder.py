"""The audit store's write protocol and queries: one suite, run against SQLite and a real
PostgreSQL server (``RecorderContract`` below, one subclass per backend)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from audit import recorder as recorder_module
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


def nested(depth: int) -> dict[str, Any]:
    """A payload ``depth`` objects deep (orjson writes at most 254 levels)."""
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


#: Records that are not outbox events the store can hold, by what is wrong, with the kind
#: of problem each must become.
BAD: dict[str, tuple[str, bytes | None]] = {
    "not JSON": ("undecodable", b"not json"),
    "a raw NUL inside a JSON string": ("undecodable", b'{"event_id": "s:a/9\x00"}'),
    "NUL bytes only": ("undecodable", b"\x00\x00\x00"),
    "huge (5 MB), not JSON": ("undecodable", b"<" + b"\x00\xff" * 2_500_000),
    "invalid UTF-8": ("undecodable", b'{"a": "\xff\xfe\xfd"}'),
    "wrong schema": ("invalid", orjson.dumps({"event_id": "x", "note": "\x00"})),
    "a JSON array": ("invalid", orjson.dumps([event("s:a", 9)])),
    "a null value (tombstone)": ("invalid", None),
    "a NUL in an id": ("invalid", orjson.dumps(event("s:\x00", 1))),
    "a kind longer than its column": ("invalid", orjson.dumps(event("s:a", 9, kind="k" * 200))),
    "seq past 64 bits": ("invalid", orjson.dumps(event("s:a", 2**63))),
    "nested deeper than orjson writes": ("invalid", json.dumps(event("s:a", 9, payload=nested(300))).encode()),
}


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

    def test_no_record_stops_the_store_every_bad_one_is_a_problem_with_its_bytes(self, recorder: AuditRecorder):
        nul = event("s:nul", 1, payload={"text": "a\x00b", "k\x00": ["\x00", {"\x00": "\x00"}]})
        huge = event("s:big", 1, payload={"text": "x" * 3_000_000})
        good = [event("s:a", 1), nul, event("s:a", 2), huge, event("s:a", 3)]
        values: list[bytes | None] = []
        for n, (_kind, value) in enumerate(BAD.values()):  # good and bad ones interleaved
            values.append(value)
            if n % 3 == 0 and good:
                values.append(orjson.dumps(good.pop(0)))
        values.extend(orjson.dumps(e) for e in good)
        batch = [LogRecord(T, 0, offset, value) for offset, value in enumerate(values)]

        result = recorder.record("g", batch)

        assert result.stored == 5 and len(result.problems) == len(BAD)
        found = recorder.problems(raw=True)
        expected = [(kind, value) for kind, value in BAD.values()]
        assert [(p["kind"], p["raw"]) for p in found] == expected  # raw bytes kept whole, a tombstone as None
        assert [p["raw_size"] for p in found] == [None if v is None else len(v) for _k, v in expected]
        for problem in found:  # every text column is text both backends hold
            for name in ("kind", "event_id", "topic", "detail", "record"):
                text = problem[name] or ""
                assert "\x00" not in text
                text.encode("utf-8")  # raises on an unpaired surrogate
        stored = {row["event_id"]: row for row in recorder.query(limit=100)}
        assert sorted(stored) == ["s:a/1", "s:a/2", "s:a/3", "s:big/1", "s:nul/1"]
        assert stored["s:nul/1"]["payload"] == nul["payload"]  # read back exactly, NULs and all
        assert stored["s:big/1"]["payload"] == huge["payload"]
        assert recorder.positions("g", T) == {0: len(batch)}

        again = recorder.record("g", batch)  # read again after a crash: nothing doubles
        assert (again.stored, again.already) == (0, 5) and recorder.counts()["problems"] == len(BAD)
        later = recorder.record("g", records([event("s:a", 4)], first_offset=len(batch)))
        assert later.stored == 1 and recorder.positions("g", T) == {0: len(batch) + 1}

    def test_a_record_the_database_refuses_is_a_problem_and_the_rest_of_its_batch_is_stored(
        self, recorder: AuditRecorder, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setattr(recorder_module, "check_storable", lambda event: None)  # let it reach the database
        batch = records([event("s:a", 1), event("s:a", 2), event("s:b", 2**63), event("s:a", 3), event("s:a", 4)])
        result = recorder.record("g", batch)
        assert result.stored == 4 and len(result.problems) == 1
        [problem] = recorder.problems(raw=True)
        assert (problem["kind"], problem["offset"], problem["raw"]) == ("refused", 2, batch[2].value)
        assert problem["event_id"] == f"s:b/{2**63}" and "the database refused it" in problem["detail"]
        assert [row["event_id"] for row in recorder.query()] == ["s:a/1", "s:a/2", "s:a/3", "s:a/4"]
        assert recorder.positions("g", T) == {0: 5}
        again = recorder.record("g", batch)  # read again after a crash: nothing doubles
        assert (again.stored, again.already) == (0, 4) and recorder.counts()["problems"] == 1

    def test_a_database_failure_that_is_not_about_a_record_stops_the_recorder_and_moves_nothing(
        self, recorder: AuditRecorder, monkeypatch: pytest.MonkeyPatch
    ):
        def lost(*_args: Any) -> None:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(recorder, "_write", lost)
        with pytest.raises(sa.exc.OperationalError):
            recorder.record("g", records([event("s:a", 1)]))
        assert recorder.positions("g", T) == {} and recorder.problems() == []

    def test_a_version_1_database_is_migrated_and_keeps_its_problems(self, recorder: AuditRecorder):
        url = recorder.engine.url.render_as_string(hide_password=False)
        with recorder.engine.begin() as connection:  # back to the schema of version 1
            connection.execute(sa.text("ALTER TABLE audit_problems DROP COLUMN raw"))
            connection.execute(sa.text("ALTER TABLE audit_events DROP COLUMN raw"))
            connection.execute(sa.text("DELETE FROM audit_schema_versions WHERE version > 1"))
            connection.execute(
                sa.text(
                    'INSERT INTO audit_problems (kind, topic, partition, "offset", detail, record, found_at_ms)'
                    " VALUES ('undecodable', :topic, 0, 0, 'not JSON', 'not json', 1)"
                ),
                {"topic": T},
            )
        recorder.close()
        migrated = AuditRecorder.open(url)
        try:
            assert current_version(migrated.engine) == MIGRATIONS[-1][0] >= 2
            migrated.record(
                "g", [LogRecord(T, 0, 1, b"\x00"), *records([event("s:n", 1, payload={"t": "\x00"})], 0, 2)]
            )
            assert [(p["offset"], p["record"], p["raw"]) for p in migrated.problems(raw=True)] == [
                (0, "not json", None),  # found before version 2: no bytes kept
                (1, "\\x00", b"\x00"),
            ]
            [stored] = migrated.query()
            assert stored["payload"] == {"t": "\x00"}
        finally:
            migrated.close()

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
