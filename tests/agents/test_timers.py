"""The timer finds what is due in O(due): with 10,000 personas bound, a tick touches only
the due rows. Pure: the punctuator and the transitions over a memory store, no broker."""

from __future__ import annotations

from collections.abc import Iterator

from agents.timers import punctuator
from engine.state import MemoryStore
from engine.task import TaskBatch
from streams.inbox import PERSONA_INPUT, BindingChanged, Tick, TriggerReceived
from streams.settings import Settings
from streams.wire import TriggerRequest
from tables import persona as transition
from tables.store import Transaction
from tables.timers import TIMERS

from ..tables.harness import T0, binding

PERSONAS = 10_000
SILENT = 10  # external personas whose run never reports: their leases fall due


class Counting:
    """A partition store that counts what is read from it."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.gets = 0
        self.rows = 0

    def get(self, table: str, key: str) -> bytes | None:
        self.gets += 1
        return self.store.get(table, key)

    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, bytes]]:
        for row in self.store.items(table, start, stop):
            self.rows += 1
            yield row


def apply(store: MemoryStore, record) -> Transaction:
    txn = Transaction(store)
    transition.apply(txn, record)
    store.apply(list(txn.changes()), store.changelog_offset + 1)
    return txn


def test_a_tick_with_10000_personas_bound_reads_only_the_rows_that_are_due():
    store = MemoryStore(0, ordered={TIMERS})
    for n in range(PERSONAS):
        name = f"p{n:05d}"
        execution = "external" if n < SILENT else "inline"
        apply(
            store,
            BindingChanged(
                at_ms=T0,
                persona=name,
                binding=binding(name=name, schedules=["0 * * * *"], execution=execution, lease_ttl_ms=1000),
            ),
        )
    for n in range(SILENT):
        apply(
            store,
            TriggerReceived(
                at_ms=T0,
                request=TriggerRequest(request_id=f"r{n}", persona=f"p{n:05d}", provider="webhook", kind="push"),
            ),
        )
    assert sum(1 for _ in store.items(TIMERS)) == PERSONAS + SILENT  # a cron row each, a lease row each silent one

    counting = Counting(store)
    batch = TaskBatch(0, counting, None, T0 + 1500)  # type: ignore[arg-type]
    punctuator(Settings()).punctuate(batch, T0 + 1500)
    ticks = [PERSONA_INPUT.decode(o.value_bytes()) for o in batch.outputs]
    assert sorted(t.persona for t in ticks) == [f"p{n:05d}" for n in range(SILENT)]
    assert all(isinstance(t, Tick) and t.at_ms == T0 + 1500 for t in ticks)
    assert (counting.rows, counting.gets) == (SILENT, 0)

    # Each tick's transition reads a handful of its own rows, whatever the population.
    reads = [apply(store, tick).reads for tick in ticks]
    assert max(reads) <= 6, reads
    kinds = sorted(key.split("/")[1] for key, _ in store.items(TIMERS))
    assert kinds.count("lease") == 0 and kinds.count("runs") == SILENT  # each expired lease: its run's retry is due

    # The next tick finds nothing due until the top of the hour, then every persona once.
    batch = TaskBatch(0, counting, None, T0 + 2000)  # type: ignore[arg-type]
    punctuator(Settings()).punctuate(batch, T0 + 2000)
    assert batch.outputs == []
