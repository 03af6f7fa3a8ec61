"""Running a long-lived consumer service (executor, audit consumer) as a process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

#: How long a fetch waits while the service is still joining its group (so it says it is
#: ready soon after the assignment arrives).
JOINING_WAIT_MS = 100


async def fetch(
    consumer: AIOKafkaConsumer, ready: asyncio.Event | None, timeout_ms: int, max_records: int
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """One batch of a group member's subscription. The first calls also join the group:
    what they return is part of the stream like any batch (dropping it loses records), and
    ``ready`` is set once partitions are assigned."""
    joining = ready is not None and not ready.is_set()
    batch: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
        timeout_ms=JOINING_WAIT_MS if joining else timeout_ms, max_records=max_records
    )
    if joining and consumer.assignment():
        assert ready is not None
        ready.set()
    return batch


async def serve(
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop: Callable[[], None], ready_line: Callable[[], str]
) -> None:
    """Run ``run(ready)`` until it returns; SIGINT and SIGTERM call ``stop``. Once ``ready``
    is set (the service joined its group), print ``ready_line()`` so that whoever started
    the process can wait for it."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    ready = asyncio.Event()
    work = asyncio.create_task(run(ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait([work, waiting], return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        print(ready_line(), flush=True)
    waiting.cancel()
    await work
