"""Local state of one partition: a small interface and its two implementations.

A :class:`PartitionStore` holds the rows of one partition (``table``, ``key`` -> bytes)
and the changelog offset they reflect. It changes only through :meth:`apply`: a whole
batch at a time, either already durable in the changelog (recovery: with its offset) or
just sent to it (a commit: without an offset, confirmed by :meth:`confirm` once the
broker acknowledged it). :class:`MemoryStore` keeps rows in dicts (recovered from the
changelog at every start); :class:`RocksDBStore` keeps them in RocksDB (rocksdict) with
the changelog offset in the same atomic write, so a restart reads only the newer part of
the changelog. A RocksDB store that was left holding an unconfirmed batch (the process
died before the acknowledgement) is rebuilt from the changelog when it is opened again:
that batch may never have reached the changelog.

Tables named in ``ordered`` can be scanned in key order (the timer index); the memory
store keeps a sorted key list for them, RocksDB is ordered anyway.
"""

from __future__ import annotations

import abc
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

from sortedcontainers import SortedList

Row = tuple[str, str, bytes | None]  # table, key, value (None: delete)
SEPARATOR = "\x1f"
OFFSET_KEY = b"\x00changelog_offset"
#: Set while the store holds rows whose changelog batch is not acknowledged yet.
UNCONFIRMED_KEY = b"\x00unconfirmed"


def flat_key(table: str, key: str) -> str:
    return f"{table}{SEPARATOR}{key}"


def split_key(flat: str) -> tuple[str, str]:
    table, _, key = flat.partition(SEPARATOR)
    return table, key


class PartitionStore(abc.ABC):
    """Rows of one partition and the changelog offset they are at."""

    def __init__(self, partition: int, ordered: Iterable[str] = ()) -> None:
        self.partition = partition
        self.ordered = frozenset(ordered)

    @abc.abstractmethod
    def get(self, table: str, key: str) -> bytes | None:
        """The stored value, or None."""

    @abc.abstractmethod
    def apply(self, rows: Sequence[Row], changelog_offset: int | None) -> None:
        """Write ``rows`` and record ``changelog_offset`` as reached, atomically; with no
        offset the rows are unconfirmed until :meth:`confirm`."""

    @abc.abstractmethod
    def confirm(self, changelog_offset: int) -> None:
        """The changelog acknowledged everything applied so far, up to this offset."""

    @property
    @abc.abstractmethod
    def changelog_offset(self) -> int:
        """The last changelog offset reflected here (-1: none)."""

    @abc.abstractmethod
    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(key, value) of ``table`` with ``start <= key`` (and ``key < stop``), in key
        order for ordered tables (any order for others)."""

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        return sum(1 for _ in self.items(table))

    def close(self) -> None:  # noqa: B027 - optional hook: stores without resources keep it
        """Release resources; the data stays where it is kept."""


class MemoryStore(PartitionStore):
    """Rows in dicts of bytes (bytes are not tracked by the cyclic garbage collector,
    so a large state costs no collection time)."""

    def __init__(self, partition: int, ordered: Iterable[str] = ()) -> None:
        super().__init__(partition, ordered)
        self.tables: dict[str, dict[str, bytes]] = {}
        self.sorted: dict[str, SortedList] = {name: SortedList() for name in self.ordered}
        self._offset = -1

    def get(self, table: str, key: str) -> bytes | None:
        rows = self.tables.get(table)
        return None if rows is None else rows.get(key)

    def apply(self, rows: Sequence[Row], changelog_offset: int | None) -> None:
        for table, key, value in rows:
            self._put(table, key, value)
        if changelog_offset is not None:
            self._offset = changelog_offset

    def confirm(self, changelog_offset: int) -> None:
        self._offset = changelog_offset

    def _put(self, table: str, key: str, value: bytes | None) -> None:
        data = self.tables.get(table)
        if data is None:
            data = self.tables[table] = {}
        index = self.sorted.get(table)
        if value is None:
            if data.pop(key, None) is not None and index is not None:
                index.discard(key)
        else:
            if index is not None and key not in data:
                index.add(key)
            data[key] = value

    @property
    def changelog_offset(self) -> int:
        return self._offset

    def count(self, table: str) -> int:
        return len(self.tables.get(table, ()))

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, bytes]]:
        data = self.tables.get(table, {})
        index = self.sorted.get(table)
        if index is None:
            for key, value in list(data.items()):
                if key >= start and (stop is None or key < stop):
                    yield key, value
            return
        # Lazily: a transition reading the first rows of a long range (the queue's ranking)
        # reads only those. Rows change only when a commit is applied, never while a pass
        # or a view iterates.
        for key in index.irange(start, stop, inclusive=(True, False)):
            found = data.get(key)
            if found is not None:
                yield key, found


class RocksDBStore(PartitionStore):
    """Rows in one RocksDB database per partition (``<directory>/<partition>``)."""

    def __init__(self, partition: int, directory: Path, ordered: Iterable[str] = ()) -> None:
        from rocksdict import Options, Rdict

        super().__init__(partition, ordered)
        self.path = Path(directory) / str(partition)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(str(self.path), options)
        self.rebuilt = False
        if self.db.get(UNCONFIRMED_KEY) is not None:
            self.db.close()
            self.destroy(Path(directory), partition)
            self.db = Rdict(str(self.path), options)
            self.rebuilt = True
        raw = self.db.get(OFFSET_KEY)
        self._offset = -1 if raw is None else int(raw)

    def get(self, table: str, key: str) -> bytes | None:
        return self.db.get(flat_key(table, key).encode())

    def apply(self, rows: Sequence[Row], changelog_offset: int | None) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for table, key, value in rows:
            flat = flat_key(table, key).encode()
            if value is None:
                batch.delete(flat)
            else:
                batch.put(flat, value)
        if changelog_offset is None:
            batch.put(UNCONFIRMED_KEY, b"1")
        else:
            batch.put(OFFSET_KEY, str(changelog_offset).encode())
        self.db.write(batch)
        if changelog_offset is not None:
            self._offset = changelog_offset

    def confirm(self, changelog_offset: int) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        batch.put(OFFSET_KEY, str(changelog_offset).encode())
        batch.delete(UNCONFIRMED_KEY)
        self.db.write(batch)
        self._offset = changelog_offset

    @property
    def changelog_offset(self) -> int:
        return self._offset

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, bytes]]:
        prefix = flat_key(table, "").encode()
        first = flat_key(table, start).encode()
        end = None if stop is None else flat_key(table, stop).encode()
        for item_key, value in self.db.items(from_key=first):
            raw_key = cast(bytes, item_key)  # raw mode: keys are bytes (rocksdict's types allow any key kind)
            if not raw_key.startswith(prefix) or (end is not None and raw_key >= end):
                return
            yield raw_key[len(prefix) :].decode(), value

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def destroy(directory: Path, partition: int) -> None:
        shutil.rmtree(Path(directory) / str(partition), ignore_errors=True)


def reset_stale_state(directory: Path, instance: str | None) -> bool:
    """Wipe local state built against an earlier embedded broker (``instance`` is the
    broker's id; None for a real cluster, whose local state is always kept).

    The embedded broker keeps topics in memory only: a new one has empty changelogs, so
    a local store left from the last one describes offsets that no longer exist.
    """
    import json

    if instance is None:
        return False
    marker = directory / "broker.json"
    try:
        previous = json.loads(marker.read_text()).get("instance")
    except (FileNotFoundError, ValueError):
        previous = None
    wiped = False
    if previous != instance and directory.exists():
        shutil.rmtree(directory)
        wiped = True
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"instance": instance}))
    return wiped
