"""The table layer under the transitions: a read-only view and a transaction over it.

Transitions never touch Faust. They read through a :class:`Transaction`, which sees its
own writes first and the committed state (a :class:`Reader`) otherwise, and they leave
their writes in it. The agent decides when and how the writes become state; tests and
``personaflow verify`` apply them to a :class:`MemoryStore`.

Values are JSON documents as bytes; ``None`` means absent (a delete). Rows stay bytes
in memory so a long history costs memory but no garbage-collector time: bytes are not
tracked by Python's cyclic GC, nested dicts are (and were measured to make every full
collection slower as history grew).
"""

from __future__ import annotations

import json
from typing import Iterator, Protocol

Value = bytes


def key(*parts: str | int) -> str:
    """A composite table key, unambiguous for any part contents (a compact JSON list)."""
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)


class Reader(Protocol):
    """Committed state: ``get`` returns the stored value or None."""

    def get(self, table: str, key: str) -> Value | None: ...


class Transaction:
    """Reads see this transaction's writes first; writes stay here until applied."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._writes: dict[tuple[str, str], Value | None] = {}

    def get(self, table: str, key: str) -> Value | None:
        slot = (table, key)
        if slot in self._writes:
            return self._writes[slot]
        return self.reader.get(table, key)

    def put(self, table: str, key: str, value: Value | None) -> None:
        self._writes[(table, key)] = value

    def delete(self, table: str, key: str) -> None:
        self._writes[(table, key)] = None

    @property
    def changed(self) -> bool:
        return bool(self._writes)

    def changes(self) -> Iterator[tuple[str, str, Value | None]]:
        for (table, key), value in self._writes.items():
            yield table, key, value


class MemoryStore:
    """Committed state in dicts: for pure tests and for replaying an inbox (verify)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Value]] = {}

    def get(self, table: str, key: str) -> Value | None:
        return self.tables.get(table, {}).get(key)

    def apply(self, transaction: Transaction) -> None:
        for table, key, value in transaction.changes():
            rows = self.tables.setdefault(table, {})
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value

    def transaction(self) -> Transaction:
        return Transaction(self)
