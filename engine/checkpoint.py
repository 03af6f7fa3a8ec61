"""The commit protocol: what makes a loop pass's effects happen once.

A pass has, per task, the outputs its handlers produced and the state rows they
changed, plus the new input positions. :meth:`Checkpoint.commit` makes them durable
in this order:

1. Publish the outputs, phase by phase (a phase is acknowledged by the broker before
   the next one is sent: a run's registration lands before executors see its dispatch).
2. Write each task's rows *and its positions* to its changelog partition as ONE record
   batch. Kafka appends a record batch atomically, so a crash leaves either the whole
   commit or none of it in the changelog: no torn state, no commit marker needed.
3. Apply the same rows to the local stores (RocksDB stores the changelog offset in the
   same write) and move the tasks' committed positions forward.

Why each failure is safe:

* Crash before 1 completes, or between 1 and 2: the changelog still holds the old
  state and positions, so the inputs are processed again from the same state and the
  pure transitions re-emit identical records (same ids); consumers dedupe by id.
* Crash during 2: the batch is appended whole or not at all (see above).
* Crash after 2, before 3: the local store lags the changelog; recovery reads the
  changelog from the store's offset, so it catches up before processing resumes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .publish import Publisher, Record
from .state import Row
from .task import Task

log = logging.getLogger(__name__)


@dataclass
class TaskCommit:
    """One task's share of a pass."""

    task: Task
    rows: list[Row] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)


class Checkpoint:
    def __init__(self, publisher: Publisher, changelog: str, headers: Callable[[], Sequence[tuple[str, bytes]]]) -> None:
        self.publisher = publisher
        self.changelog = changelog
        self.headers = headers
        self.changelog_records = 0  # state records written so far

    async def commit(self, outputs: Sequence[tuple[int, Record]], tasks: Sequence[TaskCommit]) -> None:
        # 1. Outputs, one phase after the other.
        for phase in sorted({phase for phase, _ in outputs}):
            await self.publisher.publish(record for p, record in outputs if p == phase)

        # 2. State and positions: one atomic record batch per task partition.
        writes = [commit for commit in tasks if commit.rows or commit.positions != commit.task.positions]
        encoded = [self._encode(commit) for commit in writes]
        offsets = await asyncio.gather(*(
            self.publisher.publish_batch(self.changelog, commit.task.partition, records, self.headers(), size)
            for commit, (records, size) in zip(writes, encoded)))

        # 3. Local stores and committed positions.
        for commit, (records, _), first in zip(writes, encoded, offsets):
            rows = commit.rows + [commit.task.positions_row(commit.positions)]
            commit.task.store.apply(rows, first + len(records) - 1)
            commit.task.positions = dict(commit.positions)
            self.changelog_records += len(records)

    @staticmethod
    def _encode(commit: TaskCommit) -> tuple[list[tuple[bytes, bytes | None]], int]:
        rows = commit.rows + [commit.task.positions_row(commit.positions)]
        records = [(f"{table}\x1f{key}".encode(), value) for table, key, value in rows]
        size = sum(len(k) + (len(v) if v else 0) for k, v in records)
        return records, size
