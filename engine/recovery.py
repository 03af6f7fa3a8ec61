"""Rebuilding a task's local state from its changelog partition.

The changelog holds only whole commits (each one record batch, see
:mod:`engine.checkpoint`), so applying every record from the store's own offset to the
end of the partition yields the state of the last commit: no filtering, no markers. The
end is read once at the start; no one else writes the partition while this worker owns
it. A RocksDB store resumes from the offset it recorded; a memory store starts at 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from .kafka import end_offsets
from .state import SEPARATOR, PartitionStore

log = logging.getLogger(__name__)

#: Records applied to a store in one write during recovery.
CHUNK = 5000


class StaleStore(RuntimeError):
    """The local store is ahead of its changelog (the topic was recreated): rebuild it."""


async def recover(
    consumer: AIOKafkaConsumer, changelog: str, stores: Sequence[PartitionStore], embedded: bool
) -> dict[int, int]:
    """Bring every store up to the end of its changelog partition; return the number of
    records applied per partition. ``consumer`` is started and not in a group."""
    tps = {TopicPartition(changelog, store.partition): store for store in stores}
    if not tps:
        return {}
    consumer.assign(list(tps))
    ends = await end_offsets(consumer, list(tps), embedded)
    pending: dict[TopicPartition, int] = {}
    for tp, store in tps.items():
        if store.changelog_offset >= ends[tp]:
            raise StaleStore(
                f"{changelog}[{tp.partition}] ends at {ends[tp]} but the local store of partition"
                f" {tp.partition} is at offset {store.changelog_offset}"
            )
        start = store.changelog_offset + 1
        if start < ends[tp]:
            consumer.seek(tp, start)
            pending[tp] = ends[tp]
    applied = {tp.partition: 0 for tp in tps}
    started = time.monotonic()
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=CHUNK)
        for tp, records in fetched.items():
            end = pending.get(tp)
            if end is None:
                continue
            rows = []
            last = -1
            for record in records:
                if record.offset >= end:
                    break
                table, _, key = (record.key or b"").decode().partition(SEPARATOR)
                rows.append((table, key, record.value))
                last = record.offset
            if rows:
                tps[tp].apply(rows, last)
                applied[tp.partition] += len(rows)
        for tp in list(pending):
            # Compaction leaves gaps, so "reached the end" is the position, not the last offset seen.
            end = pending[tp]
            if await consumer.position(tp) >= end:
                del pending[tp]
                if tps[tp].changelog_offset < end - 1:
                    tps[tp].apply([], end - 1)  # the last records were compacted away
    if applied and any(applied.values()):
        log.info("recovered %s records of %s in %.1fs", applied, changelog, time.monotonic() - started)
    return applied
