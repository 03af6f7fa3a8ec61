"""Per-event cost does not grow with history or queue length.

Not a timing test: it counts the table rows a transition reads and writes, which is
what its cost is made of, and requires the same counts after a short and a long
history (``make bench`` measures the actual throughput).
"""

from __future__ import annotations

from streams.inbox import ControlReceived, TriggerReceived
from streams.wire import ControlCommand, TriggerRequest
from tables import persona as transition
from tables.store import Transaction

from .harness import T0, Harness, merge_captain


def trigger(n: int, **extra) -> TriggerReceived:
    return TriggerReceived(
        at_ms=T0 + n,
        request=TriggerRequest(
            request_id=f"r{n}",
            persona="merge_captain",
            provider="webhook",
            kind="push",
            metadata={"dedupe_key": f"d{n}"},
            **extra,
        ),
    )


def cost_of(h: Harness, record) -> tuple[int, int, int]:
    """(rows read, rows written, outputs) of applying one record."""
    txn = Transaction(h.store)
    outputs = transition.apply(txn, record, 10**9)
    return txn.reads, sum(1 for _ in txn.changes()), len(outputs)


def with_history(completed: int) -> Harness:
    h = Harness()
    h.bind(merge_captain(daily_usd=None, run_usd=None, max_tokens=None))
    for n in range(completed):
        h.feed(trigger(n))
    return h


def test_a_trigger_costs_the_same_after_10_and_after_3000_completed_runs():
    short, long = with_history(10), with_history(3000)
    assert cost_of(short, trigger(10**6)) == cost_of(long, trigger(10**6))


def test_a_trigger_and_a_resume_cost_the_same_with_5_or_2000_items_queued():
    def queued(items: int) -> Harness:
        h = Harness()
        h.bind(merge_captain(daily_usd=None, run_usd=None, max_tokens=None))
        h.control("merge_captain", "pause")
        for n in range(items):
            h.feed(trigger(n, priority=n % 3))
        return h

    small, large = queued(5), queued(2000)
    assert cost_of(small, trigger(10**6, priority=1)) == cost_of(large, trigger(10**6, priority=1))
    pause_again = ControlReceived(
        at_ms=T0, command=ControlCommand(command_id="p2", persona="merge_captain", action="pause", actor="t")
    )
    assert cost_of(small, pause_again) == cost_of(large, pause_again)
