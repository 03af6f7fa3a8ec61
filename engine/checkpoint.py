"""The commit protocol: what makes a loop pass's effects happen once.

A pass has, per task, the outputs its handlers produced and the state rows they
changed, plus the new input positions. :meth:`Checkpoint.commit` makes them durable
in this order:

1. Publish the outputs, phase by phase (a phase is acknowledged by the broker before
   the next one is sent: a run's registration lands before executors see its dispatch).
2. Wait until the previous pass's state is acknowledged (:meth:`flush`).
3. Send each task's rows *and its positions* to its changelog partition as ONE record
   batch. Kafka appends a record batch atomically, so a crash leaves either the whole
   commit or none of it in the changelog: no torn state, no commit marker needed.
4. Apply the same rows to the local stores, unconfirmed, and move the tasks' positions
   forward. The batch's acknowledgement is awaited by the next commit (step 2), by
   :meth:`flush` before partitions are given up, and when the worker stops; so this
   pass's state write overlaps the next pass, which saves a broker round trip per pass.

Why each failure is safe:

* Crash before 1 completes, or before 3: the changelog holds the old state and
  positions, so the inputs are processed again from the same state and the pure
  transitions re-emit identical records (same ids); consumers dedupe by id.
* Crash during 3: the batch is appended whole or not at all (see above).
* Crash after 3: the local store may be ahead of the changelog. A memory store is gone
  anyway; a RocksDB store marked its unconfirmed rows in the same write and is rebuilt
  from the changelog when reopened (:class:`~engine.state.RocksDBStore`).
* A state write that fails while the worker runs: the next pass's rows would be
  built on state the changelog does not have, so :class:`LostStateWrite` stops the
  worker instead; a restart recovers from the changelog.
* Only one state write per task is in flight at a time (step 2), so the changelog
  receives them in order even when the producer retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka.structs import RecordMetadata

from .publish import Publisher, Record
from .state import Row
from .task import Task

log = logging.getLogger(__name__)


class LostStateWrite(RuntimeError):
    """A state batch was not acknowledged; the worker must stop and recover."""


@dataclass
class TaskCommit:
    """One task's share of a pass."""

    task: Task
    rows: list[Row] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)


class Checkpoint:
    def __init__(
        self, publisher: Publisher, changelog: str, headers: Callable[[], Sequence[tuple[str, bytes]]]
    ) -> None:
        self.publisher = publisher
        self.changelog = changelog
        self.headers = headers
        self.changelog_records = 0  # state records written so far
        self._in_flight: list[tuple[Task, asyncio.Future[RecordMetadata], int]] = []

    async def commit(self, outputs: Sequence[tuple[int, Record]], tasks: Sequence[TaskCommit]) -> None:
        # 1. Outputs, one phase after the other.
        for phase in sorted({phase for phase, _ in outputs}):
            await self.publisher.publish(record for p, record in outputs if p == phase)

        # 2. The previous pass's state first.
        await self.flush()

        # 3. State and positions: one atomic record batch per task partition.
        writes = [commit for commit in tasks if commit.rows or commit.positions != commit.task.positions]
        for commit in writes:
            rows = commit.rows + [commit.task.positions_row(commit.positions)]
            records = [(f"{table}\x1f{key}".encode(), value) for table, key, value in rows]
            size = sum(len(k) + (len(v) if v else 0) for k, v in records)
            future = await self.publisher.send_batch(
                self.changelog, commit.task.partition, records, self.headers(), size
            )
            self._in_flight.append((commit.task, future, len(records)))
            self.changelog_records += len(records)

            # 4. Local store and positions (confirmed by flush).
            commit.task.store.apply(rows, None)
            commit.task.positions = dict(commit.positions)

    async def flush(self) -> None:
        """Wait until every state batch sent is acknowledged, and confirm it locally."""
        in_flight, self._in_flight = self._in_flight, []
        for task, future, count in in_flight:
            try:
                metadata = await future
            except Exception as exc:
                raise LostStateWrite(
                    f"the state batch of partition {task.partition} was not written to {self.changelog}: {exc!r}"
                ) from exc
            task.store.confirm(metadata.offset + count - 1)
