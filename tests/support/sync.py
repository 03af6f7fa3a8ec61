"""A synchronous face over :class:`personaflow.client.Client`, for plain pytest tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from engine.kafka import BrokerAddress
from personaflow.client import Client, Seen, Tail
from streams.settings import Settings

T = TypeVar("T")


class SyncTail:
    def __init__(self, owner: SyncClient, tail: Tail) -> None:
        self.owner = owner
        self.tail = tail

    @property
    def seen(self) -> list[Seen]:
        return self.tail.seen

    def until(self, done: Callable[[list[Seen]], bool], timeout_s: float = 60.0, what: str = "condition") -> list[Seen]:
        return self.owner.run(self.tail.until(done, timeout_s, what))

    def catch_up(self) -> list[Seen]:
        """Everything the topic holds right now (read to its end offsets)."""
        return self.owner.run(self.tail.catch_up())

    def values(self, keep: Callable[[Seen], bool] = lambda r: True) -> list[Any]:
        return [record.value for record in self.seen if keep(record)]

    def for_key(self, key: str) -> list[Any]:
        return [record.value for record in self.seen if record.key == key]

    def wait_for_key(
        self, key: str, count: int = 1, timeout_s: float = 60.0, where: Callable[[Any], bool] = lambda value: True
    ) -> list[Any]:
        """Wait until ``count`` records with ``key`` (and matching ``where``) arrived."""
        self.until(
            lambda seen: sum(1 for r in seen if r.key == key and where(r.value)) >= count,
            timeout_s,
            f"{count} record(s) for key {key!r}",
        )
        return [r.value for r in self.seen if r.key == key and where(r.value)]

    def stop(self) -> None:
        self.owner.run(self.tail.stop())


class SyncClient:
    """Owns a private event loop; each call runs to completion on it."""

    def __init__(self, settings: Settings, broker: BrokerAddress) -> None:
        self.loop = asyncio.new_event_loop()

        async def open_client() -> Client:  # aiokafka wants a running loop at construction
            return await Client(settings, broker).start()

        self.client = self.run(open_client())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def send(
        self,
        role: str,
        key: str | bytes | None,
        value: Any,
        headers: Iterable[tuple[str, str]] = (),
        timestamp_ms: int | None = None,
    ) -> Any:
        return self.run(self.client.send(role, key, value, headers, timestamp_ms))

    def send_many(self, records: Iterable[tuple[str, str | bytes | None, Any]]) -> None:
        async def send_all() -> None:
            for role, key, value in records:
                await self.client.send(role, key, value)

        self.run(send_all())

    def tail(self, role: str, *, from_beginning: bool = False) -> SyncTail:
        return SyncTail(self, self.run(self.client.tail(role, from_beginning=from_beginning)))

    @property
    def open_tails(self) -> int:
        return len(self.client.tails)

    def stop_tails(self, keep: int = 0) -> None:
        """Stop the tails opened after the first ``keep`` (a finished test's tails)."""
        self.run(self.client.stop_tails(keep))

    def close(self) -> None:
        self.run(self.client.stop())
        self.loop.close()
