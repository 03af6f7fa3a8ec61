"""The persona's work queue: one item per work key, highest priority first, then oldest.

Items live one per row in the ``queues`` table and are chained into doubly linked FIFOs,
one per (list, priority); the head record keeps only where each FIFO starts. Enqueue,
removal and taking the next item therefore read and write a handful of rows, however
long the queue is.

Two lists: ``ready`` items are taken up as soon as the lease is free and the persona may
work; ``held`` items (failed the budget gate while draining, or arrived while the persona
drains) wait for the next resume/enable/drain, which bumps ``epoch`` and so makes every
item held before it eligible again. Items enter ``held`` in time order, so the eligible
ones are always a prefix of each held FIFO.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .state import PersonaState, QueueIndex, QueueItem, QueueLevel

ListName = Literal["ready", "held"]


class Queue:
    def __init__(self, state: PersonaState, index: QueueIndex) -> None:
        self.state = state
        self.index = index

    def __len__(self) -> int:
        return self.index.count

    def _levels(self, name: ListName) -> dict[str, QueueLevel]:
        return self.index.ready if name == "ready" else self.index.held

    def get(self, work_key: str) -> QueueItem | None:
        return self.state.item(work_key)

    def push(self, item: QueueItem, name: ListName = "ready") -> QueueItem | None:
        """Queue ``item`` at the back of its priority; return the item it replaced, if any."""
        replaced = self.get(item.work_key)
        if replaced is not None:
            self.remove(replaced)
        item.seq = self.index.next_seq
        self.index.next_seq += 1
        self._append(item, name)
        return replaced

    def _append(self, item: QueueItem, name: ListName) -> None:
        levels = self._levels(name)
        level = levels.setdefault(str(item.priority), QueueLevel())
        item.list = name
        item.epoch = self.index.epoch
        item.prev, item.next = level.tail, None
        if level.tail is not None:
            tail = self.state.item(level.tail)
            assert tail is not None, f"queue tail {level.tail!r} is missing"
            tail.next = item.work_key
            self.state.put_item(tail)
        else:
            level.head = item.work_key
        level.tail = item.work_key
        level.count += 1
        self.index.count += 1
        self.index.version += 1
        self.state.put_item(item)

    def remove(self, item: QueueItem) -> None:
        """Unlink ``item`` (as stored) from its FIFO and delete it."""
        levels = self._levels(item.list)
        priority = str(item.priority)
        level = levels[priority]
        if item.prev is not None:
            before = self.state.item(item.prev)
            assert before is not None
            before.next = item.next
            self.state.put_item(before)
        else:
            level.head = item.next
        if item.next is not None:
            after = self.state.item(item.next)
            assert after is not None
            after.prev = item.prev
            self.state.put_item(after)
        else:
            level.tail = item.prev
        level.count -= 1
        if level.count == 0:
            del levels[priority]
        self.index.count -= 1
        self.index.version += 1
        self.state.drop_item(item.work_key)

    def hold(self, item: QueueItem, reason: str | None = None) -> None:
        """Move ``item`` to the back of the held FIFO of its priority (keeps its age)."""
        self.remove(item)
        if reason is not None:
            item.reason = reason
        self._append(item, "held")

    def release_held(self) -> None:
        """Make every item held so far eligible (resume, enable, drain)."""
        self.index.epoch += 1
        self.index.version += 1

    def next_eligible(self) -> QueueItem | None:
        """The item to take up next: highest priority, then lowest sequence number."""
        best: QueueItem | None = None
        for name in ("ready", "held"):
            for level in self._levels(name).values():
                if level.head is None:
                    continue
                candidate = self.state.item(level.head)
                assert candidate is not None, f"queue head {level.head!r} is missing"
                if name == "held" and candidate.epoch >= self.index.epoch:
                    continue
                if best is None or (candidate.priority, -candidate.seq) > (best.priority, -best.seq):
                    best = candidate
        return best

    def items(self, limit: int) -> Iterator[QueueItem]:
        """Up to ``limit`` items in drain order: by priority, ready before held, oldest first."""
        priorities = sorted({int(p) for p in self.index.ready} | {int(p) for p in self.index.held}, reverse=True)
        produced = 0
        for priority in priorities:
            for name in ("ready", "held"):
                level = self._levels(name).get(str(priority))
                cursor = level.head if level else None
                while cursor is not None:
                    if produced >= limit:
                        return
                    item = self.state.item(cursor)
                    assert item is not None
                    yield item
                    produced += 1
                    cursor = item.next
