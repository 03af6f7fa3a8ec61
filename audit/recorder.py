"""Recording outbox records into the audit store, and reading them back.

:meth:`AuditRecorder.record` is the whole write protocol, in one database transaction:

1. decode each record; one that is not an outbox event the store can hold becomes a problem
   (``undecodable`` or ``invalid``) that keeps the record's bytes, never an exception that
   stops the consumer;
2. read the digests already stored for the batch's event ids;
3. insert the events not stored yet (a second copy inside the batch counts as stored); one
   whose chain digest does not recompute, or whose ``prev_digest`` is not the digest stored
   for its stream's previous seq, is stored and also becomes a ``chain`` problem;
4. a copy whose digest differs from the stored one is not stored: it becomes a
   ``conflict`` problem naming both places;
5. move the consumer's positions past the batch;
6. commit.

Why a crash anywhere is safe: events and positions commit together, so after a crash the
consumer resumes exactly after the last committed batch (the process-recorder idea:
the database, not Kafka, holds the position). Records read again are either stored
already with the same digest (nothing happens) or were never stored. Problems are keyed by
the record's place in the log, so a problem found twice is listed once.

If the database refuses the batch because of one record's content (a value a column cannot
hold: a ``DataError``, an ``IntegrityError``, a value the driver cannot convert), the
transaction rolls back and the batch is written again in halves, each in its own
transaction, down to that record alone, which becomes a ``refused`` problem with its bytes
and the database's error; the other records are stored. Any other failure (connection
lost, lock, full disk) stops the consumer with nothing of the batch committed.

No record can stop the store, so nothing it writes is text a backend refuses. A problem's
text columns escape NUL and invalid UTF-8 (``\\x00``, ``\\xff``) and its ``raw`` column keeps
the whole record as bytes (NULL for a tombstone). An event's ids (``event_id``, ``stream``,
``kind``, ``persona``, ``run_id``) must be free of NUL and fit their columns, and ``seq``
and ``occurred_at_ms`` must fit 64 bits, on every backend (SQLite alone would take more).

``\\u0000`` in a string of an event's payload or cause (valid JSON, but PostgreSQL's jsonb
and text cannot hold U+0000) does not make a problem: the event is stored, on both backends
alike. Its ``payload`` and ``cause`` columns hold a copy with each NUL replaced by U+FFFD
(what SQL on those columns sees), ``raw`` keeps the record as read, and
:meth:`AuditRecorder.query` returns the exact payload and cause from it; the digest is the
exact event's. A NUL in an id makes the event ``invalid`` instead: ids are compared and
indexed, and a replaced character could make two events one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import sqlalchemy as sa

from streams import chain

from .schema import events, migrate, positions, problems

#: How much of a bad record a problem's readable ``record`` keeps (``raw`` keeps it whole).
RECORD_KEPT = 65536
#: How much of an error message a problem keeps.
DETAIL_KEPT = 4000
#: Ids per ``IN (...)`` lookup.
LOOKUP_CHUNK = 500
#: An event's text fields and their columns' lengths (PostgreSQL enforces them, SQLite does not).
TEXT_FIELDS: dict[str, int] = {
    name: cast(sa.String, events.c[name].type).length or 0
    for name in ("event_id", "stream", "kind", "persona", "run_id")
}
#: What a ``BigInteger`` column holds.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class LogRecord:
    """One record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class Recorded:
    """What one :meth:`AuditRecorder.record` call did."""

    stored: int = 0
    already: int = 0
    problems: list[str] = field(default_factory=list)
    #: The ``chain`` problems among them: (event id, detail).
    chain_breaks: list[tuple[str, str]] = field(default_factory=list)

    def __add__(self, other: Recorded) -> Recorded:
        return Recorded(
            self.stored + other.stored,
            self.already + other.already,
            self.problems + other.problems,
            self.chain_breaks + other.chain_breaks,
        )


class InvalidEvent(ValueError):
    """The record is JSON but not an outbox event."""


