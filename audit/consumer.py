"""``personaflow audit``: a consumer group reading ``persona.outbox`` into the audit store.

It also tells everyone else what it finds, on ``persona.audit`` (``AuditNotice``): each
signed checkpoint it writes (``audit.checkpoint``, a copy outside the store), and each
broken link it finds as it records (``audit.chain_broken``; workers' dashboards show the
first of each stream). Notices go after the database committed what they report: a crash
in between loses a notice, never a checkpoint or a problem row (``personaflow audit
verify`` reads the store); at start the newest stored checkpoint is published again, so
the topic's copy of the newest checkpoint is not lost to a crash. The workers create the
topic (with the other contract topics); this consumer only writes to it.

Positions live in the database (:class:`~audit.recorder.AuditRecorder`), written with
each batch of events. When partitions are assigned, the consumer seeks to the stored
positions, not to the group's committed offsets; it still commits offsets to Kafka after
each batch, so that Kafka tooling shows the group's lag, but those are never read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from engine import compat
from engine.kafka import BrokerAddress, new_consumer, new_producer
from engine.service import fetch, serve
from streams import wire
from streams.capability import Signer
from streams.settings import Settings
from streams.topics import TopicNames

from .chain import checkpoint, stored_checkpoint
from .recorder import AuditRecorder, Recorded, records_of

log = logging.getLogger("personaflow.audit")

BATCH_RECORDS = 2000
#: Notices held while the broker refuses them (the newest are kept).
NOTICES_KEPT = 10_000
#: Seconds between tries while the broker refuses notices.
RETRY_S = 5.0
#: Seconds the notices of a clean stop may take to go.
FINAL_PUBLISH_S = 10.0
#: Seconds between signed checkpoints of the stream heads (only after events were stored).
CHECKPOINT_EVERY_S = 60.0


class _SeekToStored(ConsumerRebalanceListener):
    """On assignment, continue from the positions the database holds."""

    def __init__(self, auditor: AuditConsumer) -> None:
        self.auditor = auditor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.auditor.seek_to_stored(list(assigned))


class AuditConsumer:
    def __init__(
        self,
        settings: Settings,
        broker: BrokerAddress,
        recorder: AuditRecorder,
        *,
        group: str | None = None,
        signer: Signer | None = None,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.checkpoint_every_s = checkpoint_every_s
        self.unchecked = False  # events stored since the last checkpoint
        self.checkpointed_at = time.monotonic()
        self.broker = broker
        self.recorder = recorder
        self.group = group or f"{settings.app_id}-audit"
        names = TopicNames(settings.topic_prefix)
        self.topic = names.outbox
        self.notices_topic = names.audit
        #: Notices to publish (key, AuditNotice), after what they report was committed.
        self.notices: list[tuple[bytes, Any]] = []
        self.waiting = asyncio.Event()  # set when notices were added
        self.consumer: AIOKafkaConsumer | None = None
        self.stopping = asyncio.Event()
        self.totals = Recorded()

    async def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        assert self.consumer is not None
        stored = await asyncio.to_thread(self.recorder.positions, self.group, self.topic)
        for tp in partitions:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        overrides: dict[str, Any] = dict(group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest")
        if self.broker.embedded:
            overrides.update(compat.CONSUMER_SETTINGS, fetch_max_wait_ms=100)
        producer = new_producer(self.settings, self.broker.bootstrap)
        self.consumer = consumer = new_consumer(self.settings, self.broker.bootstrap, **overrides)
        started: list[Any] = []  # what to stop, whatever fails below
        publishing: asyncio.Task[None] | None = None
        try:
            await producer.start()
            started.append(producer)
            await consumer.start()
            started.append(consumer)
            consumer.subscribe([self.topic], listener=_SeekToStored(self))
            newest = await asyncio.to_thread(stored_checkpoint, self.recorder.engine)
            if newest is not None:  # the topic's copy of it may have been lost in a crash
                self.notices.append(self._checkpoint_notice(newest))
            # Notices go from a task of their own: a broker that refuses them (or a topic not
            # created yet) never holds up recording.
            publishing = asyncio.create_task(self._publishing(producer))
            while not self.stopping.is_set():
                # Positions are sought on assignment, inside the first fetches.
                batch = await fetch(consumer, ready, timeout_ms=500, max_records=BATCH_RECORDS)
                records = [record for part in batch.values() for record in part]
                if not records:
                    continue
                # The database transaction holds events and positions; a crash before it
                # commits means the batch is read again, after it means it is not.
                result = await asyncio.to_thread(self.recorder.record, self.group, records_of(records))
                self.totals.stored += result.stored
                self.totals.already += result.already
                for problem in result.problems:
                    log.warning("audit problem: %s", problem)
                for event_id, detail in result.chain_breaks:
                    self.notices.append(self._break_notice(event_id, detail))
                with contextlib.suppress(KafkaError):  # for Kafka tooling only
                    await consumer.commit({tp: part[-1].offset + 1 for tp, part in batch.items() if part})
                self.unchecked = self.unchecked or result.stored > 0
                if time.monotonic() - self.checkpointed_at >= self.checkpoint_every_s:
                    await self.checkpoint()
                self.waiting.set()
        finally:
            try:
                if publishing is not None:
                    publishing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await publishing
                if started:
                    await self.checkpoint()  # the heads at a clean stop: nothing after them to lose
                    if producer in started:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.publish(producer), FINAL_PUBLISH_S)
            finally:
                for client in reversed(started):
                    with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                        await client.stop()

    async def _publishing(self, producer: Any) -> None:
        """Publish notices as they come; after a refusal, again a few seconds later."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.waiting.wait(), 1.0)
            self.waiting.clear()
            if not await self.publish(producer):
                await asyncio.sleep(RETRY_S)

    async def publish(self, producer: Any) -> bool:
        """Send the pending notices and wait until the broker has them (False: it refused them,
        they are kept). A broker error keeps
        them for the next try (a notice sent twice is harmless: readers take the first break
        of a stream and checkpoints by number) and does not stop the consumer: the store,
        not the topic, is the record."""
        if not self.notices:
            return True
        pending, self.notices = self.notices, []
        try:
            sent = [
                await producer.send(self.notices_topic, key=key, value=wire.encode(notice)) for key, notice in pending
            ]
            await asyncio.gather(*sent)
        except (KafkaError, TimeoutError) as exc:
            kept = (pending + self.notices)[-NOTICES_KEPT:]
            dropped = len(pending) + len(self.notices) - len(kept)
            self.notices = kept
            log.warning(
                "could not publish %d audit notice(s) to %s (%s); trying again%s",
                len(pending),
                self.notices_topic,
                exc,
                f", {dropped} oldest dropped" if dropped else "",
            )
            return False
        return True

    def _break_notice(self, event_id: str, detail: str) -> tuple[bytes, Any]:
        stream, _, seq = event_id.rpartition("/")
        notice = wire.AuditNotice(
            kind="audit.chain_broken",
            group=self.group,
            at_ms=int(time.time() * 1000),
            stream=stream,
            seq=int(seq) if seq.isdigit() else None,
            event_id=event_id,
            detail=detail,
        )
        return stream.encode(), notice

    def _checkpoint_notice(self, row: dict[str, Any]) -> tuple[bytes, Any]:
        notice = wire.AuditNotice(
            kind="audit.checkpoint",
            group=self.group,
            at_ms=row["at_ms"],
            number=row["number"],
            previous=row["previous"],
            key_id=row["key_id"],
            signature=row["signature"],
            heads=row["heads"],
        )
        return b"checkpoint", notice

    async def checkpoint(self) -> None:
        """A signed checkpoint of the heads that moved, if there is a key and anything moved."""
        if self.signer is None or not self.unchecked:
            return
        number = await asyncio.to_thread(checkpoint, self.recorder.engine, self.signer)
        self.unchecked, self.checkpointed_at = False, time.monotonic()
        if number is not None:
            log.info("audit checkpoint %d written", number)
            row = await asyncio.to_thread(stored_checkpoint, self.recorder.engine, number)
            if row is not None:
                self.notices.append(self._checkpoint_notice(row))

    def stop(self) -> None:
        self.stopping.set()


async def run_audit(
    settings: Settings,
    broker: BrokerAddress,
    recorder: AuditRecorder,
    group: str | None,
    signer: Signer | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (writing signed checkpoints if ``signer``); closes ``recorder`` at the end."""
    auditor = AuditConsumer(settings, broker, recorder, group=group, signer=signer)
    try:
        await serve(
            auditor.run,
            auditor.stop,
            lambda: (
                f"audit ready (group {auditor.group}, {auditor.topic} into {recorder.engine.url.render_as_string()})"
            ),
        )
    finally:
        recorder.close()
