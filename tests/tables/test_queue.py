"""The ranked queue behaves like a plain sorted model under any sequence of operations, and
each operation reads and writes a bounded number of rows however long the queue is."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.wire import Slo, TriggerEnvelope
from tables.queue import DEFAULT_TARGET_MS, Queue, rank
from tables.state import PersonaHead, PersonaState, QueueItem, Scheduling
from tables.store import MemoryStore, Transaction

KEYS = [f"k{i}" for i in range(8)]
SLOS = [None, Slo(queue_target_ms=1000), Slo(queue_target_ms=5000, priority_boost=2), Slo()]


def item(work_key: str, priority: int, slo: Slo | None = None, queued_at_ms: int = 0) -> QueueItem:
    envelope = TriggerEnvelope(provider="p", kind="k", subject_key=work_key, received_at_ms=0)
    return QueueItem(
        work_key=work_key,
        request_id=f"r-{work_key}",
        envelope=envelope,
        priority=priority,
        seq=0,
        reason="queued",
        queued_at_ms=queued_at_ms,
        scheduling=Scheduling(slo=slo),
    )


def order(slo: Slo | None, priority: int, queued_at_ms: int, seq: int) -> tuple[Any, ...]:
    """The seed's comparison, spelled out: contract first; by ascending slack (the same as
    ascending queued + target at any one time); descending priority; oldest; arrival."""
    if slo is None:
        return (1, 0, -priority, queued_at_ms, seq)
    target = DEFAULT_TARGET_MS if slo.queue_target_ms is None else slo.queue_target_ms
    return (0, queued_at_ms + target, -(priority + slo.priority_boost), queued_at_ms, seq)


class Model:
    """Reference: entries with their order; ready and held; a release makes held ready."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.seq = 0

    def push(self, key: str, priority: int, slo: Slo | None, at: int) -> str | None:
        replaced = key if key in self.items else None
        self.items[key] = {"order": order(slo, priority, at, self.seq), "list": "r"}
        self.seq += 1
        return replaced

    def next_ready(self) -> str | None:
        ready = sorted((e["order"], k) for k, e in self.items.items() if e["list"] == "r")
        return ready[0][1] if ready else None

    def listing(self) -> list[str]:
        out = []
        for name in ("r", "h"):
            out += [k for _, k in sorted((e["order"], k) for k, e in self.items.items() if e["list"] == name)]
        return out


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"), st.sampled_from(KEYS), st.integers(-2, 2), st.sampled_from(SLOS), st.integers(0, 9000)
        ),
        st.tuples(st.just("remove"), st.sampled_from(KEYS), st.just(0), st.none(), st.just(0)),
        st.tuples(st.just("hold"), st.sampled_from(KEYS), st.just(0), st.none(), st.just(0)),
        st.tuples(st.just("release"), st.just(""), st.just(0), st.none(), st.just(0)),
        st.tuples(st.just("take"), st.just(""), st.just(0), st.none(), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_the_queue_ranks_like_the_seeds_comparison_under_any_operations(ops):
    store = MemoryStore()
    head = PersonaHead(name="p")
    model = Model()
    for op, key, priority, slo, at in ops:
        txn = store.transaction()
        queue = Queue(PersonaState(txn, "p"), head.queue)
        if op == "push":
            replaced = queue.push(item(key, priority, slo, at))
            assert (replaced.work_key if replaced else None) == model.push(key, priority, slo, at)
        elif op == "remove" and key in model.items:
            queue.remove(queue.get(key))
            del model.items[key]
        elif op == "hold" and key in model.items and model.items[key]["list"] == "r":
            queue.hold(queue.get(key))
            model.items[key]["list"] = "h"
        elif op == "release":
            queue.release_held()
            for entry in model.items.values():
                entry["list"] = "r"
        elif op == "take":
            entry = queue.next_ready()
            chosen = entry.work_key if entry else None
            assert chosen == model.next_ready()
            if chosen is not None:
                queue.remove(queue.get(chosen))
                del model.items[chosen]
        store.apply(txn)
        check = Queue(PersonaState(store.transaction(), "p"), head.queue)
        assert len(check) == len(model.items)
        assert [i.work_key for i in check.items(100)] == model.listing()
        assert [i.work_key for i in check.items(2)] == model.listing()[:2]


def test_breached_work_comes_first_then_slack_then_priority_and_work_without_an_slo_last():
    gold, silver = Slo(tier="gold", queue_target_ms=1000), Slo(queue_target_ms=60_000)
    ranks = {
        "none-p100": rank(None, 100, 0, 1),
        "breached": rank(gold, 0, 0, 2),  # due at 1,000: long past at any later time
        "healthy": rank(silver, 0, 50_000, 3),  # due at 110,000
        "healthy-boosted": rank(Slo(queue_target_ms=60_000, priority_boost=5), 0, 50_000, 4),
    }
    assert sorted(ranks, key=ranks.__getitem__) == ["breached", "healthy-boosted", "healthy", "none-p100"]
    # without an SLO: priority, then the oldest first (the original ranked the newest first, Q004-2)
    assert rank(None, 5, 10, 1) < rank(None, 1, 0, 0) and rank(None, 1, 0, 9) < rank(None, 1, 10, 1)


def test_queue_operations_touch_a_bounded_number_of_rows_whatever_the_length():
    def costs(length: int) -> tuple[int, int]:
        store = MemoryStore()
        head = PersonaHead(name="p")
        txn = store.transaction()
        queue = Queue(PersonaState(txn, "p"), head.queue)
        for i in range(length):
            queue.push(item(f"k{i}", i % 3, SLOS[i % 4], i))
        store.apply(txn)
        txn = Transaction(store)
        queue = Queue(PersonaState(txn, "p"), head.queue)
        queue.push(item("new", 1, SLOS[1], length))
        queue.remove(queue.get(f"k{length // 2}"))
        queue.hold(queue.get("k5"))
        entry = queue.next_ready()
        assert entry is not None
        queue.remove(queue.get(entry.work_key or ""))
        return txn.reads, sum(1 for _ in txn.changes())

    assert costs(10_000) == costs(100)
