"""What the audit consumer reported, for this worker's views: ``persona.audit`` read from
its start and kept small.

The audit consumer checks every stream's hash chain as it records the outbox and says on
``persona.audit`` which stream broke (``audit.chain_broken``) and which checkpoint it
signed (``audit.checkpoint``). A worker does not read the audit store (another process's
database); it follows that topic with a consumer of its own (no group: every worker sees
every notice) and keeps the first break of each stream and the newest checkpoint's number,
time and size — never the heads themselves, so its memory grows with the broken streams
(capped), not with the log.

The view is as trustworthy as write access to ``persona.audit``: a notice is not signed
check by check here, so whoever may write the topic can raise a false alarm or show a
checkpoint that is not one. The proof is ``personaflow audit verify`` (``--with-topic``),
which checks every checkpoint's signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from engine.kafka import BrokerAddress, end_offsets, new_consumer
from streams import wire
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger(__name__)

#: Broken streams kept (the count goes on past it).
BROKEN_KEPT = 500
#: Broken streams counted once each; past it, every further notice counts (at least).
BROKEN_COUNTED = 100_000
_NOTICE = msgspec.json.Decoder(wire.AuditNotice)


@dataclass
class AuditView:
    """The broken chains and the newest checkpoint, as the notices read so far tell."""

    broken: dict[str, dict[str, Any]] = field(default_factory=dict)
    broken_total: int = 0
    _counted: set[str] = field(default_factory=set)
    checkpoint: dict[str, Any] | None = None
    notices: int = 0
    #: Whether the topic was read up to its end as it stood when the watch started.
    caught_up: bool = False

    def add(self, raw: bytes | None) -> None:
        """Take one notice in (an unreadable record is skipped: it is not ours to judge)."""
        try:
            notice = _NOTICE.decode(raw or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self.notices += 1
        if notice.kind == "audit.checkpoint" and notice.number is not None:
            if self.checkpoint is None or notice.number >= self.checkpoint["number"]:
                self.checkpoint = {
                    "number": notice.number,
                    "at_ms": notice.at_ms,
                    "streams": len(notice.heads or {}),
                    "key_id": notice.key_id,
                    "group": notice.group,
                }
        elif notice.kind == "audit.chain_broken" and notice.stream is not None:
            if notice.stream in self._counted:
                return  # its first break stays: later ones follow from it
            self.broken_total += 1
            if len(self._counted) < BROKEN_COUNTED:
                self._counted.add(notice.stream)
            if len(self.broken) < BROKEN_KEPT:
                self.broken[notice.stream] = {
                    "stream": notice.stream,
                    "seq": notice.seq,
                    "event_id": notice.event_id,
                    "detail": notice.detail,
                    "at_ms": notice.at_ms,
                    "group": notice.group,
                }

    def to_json(self) -> dict[str, Any]:
        broken = sorted(self.broken.values(), key=lambda b: (b["at_ms"], b["stream"]))
        return {
            "broken": broken,
            "broken_total": self.broken_total,
            "checkpoint": self.checkpoint,
            "notices": self.notices,
            "caught_up": self.caught_up,
        }


class AuditWatch:
    """Follows ``persona.audit`` into an :class:`AuditView` until stopped."""

    def __init__(self, settings: Settings, broker: BrokerAddress) -> None:
        self.settings = settings
        self.broker = broker
        self.topic = TopicNames(settings.topic_prefix).audit
        self.view = AuditView()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Read until stopped; a broker error is logged and the watch starts over (a view
        that lags is better than a worker that stops for it)."""
        while not self.stopping.is_set():
            try:
                await self._follow()
            except Exception as exc:  # whatever it was, the worker goes on
                log.warning("reading %s failed (%s); trying again", self.topic, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 5.0)

    async def _follow(self) -> None:
        consumer = new_consumer(self.settings, self.broker.bootstrap, fetch_max_wait_ms=500)
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            if tps is None:
                return
            ends = await end_offsets(consumer, tps, self.broker.embedded)
            view = AuditView()  # from the start again: nothing doubled after a retry
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batch.values():
                    for record in records:
                        view.add(record.value)
                if not view.caught_up:
                    positions = [await consumer.position(tp) for tp in tps]
                    view.caught_up = all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True))
                self.view = view
        finally:
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition] | None:
        """All partitions of the topic from their start (None: stopped before it existed)."""
        while not self.stopping.is_set():
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic)
            if partitions:
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                return tps
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
        return None

    def stop(self) -> None:
        self.stopping.set()
