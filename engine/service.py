"""Running a long-lived consumer service (executor, audit consumer) as a process."""

from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable


async def serve(run: Callable[[asyncio.Event], Awaitable[None]], stop: Callable[[], None],
                ready_line: Callable[[], str]) -> None:
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
