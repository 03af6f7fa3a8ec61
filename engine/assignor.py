"""Group assignment by partition number: every input topic's partition ``p`` goes to
the same worker (co-partitioning), as Kafka Streams assigns a task.

All persona-keyed topics have the same partition count, so a persona's bindings,
control, triggers, inbox and state partition share one number and one owner. Members
advertise their web address and the partitions they had; the leader keeps each
partition where it was when it can (sticky: fewer state moves) and balances the rest.
Every member receives the whole map of partition -> web address, so any worker can
route a query to the owner of a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata


def balance(members: Mapping[str, list[int]], partitions: list[int]) -> dict[str, list[int]]:
    """Partition numbers per member: each keeps what it had, up to its fair share;
    the rest go to the members with the fewest (ties: member id order). Deterministic."""
    names = sorted(members)
    if not names:
        return {}
    share, extra = divmod(len(partitions), len(names))
    quota = {name: share + (1 if index < extra else 0) for index, name in enumerate(names)}
    result: dict[str, list[int]] = {name: [] for name in names}
    taken: set[int] = set()
    for name in names:  # stickiness first
        for partition in sorted(members[name]):
            if partition in partitions and partition not in taken and len(result[name]) < quota[name]:
                result[name].append(partition)
                taken.add(partition)
    for partition in partitions:
        if partition in taken:
            continue
        name = min(names, key=lambda n: (len(result[n]) - quota[n] >= 0, len(result[n]), n))
        result[name].append(partition)
        taken.add(partition)
    return {name: sorted(parts) for name, parts in result.items()}


class CopartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]  # aiokafka ships no types
    """An aiokafka assignor instance for one worker (it carries the worker's web URL)."""

    name = "personaflow-copartitioned"
    version = 1

    def __init__(self, url: str) -> None:
        self.url = url
        self.owned: list[int] = []  # partition numbers of the current assignment
        self.owners: dict[int, str] = {}  # partition number -> web URL of its owner

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        user_data = json.dumps({"url": self.url, "owned": self.owned}).encode()
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), user_data)

    def assign(
        self,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({topic for meta in members.values() for topic in meta.subscription})
        counts = {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in topics}
        numbers = sorted({p for topic in topics for p in (cluster.partitions_for_topic(topic) or ())})
        info = {member: _user_data(meta) for member, meta in members.items()}
        plan = balance({member: data.get("owned", []) for member, data in info.items()}, numbers)
        owners = {p: info[member].get("url", "") for member, parts in plan.items() for p in parts}
        shared = json.dumps({"owners": owners}).encode()
        result = {}
        for member, parts in plan.items():
            subscribed = members[member].subscription
            assignment = [(topic, [p for p in parts if p < counts[topic]]) for topic in sorted(subscribed)]
            result[member] = ConsumerProtocolMemberAssignment(self.version, assignment, shared)
        return result

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.owned = sorted({p for _, parts in assignment.assignment for p in parts})
        try:
            owners = json.loads(assignment.user_data or b"{}").get("owners", {})
        except ValueError:
            owners = {}
        self.owners = {int(p): url for p, url in owners.items()}


def _user_data(meta: ConsumerProtocolMemberMetadata) -> dict[str, Any]:
    try:
        data = json.loads(meta.user_data or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
