"""The table layer under the transitions: a read-only view and a transaction over it.

Transitions never touch Kafka. They read through a :class:`Transaction`, which sees its
own writes first and the committed state (a :class:`Reader`) otherwise, and they leave
their writes in it. The runtime turns the writes into one atomic commit; tests and
``personaflow verify`` apply them to a :class:`MemoryStore`.

Committed rows are JSON bytes. A transaction decodes a row the first time it is read
and keeps the object for the rest of the transaction (one transaction spans a whole
pass of the runtime, so a persona's head is parsed once per pass, however many of its
records the pass holds), and encodes each written row once, when the changes are taken.
A written row that encodes to the bytes it was read as is not a change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, TypeVar, cast

import msgspec
import orjson

Value = bytes
_encode = msgspec.json.Encoder().encode
_ABSENT = object()


def key(*parts: str | int) -> str:
    """A composite table key, unambiguous for any part contents (a compact JSON list)."""
    return orjson.dumps(parts).decode()


class Reader(Protocol):
    """Committed state: ``get`` returns the stored value or None."""

    def get(self, table: str, key: str) -> Value | None: ...


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Decoder(Protocol[T_co]):
    def decode(self, buf: bytes, /) -> T_co: ...


class Transaction:
    """Reads see this transaction's writes first; rows are decoded at most once."""

    __slots__ = ("reader", "_rows", "_read", "_dirty", "reads")

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._rows: dict[tuple[str, str], Any] = {}  # slot -> object (decoded or written), None: absent
        self._read: dict[tuple[str, str], Value | None] = {}  # slot -> committed bytes as read
        self._dirty: set[tuple[str, str]] = set()
        self.reads = 0  # rows read from the committed state (cost tests count them)

    def _committed(self, slot: tuple[str, str]) -> Value | None:
        raw = self._read.get(slot, _ABSENT)
        if raw is _ABSENT:
            raw = self.reader.get(*slot)
            self._read[slot] = raw
            self.reads += 1
        return raw  # type: ignore[return-value]

    def load(self, table: str, key: str, decoder: Decoder[T]) -> T | None:
        """The row as an object (decoded once; later reads return the same object)."""
        slot = (table, key)
        found = self._rows.get(slot, _ABSENT)
        if found is _ABSENT:
            raw = self._committed(slot)
            found = None if raw is None else decoder.decode(raw)
            self._rows[slot] = found
        # The slot holds what this decoder decoded (or a row of its type written since): a
        # table's rows all have one type, read with one decoder.
        return cast("T | None", found)

    def get(self, table: str, key: str) -> Value | None:
        """The row as bytes."""
        slot = (table, key)
        found = self._rows.get(slot, _ABSENT)
        if found is _ABSENT:
            return self._committed(slot)
        return found if found is None or isinstance(found, bytes) else _encode(found)

    def put(self, table: str, key: str, value: Any) -> None:
        """Write a row: a struct (encoded when the changes are taken), bytes, or None."""
        slot = (table, key)
        self._rows[slot] = value
        self._dirty.add(slot)

    def delete(self, table: str, key: str) -> None:
        self.put(table, key, None)

    @property
    def changed(self) -> bool:
        return bool(self._dirty)

    def changes(self) -> Iterator[tuple[str, str, Value | None]]:
        """Every written row as (table, key, bytes or None), unchanged ones left out."""
        for slot in self._dirty:
            value = self._rows[slot]
            encoded = value if value is None or isinstance(value, bytes) else _encode(value)
            before = self._read.get(slot, _ABSENT)
            if before is _ABSENT:
                before = self.reader.get(*slot)
            if encoded != before:
                yield slot[0], slot[1], encoded


class MemoryStore:
    """Committed state in dicts: for pure tests and for replaying an inbox (verify)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Value]] = {}

    def get(self, table: str, key: str) -> Value | None:
        return self.tables.get(table, {}).get(key)

    def apply(self, transaction: Transaction) -> None:
        for table, key, value in list(transaction.changes()):
            rows = self.tables.setdefault(table, {})
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, Value]]:
        """Rows of ``table`` in key order, ``start <= key < stop``."""
        for name in sorted(self.tables.get(table, {})):
            if name >= start and (stop is None or name < stop):
                yield name, self.tables[table][name]

    def transaction(self) -> Transaction:
        return Transaction(self)
