"""One contract for both partition stores: the memory store and the RocksDB store."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.state import MemoryStore, PartitionStore, RocksDBStore

ORDERED = {"timers"}


@pytest.fixture(params=["memory", "rocksdb"])
def make_store(request, tmp_path: Path):
    opened: list[PartitionStore] = []

    def make() -> PartitionStore:
        store = MemoryStore(3, ORDERED) if request.param == "memory" else RocksDBStore(3, tmp_path / "rocksdb", ORDERED)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_a_new_store_is_empty_at_offset_minus_one(make_store):
    store = make_store()
    assert store.changelog_offset == -1 and store.get("personas", "a") is None and store.count("personas") == 0


def test_apply_writes_and_deletes_rows_and_records_the_offset(make_store):
    store = make_store()
    store.apply([("personas", "a", b"1"), ("personas", "b", b"2"), ("queues", '["a","k"]', b"q")], 4)
    store.apply([("personas", "a", b"3"), ("personas", "b", None), ("personas", "gone", None)], 9)
    assert (store.get("personas", "a"), store.get("personas", "b")) == (b"3", None)
    assert store.get("queues", '["a","k"]') == b"q" and store.changelog_offset == 9
    assert dict(store.items("personas")) == {"a": b"3"} and store.count("personas") == 1


def test_ordered_tables_scan_in_key_order_between_bounds(make_store):
    store = make_store()
    store.apply([("timers", f"{t:015d}/lease/p{t}", b"") for t in (30, 10, 20, 40)] + [("timersx", "x", b"1")], 0)
    assert [k for k, _ in store.items("timers")] == [f"{t:015d}/lease/p{t}" for t in (10, 20, 30, 40)]
    assert [k for k, _ in store.items("timers", "", f"{31:015d}")] == [f"{t:015d}/lease/p{t}" for t in (10, 20, 30)]
    store.apply([("timers", f"{20:015d}/lease/p20", None)], 1)
    assert [k for k, _ in store.items("timers", f"{15:015d}")] == [f"{t:015d}/lease/p{t}" for t in (30, 40)]


def test_rows_and_offset_of_the_rocksdb_store_survive_a_reopen(tmp_path: Path):
    store = RocksDBStore(1, tmp_path)
    store.apply([("personas", "a", b"1"), ("timers", "1/x/a", b"")], 41)
    store.close()
    again = RocksDBStore(1, tmp_path)
    try:
        assert (again.get("personas", "a"), again.changelog_offset) == (b"1", 41)
    finally:
        again.close()
    RocksDBStore.destroy(tmp_path, 1)
    fresh = RocksDBStore(1, tmp_path)
    try:
        assert fresh.changelog_offset == -1 and fresh.get("personas", "a") is None
    finally:
        fresh.close()


def test_a_rocksdb_store_left_holding_unconfirmed_rows_is_rebuilt_when_reopened(tmp_path: Path):
    store = RocksDBStore(2, tmp_path)
    store.apply([("personas", "a", b"1")], 7)
    store.apply([("personas", "a", b"2")], None)  # sent to the changelog, not acknowledged
    store.close()  # the process died here
    again = RocksDBStore(2, tmp_path)
    try:
        assert again.rebuilt and again.changelog_offset == -1 and again.get("personas", "a") is None
    finally:
        again.close()
    confirmed = RocksDBStore(3, tmp_path)
    confirmed.apply([("personas", "b", b"1")], None)
    confirmed.confirm(9)
    confirmed.close()
    reopened = RocksDBStore(3, tmp_path)
    try:
        assert not reopened.rebuilt and (reopened.get("personas", "b"), reopened.changelog_offset) == (b"1", 9)
    finally:
        reopened.close()
