"""Gap filling: every input offset reaches the agent, in order (no broker needed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.continuity import Continuity, Positions, stall


class FakeTopicContinuity(Continuity):
    """Continuity whose topic reads come from a dict instead of the broker."""

    def __init__(self, stored: dict[int, int]) -> None:
        self.topic = "persona.inbox"
        self.stored = lambda partition: stored.get(partition)
        self.filled = 0
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


def test_a_partition_is_read_again_only_after_a_whole_check_without_progress():
    assert stall(end=10, stored=9, at_last_check=None) == (None, None)  # caught up
    assert stall(end=10, stored=5, at_last_check=None) == (5, None)  # behind: look again
    assert stall(end=10, stored=7, at_last_check=5) == (7, None)  # moving: fine
    assert stall(end=10, stored=7, at_last_check=7) == (None, 8)  # stuck: re-read from 8
    assert stall(end=1, stored=None, at_last_check=-1) == (None, 0)  # nothing ever applied
    assert stall(end=None, stored=3, at_last_check=3) == (None, None)  # end not known yet
