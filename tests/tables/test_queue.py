"""The linked-list queue behaves like a plain ordered model, under any sequence of operations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.wire import TriggerEnvelope
from tables.queue import Queue
from tables.state import PersonaHead, PersonaState, QueueItem
from tables.store import MemoryStore

KEYS = [f"k{i}" for i in range(8)]


def item(work_key: str, priority: int) -> QueueItem:
    envelope = TriggerEnvelope(provider="p", kind="k", subject_key=work_key, received_at_ms=0)
    return QueueItem(
        work_key=work_key,
        request_id=f"r-{work_key}",
        envelope=envelope,
        priority=priority,
        seq=0,
        reason="queued",
        queued_at_ms=0,
    )


class Model:
    """Reference: ready ordered by age, held in hold order, eligibility by epoch."""

    def __init__(self) -> None:
        self.items: dict[str, dict] = {}
        self.seq = 0
        self.holds = 0
        self.epoch = 0

    def push(self, key: str, priority: int) -> str | None:
        replaced = key if key in self.items else None
        self.items[key] = {
            "priority": priority,
            "seq": self.seq,
            "list": "ready",
            "epoch": self.epoch,
            "order": self.seq,
        }
        self.seq += 1
        return replaced

    def remove(self, key: str) -> None:
        self.items.pop(key, None)

    def hold(self, key: str) -> None:
        entry = self.items[key]
        entry.update(list="held", epoch=self.epoch, order=self.holds)
        self.holds += 1

    def next_eligible(self) -> str | None:
        candidates = []
        for name in ("ready", "held"):
            for priority in {e["priority"] for e in self.items.values() if e["list"] == name}:
                level = sorted(
                    (e["order"], k) for k, e in self.items.items() if e["list"] == name and e["priority"] == priority
                )
                head = level[0][1]
                if name == "held" and self.items[head]["epoch"] >= self.epoch:
                    continue
                candidates.append(head)
        if not candidates:
            return None
        return max(candidates, key=lambda k: (self.items[k]["priority"], -self.items[k]["seq"]))

    def listing(self) -> list[str]:
        out = []
        for priority in sorted({e["priority"] for e in self.items.values()}, reverse=True):
            for name in ("ready", "held"):
                out += [
                    k
                    for _, k in sorted(
                        (e["order"], k)
                        for k, e in self.items.items()
                        if e["list"] == name and e["priority"] == priority
                    )
                ]
        return out


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(KEYS), st.integers(-2, 2)),
        st.tuples(st.just("remove"), st.sampled_from(KEYS), st.just(0)),
        st.tuples(st.just("hold"), st.sampled_from(KEYS), st.just(0)),
        st.tuples(st.just("release"), st.just(""), st.just(0)),
        st.tuples(st.just("take"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_queue_matches_the_reference_model(ops):
    store = MemoryStore()
    head = PersonaHead(name="p")
    model = Model()
    for op, key, priority in ops:
        txn = store.transaction()
        queue = Queue(PersonaState(txn, "p"), head.queue)
        if op == "push":
            replaced = queue.push(item(key, priority))
            assert (replaced.work_key if replaced else None) == model.push(key, priority)
        elif op == "remove" and key in model.items:
            queue.remove(queue.get(key))
            model.remove(key)
        elif op == "hold" and key in model.items:
            queue.hold(queue.get(key))
            model.hold(key)
        elif op == "release":
            queue.release_held()
            model.epoch += 1
        elif op == "take":
            chosen = queue.next_eligible()
            assert (chosen.work_key if chosen else None) == model.next_eligible()
            if chosen is not None:
                queue.remove(chosen)
                model.remove(chosen.work_key)
        store.apply(txn)
        check = Queue(PersonaState(store.transaction(), "p"), head.queue)
        assert len(check) == len(model.items)
        assert [i.work_key for i in check.items(100)] == model.listing()
        assert [i.work_key for i in check.items(2)] == model.listing()[:2]


def test_queue_operations_touch_a_constant_number_of_rows_whatever_the_length():
    store = MemoryStore()
    head = PersonaHead(name="p")
    txn = store.transaction()
    queue = Queue(PersonaState(txn, "p"), head.queue)
    for i in range(2000):
        queue.push(item(f"k{i}", i % 3))
    store.apply(txn)

    class Counting:
        def __init__(self) -> None:
            self.reads = 0

        def get(self, table, key):
            self.reads += 1
            return store.get(table, key)

    reader = Counting()
    from tables.store import Transaction

    txn = Transaction(reader)
    queue = Queue(PersonaState(txn, "p"), head.queue)
    queue.push(item("new", 1))
    queue.remove(queue.get("k1000"))
    queue.hold(queue.get("k5"))
    queue.next_eligible()
    assert reader.reads < 20
    assert sum(1 for _ in txn.changes()) < 12
