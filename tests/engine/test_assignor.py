"""Assignment by partition number: co-partitioned, balanced, sticky."""

from __future__ import annotations

import json

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from engine.assignor import CopartitionedAssignor, balance


def test_balance_is_fair_and_keeps_what_members_had():
    assert balance({"a": [], "b": []}, list(range(8))) == {"a": [0, 2, 4, 6], "b": [1, 3, 5, 7]}
    plan = balance({"a": [0, 1, 2, 3], "b": [4, 5, 6, 7], "c": []}, list(range(8)))
    assert sorted(len(p) for p in plan.values()) == [2, 3, 3]
    assert set(plan["a"]) <= {0, 1, 2, 3} and set(plan["b"]) <= {4, 5, 6, 7}
    assert sorted(p for parts in plan.values() for p in parts) == list(range(8))
    assert balance({"b": [], "a": []}, [0, 1, 2]) == balance({"a": [], "b": []}, [0, 1, 2])


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(4))


def test_every_topic_partition_p_goes_to_the_same_member_and_everyone_learns_the_owners():
    leader = CopartitionedAssignor("http://a:1")
    members = {
        "m1": ConsumerProtocolMemberMetadata(1, ["t1", "t2"], json.dumps({"url": "http://a:1", "owned": []}).encode()),
        "m2": ConsumerProtocolMemberMetadata(1, ["t1", "t2"], json.dumps({"url": "http://b:2", "owned": [3]}).encode()),
    }
    result = leader.assign(Cluster(), members)  # type: ignore[arg-type]
    for assignment in result.values():
        by_topic = dict(assignment.assignment)
        assert by_topic["t1"] == by_topic["t2"]
    assert 3 in dict(result["m2"].assignment)["t1"]  # sticky
    follower = CopartitionedAssignor("http://b:2")
    follower.on_assignment(result["m2"])
    assert follower.owned == dict(result["m2"].assignment)["t1"]
    assert {follower.owners[p] for p in range(4)} == {"http://a:1", "http://b:2"}
