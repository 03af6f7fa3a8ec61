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

Tables in :data:`ORDERED` are kept in key order by every store (the timer index, the
queue's ranking): :meth:`Transaction.scan` reads a key range of one in order, its own
writes merged in, so a transition can take the first row of a range in O(log n).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar, cast

import msgspec
import orjson
from sortedcontainers import SortedList

Value = bytes
_encode = msgspec.json.Encoder().encode
_ABSENT = object()


def key(*parts: str | int) -> str:
    """A composite table key, unambiguous for any part contents (a compact JSON list)."""
    return orjson.dumps(parts).decode()


#: Tables whose rows every store keeps in key order (the runtime's stores are told so).
ORDERED = frozenset({"timers", "queue_rank"})


class Reader(Protocol):
    """Committed state: ``get`` returns the stored value or None; ``items`` the rows of a
    key range, in key order for the tables in :data:`ORDERED`."""

    def get(self, table: str, key: str) -> Value | None: ...

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, Value]]: ...


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Decoder(Protocol[T_co]):
    def decode(self, buf: bytes, /) -> T_co: ...


class Transaction:
    """Reads see this transaction's writes first; rows are decoded at most once."""

    __slots__ = ("reader", "_rows", "_read", "_dirty", "_ordered", "reads")

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._rows: dict[tuple[str, str], Any] = {}  # slot -> object (decoded or written), None: absent
        self._read: dict[tuple[str, str], Value | None] = {}  # slot -> committed bytes as read
        self._dirty: set[tuple[str, str]] = set()
        self._ordered: dict[str, SortedList] = {}  # ordered table -> keys written here
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
        if table in ORDERED and slot not in self._dirty:
            written = self._ordered.get(table)
            if written is None:
                written = self._ordered[table] = SortedList()
            written.add(key)
        self._dirty.add(slot)

    def scan(self, table: str, start: str, stop: str) -> Iterator[tuple[str, Value]]:
        """Rows of the ordered ``table`` with ``start <= key < stop``, in key order, as this
        transaction sees them (its writes merged with the committed rows)."""
        assert table in ORDERED, f"{table} is not kept in key order"
        written = self._ordered.get(table)
        committed = ((name, value, False) for name, value in self.reader.items(table, start, stop))
        if written is None:
            for name, value, _ in committed:
                self.reads += 1
                yield name, value
            return
        mine = ((name, b"", True) for name in written.irange(start, stop, inclusive=(True, False)))
        for name, value, own in heapq.merge(mine, committed, key=lambda row: (row[0], not row[2])):
            if not own:
                if (table, name) in self._dirty:
                    continue  # this transaction's own version came first (or deleted it)
                self.reads += 1
                yield name, value
                continue
            found = self.get(table, name)
            if found is not None:
                yield name, found

    def first(self, table: str, start: str, stop: str) -> tuple[str, Value] | None:
        """The first row of :meth:`scan`, or None."""
        return next(self.scan(table, start, stop), None)

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
    """Committed state in dicts: for pure tests and for replaying an inbox (verify). The
    tables in :data:`ORDERED` keep a sorted list of their keys too."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Value]] = {}
        self.sorted: dict[str, SortedList] = {name: SortedList() for name in ORDERED}

    def get(self, table: str, key: str) -> Value | None:
        return self.tables.get(table, {}).get(key)

    def apply(self, transaction: Transaction) -> None:
        for table, key, value in list(transaction.changes()):
            rows = self.tables.setdefault(table, {})
            index = self.sorted.get(table)
            if value is None:
                if rows.pop(key, None) is not None and index is not None:
                    index.discard(key)
            else:
                if index is not None and key not in rows:
                    index.add(key)
                rows[key] = value

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, Value]]:
        """Rows of ``table`` in key order, ``start <= key < stop``."""
        rows = self.tables.get(table, {})
        index = self.sorted.get(table)
        names = index.irange(start, stop, inclusive=(True, False)) if index is not None else sorted(rows)
        for name in names:
            if name >= start and (stop is None or name < stop):
                yield name, rows[name]

    def transaction(self) -> Transaction:
        return Transaction(self)
