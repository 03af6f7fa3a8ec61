"""Event-time order across a task's inputs (pure: time and lag are given)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.merge import Merger

INPUTS = ["bindings", "control", "triggers"]


@dataclass(frozen=True)
class R:
    timestamp: int
    offset: int
    name: str = ""


def names(released):
    return [record.name for _, record in released]


def caught_up(_: str) -> int:
    return 0


def test_records_leave_smallest_timestamp_first_ties_in_input_order_then_offset():
    merger = Merger(INPUTS, idle_ms=0)
    merger.add("triggers", [R(5, 0, "t5"), R(7, 1, "t7")])
    merger.add("control", [R(5, 0, "c5"), R(6, 1, "c6")])
    merger.add("bindings", [R(5, 0, "b5")])
    assert names(merger.release(0, caught_up)) == ["b5", "c5", "t5", "c6", "t7"]


def test_an_empty_input_with_records_at_the_broker_holds_the_others_back():
    merger = Merger(INPUTS, idle_ms=0)
    merger.add("triggers", [R(9, 0, "t")])
    merger.add("control", [R(1, 0, "c")])
    lag = {"bindings": 1, "control": 0, "triggers": 0}
    assert names(merger.release(0, lag.get)) == []  # a binding is on its way: it may be older
    lag["bindings"] = None  # unknown: wait too
    assert names(merger.release(0, lambda name: None if name == "bindings" else 0)) == []
    merger.add("bindings", [R(3, 0, "b")])
    assert names(merger.release(0, caught_up)) == ["c", "b", "t"]


def test_caught_up_inputs_hold_back_at_most_the_idle_time():
    merger = Merger(INPUTS, idle_ms=50)
    merger.add("triggers", [R(9, 0, "t1")])
    assert names(merger.release(1000, caught_up)) == []
    assert merger.wake_at() == 1050
    assert names(merger.release(1049, caught_up)) == []
    assert names(merger.release(1050, caught_up)) == ["t1"]
    merger.add("triggers", [R(10, 1, "t2")])
    assert names(merger.release(1051, caught_up)) == ["t2"]  # still idle: no new wait
    merger.add("bindings", [R(11, 0, "b")])
    merger.add("control", [R(12, 0, "c")])
    merger.add("triggers", [R(13, 2, "t3")])
    # All three had data: the wait ends; once bindings is empty again a fresh one starts.
    assert names(merger.release(1052, caught_up)) == ["b"]
    assert names(merger.release(1101, caught_up)) == []
    assert names(merger.release(1102, caught_up)) == ["c", "t3"]


def test_without_an_idle_time_caught_up_inputs_do_not_wait():
    merger = Merger(INPUTS, idle_ms=0)
    merger.add("triggers", [R(9, 0, "t")])
    assert names(merger.release(0, caught_up)) == ["t"] and merger.buffered == 0
