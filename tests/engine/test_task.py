"""A task's input bookkeeping: positions, buffering, and taking its own forwarded records."""

from __future__ import annotations

from engine.state import MemoryStore
from engine.task import Forwarded, Source, Task


def record(topic: str, offset: int) -> Forwarded:
    return Forwarded(topic, 2, offset, b"k", b"v", 0, [])


def make_task() -> Task:
    sources = [
        Source("ingress", ("triggers",), lambda b, r: None, stage=0),
        Source("persona", ("inbox",), lambda b, r: None),
    ]
    task = Task(2, MemoryStore(2), sources, lambda role: role, idle_ms=0)
    task.positions = {"inbox": 10}
    task.reset_buffers()
    return task


def test_records_before_the_position_are_dropped_as_already_seen():
    task = make_task()
    task.offer("inbox", [record("inbox", n) for n in (8, 9, 10, 11)])
    [(source, records)] = task.ready(0, lambda _: 0, stage=1)
    assert source.name == "persona" and [r.offset for r in records] == [10, 11]


def test_own_forwarded_records_are_taken_when_they_continue_what_was_fetched():
    task = make_task()
    assert task.feed("inbox", [record("inbox", 10), record("inbox", 11)]) == 2
    task.offer("inbox", [record("inbox", n) for n in (10, 11, 12)])  # the consumer's copies, then more
    [(_, records)] = task.ready(0, lambda _: 0, stage=1)
    assert [r.offset for r in records] == [10, 11, 12]


def test_own_forwarded_records_after_a_gap_are_left_to_the_fetch():
    task = make_task()
    assert task.feed("inbox", [record("inbox", 12)]) == 0  # 10 and 11 come from someone else
    assert task.feed("inbox", [record("inbox", 10), record("inbox", 12)]) == 0
    task.offer("inbox", [record("inbox", n) for n in (10, 11, 12)])
    [(_, records)] = task.ready(0, lambda _: 0, stage=1)
    assert [r.offset for r in records] == [10, 11, 12]


def test_positions_are_kept_as_one_row_of_the_store():
    task = make_task()
    table, key, value = task.positions_row({"inbox": 12, "triggers": 3})
    task.store.apply([(table, key, value)], 0)
    task.positions = {}
    task.load_positions()
    assert task.positions == {"inbox": 12, "triggers": 3}
