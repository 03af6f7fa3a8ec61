"""The persona's queue: work waiting for the lease, ranked by the seed's SLO comparison.

Entries are queued triggers (one per work key, a :class:`~tables.state.QueueItem` row) and
runs waiting to be dispatched again under the persona's lease (retries, re-queued work,
compensations). Every entry has a rank (:func:`rank`), and all of them are taken up in
one order (seed 004.5): work with an SLO before work without; among it, ascending slack —
the time the work may still wait, ``queued + queue_target_ms - now``, so breached work
comes first, and since ``now`` is the same for all, ascending ``queued +
queue_target_ms`` — then descending priority (with the SLO's boost); without an SLO,
descending priority; then the oldest first (the original took the newest, Q004-2), then
the order of arrival.

A rank does not change with time, so the ranking is an index: rows of the ordered table
``queue_rank`` keyed ``[persona, list, rank]``; the first row of a range is found in
O(log n), and an operation writes one or two index rows, however long the queue is. The
lists:

* ``r``: ready, taken up in rank order whenever the lease is free and the persona works;
* ``h``: held until the next resume, enable or drain (work that failed the budget gate
  while taken up, work that arrived while the persona drains), then ready again;
* ``w``: waiting for the budget or for in-flight spend to fall (runs refused by the
  budget gate, dispatches deferred by backpressure), ready again when the budget changes,
  the hour turns or the deferral's time comes;
* ``a``: every entry by arrival (``seq``): the oldest, and whether taking one up jumps
  over older work (an SLO preemption). Kept only while work with an SLO is queued (from
  the first such entry, which writes it for the entries before it, until the queue is
  empty): without an SLO no entry can preempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from streams.wire import Slo

from .state import PersonaState, QueueIndex, QueueItem
from .store import key
from .timefmt import hour_start

ListName = Literal["r", "h", "w"]


class PersonaStepLike(Protocol):
    def set_timer(self, kind: str, due_ms: int | None) -> None: ...


RANK = "queue_rank"
#: ``queue_target_ms`` of an SLO that does not give one (seed ``DEFAULT_QUEUE_TARGET_MS``).
DEFAULT_TARGET_MS = 30_000
#: Priorities (and boosts) are 32-bit: shifted by this they are never negative in a rank.
_PRIORITY_SHIFT = 2**33
_STOP = "~"  # after every character a rank uses


def rank(slo: Slo | None, priority: int, queued_at_ms: int, seq: int) -> str:
    """An entry's place in the ranking, as text that sorts in that order."""
    if slo is None:
        return f"1{_PRIORITY_SHIFT - priority:011d}{max(queued_at_ms, 0):016d}{seq:012d}"
    target = DEFAULT_TARGET_MS if slo.queue_target_ms is None else slo.queue_target_ms
    due = max(queued_at_ms, 0) + target
    return f"0{due:016d}{_PRIORITY_SHIFT - priority - slo.priority_boost:011d}{max(queued_at_ms, 0):016d}{seq:012d}"


def slack_ms(slo: Slo, queued_at_ms: int, now_ms: int) -> int:
    """How long the work may still wait before its SLO is breached (negative: breached)."""
    target = DEFAULT_TARGET_MS if slo.queue_target_ms is None else slo.queue_target_ms
    return target - max(now_ms - queued_at_ms, 0)


@dataclass(frozen=True)
class Entry:
    """A queue entry: a queued trigger (``work_key``) or a run (``run_id``)."""

    ref: str  # "w:<work_key>" or "r:<run_id>"
    list: ListName
    rank: str

    @property
    def work_key(self) -> str | None:
        return self.ref[2:] if self.ref.startswith("w:") else None

    @property
    def run_id(self) -> str | None:
        return self.ref[2:] if self.ref.startswith("r:") else None

    @property
    def seq(self) -> int:
        return int(self.rank[-12:])

    @property
    def queued_at_ms(self) -> int:
        """When the entry's work was queued (the 16 digits before the rank's ``seq``)."""
        return int(self.rank[-28:-12])


def _prefix(persona: str, name: str) -> str:
    return key(persona, name, "")[:-2]  # '["persona","r",' + '"': every rank of that list