def digest(event: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()


REQUIRED = {
    "event_id": str,
    "stream": str,
    "seq": int,
    "kind": str,
    "persona": str,
    "occurred_at_ms": int,
    "payload": dict,
    "cause": dict,
}


def decode(value: bytes | None) -> dict[str, Any]:
    """The outbox event in ``value``; :class:`InvalidEvent` or ``ValueError`` if it is not one."""
    if value is None:
        raise InvalidEvent("a null record (tombstone) is not an outbox event")
    event = orjson.loads(value)
    if not isinstance(event, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(event).__name__}")
    wrong = [
        f"{name} ({kind.__name__})"
        for name, kind in REQUIRED.items()
        if not isinstance(event.get(name), kind) or isinstance(event.get(name), bool)
    ]
    if wrong:
        raise InvalidEvent("missing or mistyped: " + ", ".join(wrong))
    if event.get("run_id") is not None and not isinstance(event["run_id"], str):
        raise InvalidEvent("run_id must be a string or null")
    if event["event_id"] != f"{event['stream']}/{event['seq']}":
        raise InvalidEvent(
            f"event_id {event['event_id']!r} is not '{{stream}}/{{seq}}' ({event['stream']}/{event['seq']})"
        )
    if event["seq"] < 1:
        raise InvalidEvent(f"seq {event['seq']} is below 1")
    for name in chain.DIGEST_FIELDS:
        value = event.get(name)
        if value is not None and not (isinstance(value, str) and len(value) == 64):
            raise InvalidEvent(f"{name} must be 64 hex digits or null")
    check_storable(event)
    return event


def check_storable(event: dict[str, Any]) -> None:
    """:class:`InvalidEvent` unless every backend holds ``event``'s ids and numbers as they are."""
    for name, limit in TEXT_FIELDS.items():
        text = event.get(name)
        if text is None:
            continue
        if "\x00" in text:
            raise InvalidEvent(f"{name} contains a NUL character (\\u0000), which a text column cannot hold")
        if len(text) > limit:
            raise InvalidEvent(f"{name} has {len(text)} characters, its column holds {limit}")
    for name in ("seq", "occurred_at_ms"):
        if not BIGINT_MIN <= event[name] <= BIGINT_MAX:
            raise InvalidEvent(f"{name} {event[name]} does not fit in 64 bits")


def without_nul(value: Any) -> Any:
    """Decoded JSON with U+0000 in its strings and keys replaced by U+FFFD. (Recursion is
    bounded: an event reaching here was written by orjson, which stops at 254 levels.)"""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def storable_text(text: str, limit: int) -> str:
    """``text`` as every backend stores it: at most ``limit`` characters, NUL and unpaired
    surrogates escaped (``\\x00``, ``\\udc80``)."""
    escaped = text[:limit].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return escaped[:limit]


def readable(value: bytes | None) -> str:
    """The start of a record as text: invalid UTF-8 and NUL escaped (``\\xff``, ``\\x00``)."""
    return (value or b"")[:RECORD_KEPT].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def driver_error(exc: BaseException) -> BaseException:
    """The driver's error inside SQLAlchemy's wrapper, or ``exc`` itself if it is not wrapped."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        return exc.orig
    return exc


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def engine_url(url: str) -> str:
    """``url`` with the driver this project installs: psycopg 3 for PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url`` (``sqlite:///file.db``, ``postgresql://...``), schema migrated.

    PostgreSQL URLs use psycopg 3; SQLite runs in WAL mode so that readers (queries, the
    dashboard) never block the recorder."""
    engine = sa.create_engine(engine_url(url), pool_pre_ping=True, json_serializer=_json_text)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: index pages of a large store stay cached
            cursor.execute("PRAGMA wal_autocheckpoint=20000")
            cursor.close()

    migrate(engine)
    return engine


def _dialect_insert(engine: sa.Engine) -> Callable[[sa.Table], Any]:
    """The dialect's ``insert`` (it has ``on_conflict_do_nothing`` / ``_do_update``)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"unsupported database {engine.dialect.name!r}: use sqlite or postgresql")
    return insert


_COLUMNS = [column.name for column in events.columns]
_JSON_COLUMNS = ("payload", "cause", "trace")


def _copy_in(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: COPY the rows into a temporary table, then insert what is new, in the
    caller's transaction (several times faster than row-by-row INSERTs)."""
    raw = connection.connection.driver_connection
    columns = ", ".join(f'"{name}"' for name in _COLUMNS)
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS audit_incoming (LIKE audit_events) ON COMMIT DELETE ROWS")
        with cursor.copy(f"COPY audit_incoming ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [
                        _json_text(row[name]) if name in _JSON_COLUMNS and row[name] is not None else row[name]
                        for name in _COLUMNS
                    ]
                )
        cursor.execute(
            f"INSERT INTO audit_events ({columns}) SELECT {columns} FROM audit_incoming ON CONFLICT DO NOTHING"
        )


class AuditRecorder:
    """The audit store over one SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgresql = engine.dialect.name == "postgresql"
        self._insert = _dialect_insert(engine)

    @classmethod
    def open(cls, url: str) -> AuditRecorder:
        return cls(engine_for(url))

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- writing

    def positions(self, consumer: str, topic: str) -> dict[int, int]:
        """Partition -> the next offset ``consumer`` reads."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(positions.c.partition, positions.c.next_offset).where(
                    positions.c.consumer == consumer, positions.c.topic == topic
                )
            )
            return {partition: offset for partition, offset in rows}

    def record(self, consumer: str, records: Sequence[LogRecord], now_ms: int | None = None) -> Recorded:
        """Store ``records`` and move ``consumer`` past them, atomically (steps in the module
        doc); if the database refuses a record, that one is a problem and the others are stored."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if not records:
            return Recorded()
        return self._write_or_split(consumer, list(records), now)

    def _write_or_split(self, consumer: str, records: list[LogRecord], now: int) -> Recorded:
        """:meth:`_write`; if the database refuses a record, each half again, down to that record."""
        try:
            return self._write(consumer, records, now)
        except Exception as exc:
            if not self._refused(exc):
                raise  # not about a record: nothing of the batch committed, the next start reads it again
            error = exc
        # The transaction rolled back: no row and no position of these records is stored, so
        # writing them again neither doubles nor skips one. The halves go in log order, each
        # committing its rows with its positions, so a crash between them resumes after the
        # last half committed, and every record but the refused one is stored.
        if len(records) == 1:
            return self._write_refused(consumer, records[0], error, now)
        half = len(records) // 2
        return self._write_or_split(consumer, records[:half], now) + self._write_or_split(consumer, records[half:], now)

    def _refused(self, exc: Exception) -> bool:
        """Whether ``exc`` is the database or its driver refusing a value of a record, not the
        database failing (connection, lock, disk), which stops the consumer instead."""
        dbapi = self.engine.dialect.loaded_dbapi
        return isinstance(driver_error(exc), (dbapi.DataError, dbapi.IntegrityError, ValueError, OverflowError))

    def _write_refused(self, consumer: str, record: LogRecord, error: Exception, now: int) -> Recorded:
        """``record`` as a ``refused`` problem with the database's error, and the position past it."""
        reason = driver_error(error)
        try:
            event_id = decode(record.value)["event_id"]
        except ValueError:
            event_id = None
        problem = self._problem(
            "refused", event_id, record, f"the database refused it: {type(reason).__name__}: {reason}", now
        )
        # The problem and the position past its record commit together, as a batch does. A
        # problem row is escaped text and bytes, which every backend holds, so this fails only
        # if the database does; then nothing of it committed and the next start tries again.
        with self.engine.begin() as connection:
            connection.execute(self._insert(problems).on_conflict_do_nothing(), [problem])
            self._move(connection, consumer, [record], now)
        return Recorded(problems=[problem["detail"]])

    def _write(self, consumer: str, records: list[LogRecord], now: int) -> Recorded:
        """Steps 1 to 6 of the module doc, in one transaction."""
        result = Recorded()
        # 1. decode
        fresh: dict[str, tuple[dict[str, Any], str, LogRecord]] = {}
        found: list[dict[str, Any]] = []
        copies: list[tuple[dict[str, Any], str, LogRecord]] = []
        for record in records:
            try:
                event = decode(record.value)
                entry = (event, digest(event), record)
            except InvalidEvent as exc:
                found.append(self._problem("invalid", None, record, str(exc), now))
                continue
            except orjson.JSONEncodeError as exc:  # JSON, but nested deeper than orjson writes
                found.append(self._problem("invalid", None, record, f"cannot be written back as JSON: {exc}", now))
                continue
            except ValueError as exc:
                found.append(self._problem("undecodable", None, record, f"not JSON: {exc}", now))
                continue
            if event["event_id"] in fresh:
                copies.append(entry)
            else:
                fresh[event["event_id"]] = entry
        with self.engine.begin() as connection:
            if self.postgresql:
                # A young table has no statistics yet and the planner may scan it whole for
                # the id lookup below; the primary key answers it in every case.
                connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            # 2. what is stored already
            stored: dict[str, tuple[str, str, int, int]] = {}
            ids = list(fresh)
            for start in range(0, len(ids), LOOKUP_CHUNK):
                rows = connection.execute(
                    sa.select(
                        events.c.event_id,
                        events.c.digest,
                        events.c.topic,
                        events.c.partition,
                        events.c.offset,
                    ).where(events.c.event_id.in_(ids[start : start + LOOKUP_CHUNK]))
                )
                stored.update({row[0]: (row[1], row[2], row[3], row[4]) for row in rows})
            # 3. insert the new ones (a stored one is one more copy)
            new_rows = []
            for event_id, (event, digest_, record) in fresh.items():
                if event_id in stored:
                    copies.append((event, digest_, record))
                else:
                    new_rows.append(self._row(event, digest_, record, now))
                    stored[event_id] = (digest_, record.topic, record.partition, record.offset)
            found.extend(self._check_chain(connection, fresh, new_rows, now))
            if new_rows and self.postgresql:
                _copy_in(connection, new_rows)
            elif new_rows:
                connection.execute(self._insert(events).on_conflict_do_nothing(), new_rows)
            result.stored = len(new_rows)
            # 4. copies: the same event again, or a conflict
            for event, digest_, record in copies:
                first = stored[event["event_id"]]
                if first[0] == digest_:
                    result.already += 1
                    continue
                found.append(
                    self._problem(
                        "conflict",
                        event["event_id"],
                        record,
                        f"event {event['event_id']} was stored from {first[1]}[{first[2]}]@{first[3]};"
                        f" this copy at {record.topic}[{record.partition}]@{record.offset} has other content"
                        " and was not stored",
                        now,
                    )
                )
            if found:
                connection.execute(self._insert(problems).on_conflict_do_nothing(), found)
                result.problems = [problem["detail"] for problem in found]
                result.chain_breaks = [(p["event_id"], p["detail"]) for p in found if p["kind"] == "chain"]
            # 5. positions
            self._move(connection, consumer, records, now)
        # 6. committed by leaving the block
        return result

    def _check_chain(
        self,
        connection: sa.Connection,
        fresh: dict[str, tuple[dict[str, Any], str, LogRecord]],
        new_rows: list[dict[str, Any]],
        now: int,
    ) -> list[dict[str, Any]]:
        """``chain`` problems of the new events: a digest that does not recompute, or a
        ``prev_digest`` that is not the digest stored for the stream's previous seq (the
        genesis value for seq 1, or after an event from before the chain). The events are
        stored all the same: the store keeps what was published, the problem says what is wrong."""
        chained = [row for row in new_rows if row["chain_digest"] is not None]
        if not chained:
            return []
        wanted = {f"{row['stream']}/{row['seq'] - 1}" for row in chained if row["seq"] > 1}
        before: dict[str, str | None] = {}
        for event_id in wanted:
            if event_id in fresh:
                before[event_id] = fresh[event_id][0].get("digest")
        missing = [event_id for event_id in wanted if event_id not in before]
        for start in range(0, len(missing), LOOKUP_CHUNK):
            rows = connection.execute(
                sa.select(events.c.event_id, events.c.chain_digest).where(
                    events.c.event_id.in_(missing[start : start + LOOKUP_CHUNK])
                )
            )
            before.update({event_id: digest_ for event_id, digest_ in rows})
        found = []
        for row in chained:
            event, _, record = fresh[row["event_id"]]
            computed = chain.recompute(event)
            if computed != row["chain_digest"]:
                detail = f"digest {row['chain_digest']} does not recompute (computed {computed})"
            else:
                previous = f"{row['stream']}/{row['seq'] - 1}"
                if row["seq"] > 1 and previous not in before:
                    continue  # not stored yet: the gap shows until it is
                head = (before.get(previous) if row["seq"] > 1 else None) or chain.GENESIS
                if row["prev_digest"] == head:
                    continue
                detail = f"prev_digest {row['prev_digest']} is not the stored head of {row['stream']} ({head})"
            found.append(self._problem("chain", row["event_id"], record, f"{row['event_id']}: {detail}", now))
        return found

    def _move(self, connection: sa.Connection, consumer: str, records: list[LogRecord], now: int) -> None:
        """``consumer``'s positions past ``records``."""
        ends: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            ends[key] = max(ends.get(key, -1), record.offset + 1)
        statement = self._insert(positions)
        statement = statement.on_conflict_do_update(
            index_elements=[positions.c.consumer, positions.c.topic, positions.c.partition],
            set_={"next_offset": statement.excluded.next_offset, "updated_at_ms": statement.excluded.updated_at_ms},
        )
        connection.execute(
            statement,
            [
                {
                    "consumer": consumer,
                    "topic": topic,
                    "partition": partition,
                    "next_offset": offset,
                    "updated_at_ms": now,
                }
                for (topic, partition), offset in sorted(ends.items())
            ],
        )

    @staticmethod
    def _row(event: dict[str, Any], digest_: str, record: LogRecord, now: int) -> dict[str, Any]:
        payload, cause, raw = event["payload"], event["cause"], None
        if record.value is not None and b"\\u0000" in record.value:  # JSON's only spelling of U+0000
            payload, cause = without_nul(payload), without_nul(cause)
            if (payload, cause) != (event["payload"], event["cause"]):
                raw = record.value  # the columns hold a copy; query() reads the exact event from here
        return {
            "event_id": event["event_id"],
            "stream": event["stream"],
            "seq": event["seq"],
            "kind": event["kind"],
            "persona": event["persona"],
            "run_id": event.get("run_id"),
            "occurred_at_ms": event["occurred_at_ms"],
            "payload": payload,
            "cause": cause,
            "digest": digest_,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "stored_at_ms": now,
            "raw": raw,
            "trace": event.get("trace"),
            "prev_digest": event.get("prev_digest"),
            "chain_digest": event.get("digest"),
        }

    @staticmethod
    def _problem(kind: str, event_id: str | None, record: LogRecord, detail: str, now: int) -> dict[str, Any]:
        """A problem row: escaped text and the record's bytes, which every backend holds.
        (The topic is a Kafka topic name: ASCII letters, digits, ``.``, ``_``, ``-``.)"""
        return {
            "kind": kind,
            "event_id": None if event_id is None else storable_text(event_id, TEXT_FIELDS["event_id"]),
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "detail": storable_text(detail, DETAIL_KEPT),
            "record": readable(record.value),
            "raw": record.value,
            "found_at_ms": now,
        }

    # ---------------------------------------------------------------- reading

    def query(
        self,
        *,
        persona: str | None = None,
        kind: str | None = None,
        run_id: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Events, oldest first, filtered."""
        statement = sa.select(
            events.c.event_id,
            events.c.stream,
            events.c.seq,
            events.c.kind,
            events.c.persona,
            events.c.run_id,
            events.c.occurred_at_ms,
            events.c.payload,
            events.c.cause,
            events.c.raw,
        )
        if persona is not None:
            statement = statement.where(events.c.persona == persona)
        if kind is not None:
            statement = statement.where(
                events.c.kind.like(kind.replace("*", "%")) if "*" in kind else events.c.kind == kind
            )
        if run_id is not None:
            statement = statement.where(events.c.run_id == run_id)
        if since_ms is not None:
            statement = statement.where(events.c.occurred_at_ms >= since_ms)
        statement = statement.order_by(events.c.occurred_at_ms, events.c.stream, events.c.seq).limit(limit)
        with self.engine.connect() as connection:
            return [self._exact(dict(row._mapping)) for row in connection.execute(statement)]

    @staticmethod
    def _exact(row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with its exact payload and cause when its columns hold a copy without NUL."""
        raw = row.pop("raw")
        if raw is not None:
            event = orjson.loads(raw)
            row["payload"], row["cause"] = event["payload"], event["cause"]
        return row

    def problems(self, limit: int = 100, *, raw: bool = False) -> list[dict[str, Any]]:
        """Problems, oldest first, with ``raw_size`` (the record's bytes; None for a tombstone or a
        problem found before schema version 2); with ``raw``, the record's bytes themselves."""
        columns = [column for column in problems.columns if raw or column.name != "raw"]
        size = sa.func.length(problems.c.raw).label("raw_size")
        statement = sa.select(*columns, size).order_by(problems.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def gaps(self, limit: int = 100) -> list[dict[str, Any]]:
        """Missing ``seq`` ranges per stream (``first``..``last`` inclusive), until filled."""
        previous = sa.func.lag(events.c.seq, 1, 0).over(partition_by=events.c.stream, order_by=events.c.seq)
        inner = sa.select(events.c.stream, events.c.seq, previous.label("previous")).subquery()
        statement = (
            sa.select(inner.c.stream, (inner.c.previous + 1).label("first"), (inner.c.seq - 1).label("last"))
            .where(inner.c.seq - inner.c.previous > 1)
            .order_by(inner.c.stream, inner.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {
                "events": connection.execute(sa.select(sa.func.count()).select_from(events)).scalar_one(),
                "streams": connection.execute(sa.select(sa.func.count(sa.distinct(events.c.stream)))).scalar_one(),
                "problems": connection.execute(sa.select(sa.func.count()).select_from(problems)).scalar_one(),
                "gaps": len(self.gaps(limit=1_000_000)),
            }

    def all_positions(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [
                dict(row._mapping)
                for row in connection.execute(
                    sa.select(positions).order_by(positions.c.consumer, positions.c.topic, positions.c.partition)
                )
            ]


def records_of(batch: Iterable[Any]) -> list[LogRecord]:
    """aiokafka ``ConsumerRecord``s as :class:`LogRecord`s."""
    return [LogRecord(r.topic, r.partition, r.offset, r.value) for r in batch]
