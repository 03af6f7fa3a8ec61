"""Persona state: one record type per table, and typed access through a transaction.

Tables (all keyed by persona first, all co-partitioned with ``persona.inbox``):

=============  ===============================  ==========================================
table          key                              value
=============  ===============================  ==========================================
``personas``   persona                          :class:`PersonaHead`: binding, lifecycle,
                                                clock, counters, queue index, and the last
                                                applied inbox offset (the commit record)
``leases``     persona                          :class:`LeaseRecord`: the active lease
``budgets``    persona                          :class:`BudgetRecord`: current windows
``queues``     [persona, work_key]              :class:`QueueItem`: one queued work item
``completed``  [persona, work_key]              :class:`CompletedWork` (permanent dedupe)
``requests``   [persona, "trigger"|"control",   :class:`RequestRecord`: decisions made and
               id]                              the last receipt (redelivery answer)
``values``     [persona, slot]                  last 100 value receipts, a ring
=============  ===============================  ==========================================

Everything a transition reads is O(1) in the persona's history: no table is scanned.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from streams.records import PersonaBinding, PersonaLease, PersonaValueReceipt, Receipt, RunCost, TriggerEnvelope

from .store import Transaction, key

PERSONAS = "personas"
LEASES = "leases"
BUDGETS = "budgets"
QUEUES = "queues"
COMPLETED = "completed"
REQUESTS = "requests"
VALUES = "values"
#: Tables written alongside the head; the head is written last and commits them.
DEPENDENT_TABLES = (LEASES, BUDGETS, QUEUES, COMPLETED, REQUESTS, VALUES)

#: Value receipts kept per persona (status shows the last this many).
VALUE_RING = 100

Mode = Literal["idle", "paused", "disabled", "draining", "failed"]


class State(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class QueueLevel(State):
    """One doubly linked FIFO: the items of one list at one priority."""

    head: str | None = None
    tail: str | None = None
    count: int = 0


class QueueIndex(State):
    """Where the queue's lists start. Lists are keyed by priority (as text: JSON keys).

    ``ready`` items are taken up whenever the lease is free and the persona may work.
    ``held`` items wait for the next resume/enable/drain: a held item is eligible once
    ``epoch`` (bumped by those commands) is greater than the epoch it was held in.
    """

    ready: dict[str, QueueLevel] = Field(default_factory=dict)
    held: dict[str, QueueLevel] = Field(default_factory=dict)
    count: int = 0
    next_seq: int = 0
    epoch: int = 0


class PersonaHead(State):
    name: str
    #: The last binding; kept after an unbind so runs in flight can still finish.
    binding: PersonaBinding | None = None
    #: False after a tombstone on persona.bindings: new requests are rejected.
    bound: bool = False
    #: Resting lifecycle state; "running" is derived from an active lease.
    mode: Mode = "idle"
    #: Event time of the last transition (never goes backwards).
    clock_ms: int = 0
    #: Inbox offset of the last applied record (-1: none); replays at or below are skipped.
    applied: int = -1
    #: Last outbox sequence number of stream ``persona:<name>``.
    seq: int = 0
    last_run_ms: int | None = None
    last_error: str | None = None
    disabled_events: int = 0
    #: Value receipts written so far (the ring slot of the next one is ``values % VALUE_RING``).
    values: int = 0
    queue: QueueIndex = Field(default_factory=QueueIndex)
    #: Cron occurrences at or before this instant have been handled.
    schedule_cursor_ms: int | None = None


class LeaseRecord(State):
    lease: PersonaLease
    run_id: str
    request_id: str
    envelope: TriggerEnvelope
    external: bool
    attempt: int = 1


class BudgetRecord(State):
    day_start: int = 0
    spent_day: float = 0.0
    tokens_day: int = 0
    hour_start: int = 0
    spent_hour: float = 0.0
    last_run_usd: float = 0.0
    last_receipt_id: str | None = None
    exhausted_reason: str | None = None
    exhausted_at_ms: int | None = None


class QueueItem(State):
    work_key: str
    request_id: str
    envelope: TriggerEnvelope
    cost: RunCost | None = None
    priority: int = 0
    seq: int
    reason: str
    queued_at_ms: int
    list: Literal["ready", "held"] = "ready"
    epoch: int = 0
    prev: str | None = None
    next: str | None = None


class CompletedWork(State):
    run_id: str
    completed_at_ms: int


class RequestRecord(State):
    decisions: int = 0
    last: Receipt | None = None


M = TypeVar("M", bound=BaseModel)


def load(model: type[M], raw: bytes | None) -> M | None:
    """A stored row as its model (rows are JSON bytes)."""
    return None if raw is None else model.model_validate_json(raw)


def dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def applied_of(head: bytes) -> int:
    """The inbox offset a stored head row records as applied."""
    return PersonaHead.model_validate_json(head).applied


class PersonaState:
    """Typed reads and writes of one persona's tables through a transaction."""

    def __init__(self, txn: Transaction, persona: str) -> None:
        self.txn = txn
        self.persona = persona

    def head(self) -> PersonaHead | None:
        return load(PersonaHead, self.txn.get(PERSONAS, self.persona))

    def put_head(self, head: PersonaHead) -> None:
        self.txn.put(PERSONAS, self.persona, dump(head))

    def lease(self) -> LeaseRecord | None:
        return load(LeaseRecord, self.txn.get(LEASES, self.persona))

    def put_lease(self, record: LeaseRecord | None) -> None:
        self.txn.put(LEASES, self.persona, None if record is None else dump(record))

    def budget(self) -> BudgetRecord:
        return load(BudgetRecord, self.txn.get(BUDGETS, self.persona)) or BudgetRecord()

    def put_budget(self, record: BudgetRecord) -> None:
        self.txn.put(BUDGETS, self.persona, dump(record))

    def item(self, work_key: str) -> QueueItem | None:
        return load(QueueItem, self.txn.get(QUEUES, key(self.persona, work_key)))

    def put_item(self, item: QueueItem) -> None:
        self.txn.put(QUEUES, key(self.persona, item.work_key), dump(item))

    def drop_item(self, work_key: str) -> None:
        self.txn.delete(QUEUES, key(self.persona, work_key))

    def completed(self, work_key: str) -> CompletedWork | None:
        return load(CompletedWork, self.txn.get(COMPLETED, key(self.persona, work_key)))

    def put_completed(self, work_key: str, record: CompletedWork) -> None:
        self.txn.put(COMPLETED, key(self.persona, work_key), dump(record))

    def request(self, kind: str, request_id: str) -> RequestRecord | None:
        return load(RequestRecord, self.txn.get(REQUESTS, key(self.persona, kind, request_id)))

    def put_request(self, kind: str, request_id: str, record: RequestRecord) -> None:
        self.txn.put(REQUESTS, key(self.persona, kind, request_id), dump(record))

    def value(self, slot: int) -> PersonaValueReceipt | None:
        return load(PersonaValueReceipt, self.txn.get(VALUES, key(self.persona, slot)))

    def put_value(self, slot: int, receipt: PersonaValueReceipt) -> None:
        self.txn.put(VALUES, key(self.persona, slot), dump(receipt))
