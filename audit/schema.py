"""Tables of the audit store (SQLAlchemy Core) and the migrations that create them.

The schema is versioned: :data:`MIGRATIONS` lists the steps in order, and
:func:`migrate` applies those a database has not seen yet, each in its own transaction
together with the version row, so a crash between steps leaves a database that the next
start migrates further. Add a step to change the schema; never edit a released one.
Step 1 creates the tables from today's definitions, so a later step that adds a column
checks first whether the table has it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

#: JSON columns: JSONB on PostgreSQL (queryable), JSON text elsewhere.
Json = sa.JSON().with_variant(JSONB(), "postgresql")

#: One row per outbox event, by its ``event_id`` (``{stream}/{seq}``).
events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("event_id", sa.String(400), primary_key=True),
    sa.Column("stream", sa.String(300), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("persona", sa.String(128), nullable=False),
    sa.Column("run_id", sa.String(128)),
    sa.Column("occurred_at_ms", sa.BigInteger, nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("cause", Json, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # sha256 of the record's canonical JSON
    sa.Column("topic", sa.String(255), nullable=False),  # where it was first read
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("stored_at_ms", sa.BigInteger, nullable=False),
    # The record as read when payload/cause hold a copy with each NUL replaced (jsonb and
    # text cannot hold U+0000); NULL when they are exact. Since version 2.
    sa.Column("raw", sa.LargeBinary),
    # The hash chain (since version 3; NULL for events from before it): the event's trace (part
    # of what its digest covers), its prev_digest and its digest (``streams.chain``).
    sa.Column("trace", Json),
    sa.Column("prev_digest", sa.String(64)),
    sa.Column("chain_digest", sa.String(64)),
    sa.Index("audit_events_stream_seq", "stream", "seq", unique=True),
    sa.Index("audit_events_persona_time", "persona", "occurred_at_ms"),
    sa.Index("audit_events_kind_time", "kind", "occurred_at_ms"),
    sa.Index("audit_events_run", "run_id"),
    sa.Index("audit_events_time", "occurred_at_ms"),
)

#: Where each consumer group goes on reading: written in the same transaction as events.
positions = sa.Table(
    "audit_positions",
    metadata,
    sa.Column("consumer", sa.String(255), primary_key=True),
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
)

#: Records that could not be stored as they are: at most one row per log record.
problems = sa.Table(
    "audit_problems",
    metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),  # conflict | undecodable | invalid | refused | chain
    sa.Column("event_id", sa.String(400)),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),  # readable: at most 64 KiB, NUL and bad UTF-8 escaped
    sa.Column("found_at_ms", sa.BigInteger, nullable=False),
    # The whole record as read: NULL for a tombstone, or for a problem found before version 2.
    sa.Column("raw", sa.LargeBinary),
    sa.UniqueConstraint("topic", "partition", "offset", name="audit_problems_record"),
)

#: Signed checkpoints of stream heads (since version 3): each lists the heads ``[seq, digest]``
#: of the streams that moved since the previous one, signed with Ed25519 over the canonical
#: JSON of ``{number, at_ms, previous, heads}`` (``previous``: the previous checkpoint's signature).
checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),  # 1, 2, ... gap-free
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("heads", Json, nullable=False),  # stream -> [seq, digest]
    sa.Column("previous", sa.String(200), nullable=False),  # "" for the first
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(200), nullable=False),  # unpadded url-safe base64
)

schema_versions = sa.Table(
    "audit_schema_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at_ms", sa.BigInteger, nullable=False),
)


def _v1(connection: sa.Connection) -> None:
    for table in (events, positions, problems):
        table.create(connection, checkfirst=True)


def _add_column(connection: sa.Connection, table: sa.Table, name: str) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for ``table.c[name]`` (nullable), unless it is there."""
    if name in {column["name"] for column in sa.inspect(connection).get_columns(table.name)}:
        return
    column = table.c[name]
    assert column.nullable, "a column added to a table with rows must allow NULL"
    quote = connection.dialect.identifier_preparer.quote
    kind = column.type.compile(dialect=connection.dialect)
    connection.execute(sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(name)} {kind}"))


def _v2(connection: sa.Connection) -> None:
    _add_column(connection, problems, "raw")
    _add_column(connection, events, "raw")


def _v3(connection: sa.Connection) -> None:
    for name in ("trace", "prev_digest", "chain_digest"):
        _add_column(connection, events, name)
    checkpoints.create(connection, checkfirst=True)


#: (version, description, step). Append only.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "events, positions, problems", _v1),
    (2, "raw record bytes: whole for problems, exact for events with NUL in payload or cause", _v2),
    (3, "hash chain: trace, prev_digest and chain_digest of events; signed checkpoints of stream heads", _v3),
]


def current_version(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(schema_versions.name):
            return 0
        return connection.execute(sa.select(sa.func.max(schema_versions.c.version))).scalar() or 0


def migrate(engine: sa.Engine) -> int:
    """Bring the database to the newest schema; return its version."""
    with engine.begin() as connection:
        schema_versions.create(connection, checkfirst=True)
    version = current_version(engine)
    for number, description, step in MIGRATIONS:
        if number <= version:
            continue
        with engine.begin() as connection:
            step(connection)
            connection.execute(
                schema_versions.insert().values(
                    version=number, description=description, applied_at_ms=int(time.time() * 1000)
                )
            )
        version = number
    return version
