"""What the audit consumer reported, for this worker's views: ``persona.audit`` read from
its start and kept small.

The audit consumer checks every stream's hash chain as it records the outbox and says on
``persona.audit`` which stream broke (``audit.chain_broken``) and which checkpoint it
signed (``audit.checkpoint``). A worker does not read the audit store (another process's
database); when its view is asked for it reads that topic with a consumer of its own (no
group: every worker sees every notice), up to its end, at most every few seconds, and keeps the first break of each stream and the newest checkpoint's number,
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
import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.kafka import BrokerAddress, end_offsets, new_consumer
from streams import wire
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger(__name__)

#: Seconds between looks at the topic (the dashboard's badge lags at most this much).
LOOK_EVERY_S = 5.0
#: Seconds one look may read for before the view is shown (then it reads on at the next).
LOOK_FOR_S = 10.0
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
    """Reads ``persona.audit`` into an :class:`AuditView` when the view is asked for (``GET
    /audit``, the dashboard), at most every :data:`LOOK_EVERY_S`: a worker nobody looks at
    reads nothing. Between looks its consumer is paused, so it fetches nothing either (a
    consumer fetching all the time slowed external runs on the embedded broker by a fifth
    in ``make bench``). A look runs in the background: asking never waits for the broker,
    it gets the view as the last look left it."""

    def __init__(self, settings: Settings, broker: BrokerAddress) -> None:
        self.settings = settings
        self.broker = broker
        self.topic = TopicNames(settings.topic_prefix).audit
        self.view = AuditView()
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._looked_at = -math.inf
        self._looking: asyncio.Task[None] | None = None

    def current(self) -> AuditView:
        """The view as the last look left it; a new look starts in the background if that
        one is older than :data:`LOOK_EVERY_S` and none is under way."""
        loop = asyncio.get_running_loop()
        idle = self._looking is None or self._looking.done()
        if idle and loop.time() - self._looked_at >= LOOK_EVERY_S:
            self._looked_at = loop.time()
            self._looking = loop.create_task(self._refresh())
        return self.view

    async def _refresh(self) -> None:
        """One look, :data:`LOOK_FOR_S` at most (the rest is read at the next). A broker
        error is logged and the next look starts over: a view that lags is better than a
        worker that stops for it."""
        try:
            await asyncio.wait_for(self._look(), LOOK_FOR_S)
        except TimeoutError:
            pass  # read on at the next look, from where this one stopped
        except Exception as exc:  # whatever it was, the worker goes on
            log.warning("reading %s failed (%s); starting over at the next look", self.topic, exc)
            await self._stop_consumer()

    async def _look(self) -> None:
        consumer = self._consumer
        if consumer is None:
            consumer = new_consumer(self.settings, self.broker.bootstrap, fetch_max_wait_ms=100)
            await consumer.start()
            self._consumer = consumer
        if not self._partitions:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                return  # no audit consumer has written yet (the workers create the topic)
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(self._partitions)
            await consumer.seek_to_beginning(*self._partitions)
            self.view = AuditView()  # from the start: nothing doubled after starting over
        tps = self._partitions
        view = self.view
        view.caught_up = False
        ends = await end_offsets(consumer, tps, self.broker.embedded)
        consumer.resume(*tps)
        try:
            while not all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batch.values():
                    for record in records:
                        view.add(record.value)
            view.caught_up = True
        finally:
            consumer.pause(*tps)

    async def close(self) -> None:
        """Stop a look under way and the consumer."""
        if self._looking is not None and not self._looking.done():
            self._looking.cancel()
            with contextlib.suppress(BaseException):
                await self._looking
        await self._stop_consumer()

    async def _stop_consumer(self) -> None:
        """Stop the consumer (the next look starts over)."""
        consumer, self._consumer, self._partitions = self._consumer, None, []
        if consumer is not None:
            with contextlib.suppress(Exception):  # closing: nothing left to save
                await consumer.stop()
