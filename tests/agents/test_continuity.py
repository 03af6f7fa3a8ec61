"""Gap filling: every input offset reaches the agent, in order (no broker needed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.continuity import Continuity, Positions, Progress, Watch, activity, stall


class FakeTopicContinuity(Continuity):
    """Continuity whose topic reads come from a dict instead of the broker."""

    def __init__(self, stored: dict[int, int]) -> None:
        self.topic = "persona.inbox"
        self.stored = lambda partition: stored.get(partition)
        self.filled = 0
        self.batches = 0
        self.in_hand = False
        self.reads: list[tuple[int, int, int]] = []

    async def _read(self, partition: int, start: int, end: int, timeout_s: float = 30.0) -> list:
        self.reads.append((partition, start, end))
        return [SimpleNamespace(offset=o, key=b"k", value=f"v{o}".encode(), timestamp=o) for o in range(start, end)]


def event(partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset, key=b"k",
                                                   value=f"v{offset}".encode(), timestamp=offset / 1000))


def offsets(items) -> list[tuple[int, int]]:
    return [(i.partition, i.offset) for i in items]


def test_skipped_offsets_are_read_from_the_topic_and_delivered_first():
    continuity = FakeTopicContinuity({0: 9, 1: 3})
    items = asyncio.run(continuity.complete([event(0, 10), event(1, 6), event(0, 13), event(0, 14)]))
    assert offsets(items) == [(0, 10), (1, 4), (1, 5), (1, 6), (0, 11), (0, 12), (0, 13), (0, 14)]
    assert continuity.reads == [(1, 4, 6), (0, 11, 13)]
    filled = [i for i in items if (i.partition, i.offset) == (1, 4)][0]
    assert filled.raw.value == b"v4" and filled.raw.topic == "persona.inbox"
    assert filled.event.message.partition == 1  # state writes use the revealing event's partition


def test_redelivered_offsets_pass_through():
    continuity = FakeTopicContinuity({0: 20})
    items = asyncio.run(continuity.complete([event(0, 18), event(0, 21)]))
    assert offsets(items) == [(0, 18), (0, 21)]
    assert continuity.reads == []


def test_a_partition_with_no_position_is_read_from_the_start_of_the_log():
    continuity = FakeTopicContinuity({})
    items = asyncio.run(continuity.complete([event(2, 3), event(3, 0)]))
    assert offsets(items) == [(2, 0), (2, 1), (2, 2), (2, 3), (3, 0)]
    assert continuity.reads == [(2, 0, 3)]


def test_positions_advance_only_forward():
    table: dict = {"persona.inbox/0": {"offset": 7}}
    positions = Positions("persona.inbox", table)  # a dict stands in for the Faust table
    items = asyncio.run(FakeTopicContinuity({0: 7}).complete([event(0, 5), event(0, 8), event(1, 2)]))
    rows = positions.advanced(items)
    assert sorted((key, value["offset"]) for _, key, value, _ in rows) == [("persona.inbox/0", 8), ("persona.inbox/1", 2)]
    assert positions.advanced(items[:1]) == []  # offset 5 is behind the stored 7: nothing to write


def test_a_partition_is_read_again_after_a_whole_check_of_an_idle_worker():
    idle = lambda stored: Progress(stored, 4, False)  # noqa: E731
    assert stall(10, idle(9), None, patience=5) == (None, None)  # caught up
    assert stall(10, idle(5), None, patience=5) == (Watch(5, 4, 1), None)  # behind: look again
    assert stall(10, idle(7), Watch(5, 4, 1), patience=5) == (Watch(7, 4, 1), None)  # it moved: fine
    assert stall(10, idle(7), Watch(7, 4, 1), patience=5) == (None, 8)  # stuck: re-read from 8
    assert stall(1, idle(None), Watch(None, 4, 1), patience=5) == (None, 0)  # nothing ever applied
    assert stall(None, idle(3), Watch(3, 4, 1), patience=5) == (None, None)  # end not known yet


def test_a_partition_behind_a_busy_worker_is_read_again_only_after_patience_runs_out():
    busy = Progress(5, 9, True)
    assert stall(10, busy, Watch(5, 8, 1), patience=3) == (Watch(5, 9, 2), None)
    assert stall(10, Progress(5, 10, False), Watch(5, 9, 2), patience=4) == (Watch(5, 10, 3), None)  # took a batch
    assert stall(10, busy, Watch(5, 9, 2), patience=3) == (None, 6)


def test_feed_counts_batches_and_marks_the_batch_in_hand():
    continuity = FakeTopicContinuity({})
    seen = []

    async def handle(events):
        seen.append((continuity.in_hand, continuity.batches))

    class Stream:  # the two batches Faust's take_events would yield
        async def take_events(self, max_, within):
            yield [event(0, 0), event(0, 1)]
            yield [event(1, 0), event(0, 2)]

    asyncio.run(continuity.feed(Stream(), handle))
    assert seen == [(True, 1), (True, 2)]
    assert continuity.in_hand is False
    assert activity([continuity, FakeTopicContinuity({})]) == (2, False)