class Queue:
    """Typed access to one persona's queue through a transaction."""

    def __init__(self, state: PersonaState, index: QueueIndex) -> None:
        self.state = state
        self.index = index
        self.txn = state.txn
        self.persona = state.persona

    def __len__(self) -> int:
        """Queued triggers (runs waiting for the lease are not counted here)."""
        return self.index.count

    # ------------------------------------------------------------------ entries

    def _put(self, ref: str, name: ListName, entry_rank: str, *, new: bool = False) -> None:
        """Write an entry's row (``new``: an entry the queue did not hold)."""
        self.txn.put(RANK, key(self.persona, name, entry_rank), ref.encode())
        if new and entry_rank.startswith("0"):
            self.index.slo += 1
            if not self.index.arrival:
                self._start_arrivals()
        if self.index.arrival:
            self.txn.put(RANK, key(self.persona, "a", entry_rank[-12:]), f"{name}{entry_rank}".encode())

    def _drop(self, name: ListName, entry_rank: str, *, gone: bool = False) -> None:
        """Delete an entry's row (``gone``: it leaves the queue)."""
        self.txn.delete(RANK, key(self.persona, name, entry_rank))
        if gone and self.index.arrival:
            self.txn.delete(RANK, key(self.persona, "a", entry_rank[-12:]))
        if gone and entry_rank.startswith("0"):
            self.index.slo -= 1

    def _start_arrivals(self) -> None:
        """The first entry with an SLO: the arrival index starts, with the entries before it."""
        self.index.arrival = True
        lists: tuple[ListName, ...] = ("r", "h", "w")
        for name in lists:
            for entry in list(self._entries(name)):
                self.txn.put(RANK, key(self.persona, "a", entry.rank[-12:]), f"{name}{entry.rank}".encode())

    def _emptied(self) -> None:
        if self.index.count + self.index.runs == 0:
            self.index.arrival = False

    def _first(self, name: ListName) -> Entry | None:
        prefix = _prefix(self.persona, name)
        found = self.txn.first(RANK, prefix, prefix + _STOP)
        if found is None:
            return None
        return Entry(found[1].decode(), name, _rank_of(found[0]))

    def _entries(self, name: ListName) -> Iterator[Entry]:
        prefix = _prefix(self.persona, name)
        for row, ref in self.txn.scan(RANK, prefix, prefix + _STOP):
            yield Entry(ref.decode(), name, _rank_of(row))

    def _next_seq(self) -> int:
        seq = self.index.next_seq
        self.index.next_seq += 1
        self.index.version += 1
        return seq

    # ---------------------------------------------------------------- triggers

    def get(self, work_key: str) -> QueueItem | None:
        return self.state.item(work_key)

    def push(self, item: QueueItem, name: ListName = "r") -> QueueItem | None:
        """Queue ``item`` (ranked by its SLO, priority and age); return the item it
        replaced (the same work key), if any."""
        replaced = self.get(item.work_key)
        if replaced is not None:
            self.remove(replaced)
        item.seq = self._next_seq()
        item.list = name
        item.rank = rank(item.slo, item.priority, item.queued_at_ms, item.seq)
        self._put(f"w:{item.work_key}", name, item.rank, new=True)
        self.state.put_item(item)
        self.index.count += 1
        self._counted(name, +1)
        return replaced

    def remove(self, item: QueueItem) -> None:
        """Take ``item`` (as stored) out of the queue."""
        self._drop(item.list, item.rank, gone=True)
        self.state.drop_item(item.work_key)
        self.index.count -= 1
        self._counted(item.list, -1)
        self.index.version += 1
        self._emptied()

    def move(self, item: QueueItem, name: ListName, reason: str | None = None) -> None:
        """Move ``item`` to another list, keeping its rank (and so its age)."""
        self._drop(item.list, item.rank)
        self._counted(item.list, -1)
        item.list = name
        if reason is not None:
            item.reason = reason
        self._put(f"w:{item.work_key}", name, item.rank)
        self._counted(name, +1)
        self.state.put_item(item)
        self.index.version += 1

    def hold(self, item: QueueItem, reason: str | None = None) -> None:
        """Hold ``item`` until the next resume, enable or drain."""
        self.move(item, "h", reason)

    # -------------------------------------------------------------------- runs

    def push_run(self, run_id: str, slo: Slo | None, priority: int, queued_at_ms: int) -> str:
        """A run waits for the persona's lease; returns its rank (kept on the run)."""
        entry_rank = rank(slo, priority, queued_at_ms, self._next_seq())
        self._put(f"r:{run_id}", "r", entry_rank, new=True)
        self.index.runs += 1
        return entry_rank

    def drop_run(self, name: ListName, entry_rank: str) -> None:
        self._drop(name, entry_rank, gone=True)
        self.index.runs -= 1
        if name == "w":
            self.index.waiting -= 1
        self.index.version += 1
        self._emptied()

    def park_run(self, run_id: str, entry_rank: str, name: ListName) -> None:
        """Move a run's entry from the ready list to ``name``, keeping its rank."""
        self._drop("r", entry_rank)
        self._put(f"r:{run_id}", name, entry_rank)
        if name == "w":
            self.index.waiting += 1
        self.index.version += 1

    # ------------------------------------------------------------ the ranking

    def next_ready(self) -> Entry | None:
        """The first ready entry by rank (none to look for when the counters say so)."""
        if self.index.count + self.index.runs <= self.index.held + self.index.waiting:
            return None
        return self._first("r")

    def ready_entries(self) -> list[Entry]:
        """Every ready entry by rank (O(entries): for an unbound persona's runs only)."""
        return list(self._entries("r"))

    def oldest(self) -> Entry | None:
        """The entry that has waited longest (any list): O(log n) while the arrival index is
        kept, else a scan (for the run summary, which is read, not written)."""
        if not self.index.arrival:
            lists: tuple[ListName, ...] = ("r", "h", "w")
            every = [entry for name in lists for entry in self._entries(name)]
            return min(every, key=lambda entry: entry.seq, default=None)
        prefix = _prefix(self.persona, "a")
        found = self.txn.first(RANK, prefix, prefix + _STOP)
        if found is None:
            return None
        value = found[1].decode()
        name = value[0]
        assert name in ("r", "h", "w")
        return Entry("", name, value[1:])  # type: ignore[arg-type]

    def preempts(self, entry: Entry) -> bool:
        """Whether taking ``entry`` (with an SLO) up jumps over work queued before it."""
        if not (self.index.arrival and entry.rank.startswith("0")):
            return False
        oldest = self.oldest()
        return oldest is not None and oldest.seq < entry.seq

    def release(self, name: ListName) -> int:
        """Make every entry of list ``name`` ready again (resume, enable, drain for held
        entries; the budget or in-flight spend changing for waiting ones): O(entries)."""
        moved = list(self._entries(name))
        for entry in moved:
            self._drop(name, entry.rank)
            self._put(entry.ref, "r", entry.rank)
            if entry.work_key is not None:
                item = self.get(entry.work_key)
                assert item is not None, f"queued item {entry.work_key!r} is missing"
                item.list = "r"
                self.state.put_item(item)
        if name == "h":
            self.index.held = 0
        elif name == "w":
            self.index.waiting = 0
        if moved:
            self.index.version += 1
        return len(moved)

    def release_held(self) -> None:
        """Every held entry is ready again (resume, enable, drain)."""
        self.release("h")

    def waiting_until(self, due_ms: int | None, budget_version: int, now_ms: int) -> None:
        """An entry was put to wait: the waiting entries are woken when the budget's version
        or the hour moves on from now, or at ``due_ms``."""
        self.index.waiting_mark = [budget_version, hour_start(now_ms)]
        if due_ms is not None:
            self.index.waiting_due = due_ms if self.index.waiting_due is None else min(self.index.waiting_due, due_ms)

    def schedule_wake(self, step: PersonaStepLike) -> None:
        """The ``queue`` timer: when the waiting entries are due to be examined again."""
        step.set_timer("queue", self.index.waiting_due if self.index.waiting else None)

    def wake(self, budget_version: int, now_ms: int) -> bool:
        """Make the waiting entries ready again if what they wait for may have changed
        (O(1) when it has not); return whether it did."""
        if not self.index.waiting:
            return False
        due = self.index.waiting_due
        if self.index.waiting_mark == [budget_version, hour_start(now_ms)] and (due is None or due > now_ms):
            return False
        self.release("w")
        self.index.waiting_mark = self.index.waiting_due = None
        return True

    def items(self, limit: int) -> Iterator[QueueItem]:
        """Up to ``limit`` queued triggers in the order they would be taken up: ready by
        rank, then held, then waiting."""
        produced = 0
        lists: tuple[ListName, ...] = ("r", "h", "w")
        for name in lists:
            for entry in self._entries(name):
                if produced >= limit:
                    return
                if entry.work_key is None:
                    continue
                item = self.get(entry.work_key)
                assert item is not None, f"queued item {entry.work_key!r} is missing"
                yield item
                produced += 1

    def _counted(self, name: ListName, delta: int) -> None:
        if name == "h":
            self.index.held += delta
        elif name == "w":
            self.index.waiting += delta


def _rank_of(row_key: str) -> str:
    """The rank part of a ``queue_rank`` row key (``[persona, list, rank]``)."""
    return row_key[row_key.rindex(",") + 2 : -2]
