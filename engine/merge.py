"""Event-time order across the input partitions of one task (Kafka Streams' partition
group): records are released smallest timestamp first (ties: the order the inputs are
given in, then offset), so a binding or a pause published before a trigger is applied
before it, although the three arrive on different topics.

A record may be released only when every input has a record buffered, because an
empty input may still deliver an earlier one. An empty input is waited for

* without limit while the broker has records for it that were not fetched yet (its
  lag is positive or unknown: the next fetch brings them, KIP-695), and
* at most ``idle_ms`` when it is caught up (no data at the broker): a producer may
  publish the earlier record a moment later (``max.task.idle.ms``). After that the
  other inputs are processed without it until it has data again.

The merger only decides order; it is pure (time and lag are passed in), so its
decisions are testable without a broker.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar


class Timestamped(Protocol):
    @property
    def timestamp(self) -> int: ...
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Timestamped)


class Merger(Generic[R]):
    """Buffers the records of several inputs and releases them in timestamp order."""

    def __init__(self, inputs: Sequence[str], idle_ms: int) -> None:
        self.inputs = list(inputs)
        self.rank = {name: index for index, name in enumerate(self.inputs)}
        self.idle_ms = idle_ms
        self.buffers: dict[str, deque[R]] = {name: deque() for name in self.inputs}
        self.blocked_since: int | None = None  # when an empty, caught-up input first held records back

    def add(self, name: str, records: Sequence[R]) -> None:
        self.buffers[name].extend(records)

    def clear(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        self.blocked_since = None

    @property
    def buffered(self) -> int:
        return sum(len(buffer) for buffer in self.buffers.values())

    def release(self, now_ms: int, lag: Callable[[str], int | None]) -> list[tuple[str, R]]:
        """The records that may be processed now, in order. ``lag(name)`` is how many
        records of that input the broker has that were not fetched (None: unknown)."""
        released: list[tuple[str, R]] = []
        heads = [
            (buffer[0].timestamp, self.rank[name], buffer[0].offset, name)
            for name, buffer in self.buffers.items()
            if buffer
        ]
        heapq.heapify(heads)
        while heads:
            empty = [name for name, buffer in self.buffers.items() if not buffer]
            if empty and not self._may_skip(empty, now_ms, lag):
                break
            if not empty:
                self.blocked_since = None
            _, _, _, name = heapq.heappop(heads)
            buffer = self.buffers[name]
            released.append((name, buffer.popleft()))
            if buffer:
                heapq.heappush(heads, (buffer[0].timestamp, self.rank[name], buffer[0].offset, name))
        return released

    def _may_skip(self, empty: list[str], now_ms: int, lag: Callable[[str], int | None]) -> bool:
        """Whether records may be released although ``empty`` inputs have none buffered."""
        for name in empty:
            behind = lag(name)
            if behind is None or behind > 0:
                return False  # data is on its way: wait for the fetch
        if self.idle_ms <= 0:
            return True
        if self.blocked_since is None:
            self.blocked_since = now_ms
        return now_ms - self.blocked_since >= self.idle_ms

    def wake_at(self) -> int | None:
        """When an idle wait in progress ends (for the caller's poll timeout)."""
        if self.blocked_since is None or not any(self.buffers.values()):
            return None
        return self.blocked_since + self.idle_ms
