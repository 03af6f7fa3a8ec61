"""Persona state: one row type per table, and typed access through a transaction.

Tables (all keyed by persona first, all in the partition of the persona's inbox):

=============  ===============================  ==========================================
table          key                              value
=============  ===============================  ==========================================
``personas``   persona                          :class:`PersonaHead`: binding, lifecycle,
                                                clock, counters, budget windows, queue
                                                index, held triggers, timers
``leases``     persona                          :class:`LeaseRecord`: the active lease
``queues``     [persona, work_key]              :class:`QueueItem`: one queued work item
``completed``  [persona, work_key]              :class:`CompletedWork` (permanent dedupe)
``requests``   [persona, "trigger"|"control",   :class:`RequestRecord`: decisions made and
               id]                              the last receipt (redelivery answer)
``values``     [persona, slot]                  the last value receipts, a ring (JSON)
``held``       [persona, n]                     a trigger waiting for its persona's binding
``timers``     "<due ms>/<kind>/<persona>"      nothing: the key is a time-ordered index
``handoffs_out`` [persona, handoff_id]          :class:`HandoffOut`: sent, not settled yet
``handoffs_in``  [persona, request_id]          :class:`HandoffIn`: received, not settled yet
=============  ===============================  ==========================================

Everything a transition reads is O(1) in the persona's history: no table is scanned.
Rows are msgspec structs (JSON on the changelog); a transaction decodes each row once.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from streams.chain import GENESIS
from streams.wire import PersonaBinding, PersonaLease, Receipt, RunCost, Slo, TriggerEnvelope

from .machines import Mode
from .store import Transaction, key

PERSONAS = "personas"
LEASES = "leases"
QUEUES = "queues"
COMPLETED = "completed"
REQUESTS = "requests"
VALUES = "values"
HELD = "held"
TIMERS = "timers"
HANDOFFS_OUT = "handoffs_out"
HANDOFFS_IN = "handoffs_in"

#: Value receipts kept per persona (the status shows these; the outbox has them all).
VALUE_RING = 20

__all__ = ["Mode"]


class Row(msgspec.Struct, kw_only=True, gc=False):
    """Base of state rows: mutable structs of plain data, encoded to JSON when committed
    (never part of a reference cycle, so not tracked by the garbage collector)."""


class TraceRef(Row, kw_only=True):
    """A trace, the span in it that later spans of the same work hang from, and the
    producer's ``tracestate`` and ``baggage`` (handed on to executors)."""

    trace_id: str
    span_id: str
    tracestate: str | None = None
    baggage: str | None = None


class QueueIndex(Row, kw_only=True):
    """Counters of the queue (its entries are rows of ``queue_rank``, see :mod:`tables.queue`).

    ``version`` changes with every change to the queue (status caches key on it)."""

    count: int = 0  # queued triggers
    runs: int = 0  # runs waiting for the lease
    held: int = 0  # entries held until the next resume, enable or drain
    waiting: int = 0  # entries waiting for the budget or in-flight spend
    #: ``[budget version, hour]`` when the last entry was put to wait: the waiting entries
    #: are ready again once either moved (or at ``waiting_due``).
    waiting_mark: list[int] | None = None
    waiting_due: int | None = None
    next_seq: int = 0
    version: int = 0
    slo: int = 0  # entries with an SLO
    #: Whether the arrival index is kept: from the first entry with an SLO until the queue
    #: is empty (without SLOs no entry can preempt, and the index would cost two rows each).
    arrival: bool = False


class Budget(Row, kw_only=True):
    """Spend in the current UTC day and hour windows, and the last exhaustion."""

    day_start: int = 0
    spent_day: float = 0.0
    tokens_day: int = 0
    hour_start: int = 0
    spent_hour: float = 0.0
    last_run_usd: float = 0.0
    last_receipt_id: str | None = None
    exhausted_reason: str | None = None
    exhausted_at_ms: int | None = None
    #: Held by external runs in flight (their attempts' reservations); counted by the gates.
    reserved_usd: float = 0.0
    reserved_tokens: int = 0
    #: Bumped whenever committed money goes down (a reservation released, spend corrected
    #: down): runs waiting for budget are examined again only then, or when a window turns.
    version: int = 0
    #: Everything ever recorded (all windows): equals the sum of the runs' ledgers' actual
    #: costs plus inline runs and manual spend.
    spent_total_usd: float = 0.0
    spent_total_tokens: int = 0


class Held(Row, kw_only=True):
    """Triggers waiting for a binding: rows ``first`` .. ``next - 1`` of ``held``."""

    first: int = 0
    next: int = 0

    @property
    def count(self) -> int:
        return self.next - self.first


class RunCounters(Row, kw_only=True):
    """What the run summary counts (:mod:`tables.summary`), kept as runs change so that
    reading it is O(1) however long the persona's history: the runs in each status (a run
    counts in ``ready`` from its registration, and every move of the run machine, through
    :func:`tables.runlog.move`, takes it from its old status to its new one), retries
    scheduled, dispatch leases that ran out, runs paused at a breakpoint now, and when the
    last dispatch went out and the last report was accepted (the ``executor.silent``
    diagnostic). A head stored before these counters existed decodes with zeros."""

    by_status: dict[str, int] = msgspec.field(default_factory=dict)
    retries: int = 0
    lease_expiries: int = 0
    at_breakpoint: int = 0
    last_dispatch_ms: int | None = None
    last_report_ms: int | None = None
    #: The first dispatch since the last accepted report (None once a report arrives).
    unanswered_since_ms: int | None = None

    def count(self, status: str, delta: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + delta

    def moved(self, before: str, after: str, *, at_breakpoint: bool = False) -> None:
        """A run moved from ``before`` to ``after`` (``at_breakpoint``: it was paused at one)."""
        if before != after:
            self.count(before, -1)
            self.count(after, +1)
            if before == "paused" and at_breakpoint:
                self.at_breakpoint -= 1

    def dispatched(self, now_ms: int) -> None:
        self.last_dispatch_ms = now_ms
        if self.unanswered_since_ms is None:
            self.unanswered_since_ms = now_ms

    def reported(self, now_ms: int) -> None:
        self.last_report_ms = now_ms
        self.unanswered_since_ms = None


class PersonaHead(Row, kw_only=True):
    name: str
    #: The last binding; kept after an unbind so runs in flight can still finish.
    binding: PersonaBinding | None = None
    #: False until bound, and after a tombstone on persona.bindings.
    bound: bool = False
    #: Offset (in persona.bindings) of the last binding record applied: a binding
    #: forwarded twice (ingress replayed after a crash) is applied once.
    binding_offset: int = -1
    #: Resting lifecycle state; "running" is derived from an active lease.
    mode: Mode = "idle"
    #: Event time of the last transition (never goes backwards).
    clock_ms: int = 0
    #: Last outbox sequence number of stream ``persona:<name>``, and that event's digest
    #: (the next one's ``prev_digest``; the genesis value before the first).
    seq: int = 0
    digest: str = GENESIS
    last_run_ms: int | None = None
    last_error: str | None = None
    disabled_events: int = 0
    #: Value receipts written so far (the ring slot of the next one is ``values % VALUE_RING``).
    values: int = 0
    queue: QueueIndex = msgspec.field(default_factory=QueueIndex)
    budget: Budget = msgspec.field(default_factory=Budget)
    held: Held = msgspec.field(default_factory=Held)
    #: Cron occurrences at or before this instant have been handled.
    schedule_cursor_ms: int | None = None
    #: Timer rows this persona has, kind -> due time (see :mod:`tables.timers`).
    timers: dict[str, int] = msgspec.field(default_factory=dict)
    #: The status's next_scheduled_run, kept with what it was computed from.
    next_run_ms: int | None = None
    next_run_base_ms: int | None = None
    #: External runs not finished yet (any state), oldest first.
    open_runs: list[str] = msgspec.field(default_factory=list)
    #: Children whose retry fell due, waiting to be dispatched (under their parent's lease);
    #: oldest first. (Runs that wait for the persona's lease are queue entries.)
    ready_children: list[str] = msgspec.field(default_factory=list)
    #: ``[budget version, hour]`` at which the budget gate refused the children waiting:
    #: nothing to examine again until budget frees up or the hour (so any window) turns.
    children_blocked: list[int] | None = None
    #: External runs ever started (the ``persona_runs`` index).
    runs: int = 0
    #: Dispatches of work with a breached SLO that went ahead of work queued before it.
    preemptions: int = 0
    #: Counters of the run summary (:mod:`tables.summary`).
    counters: RunCounters = msgspec.field(default_factory=RunCounters)


class LeaseRecord(Row, kw_only=True):
    lease: PersonaLease
    run_id: str
    request_id: str
    envelope: TriggerEnvelope
    external: bool
    attempt: int = 1


class Scheduling(Row, kw_only=True):
    """What decides when work runs (contract section 6), the trigger's over the binding's."""

    slo: Slo | None = None
    deadline_at_ms: int | None = None
    breakpoints: list[str] = msgspec.field(default_factory=list)


class QueueItem(Row, kw_only=True):
    work_key: str
    request_id: str
    envelope: TriggerEnvelope
    cost: RunCost | None = None
    priority: int = 0
    seq: int
    reason: str
    queued_at_ms: int
    list: Literal["r", "h", "w"] = "r"
    rank: str = ""  # its row in ``queue_rank``
    scheduling: Scheduling = msgspec.field(default_factory=Scheduling)
    #: Waiting (``list`` ``w``): not before then.
    not_before_ms: int | None = None
    #: The request's trace (its producer's span, or the fallback of its id).
    trace: TraceRef | None = None

    @property
    def slo(self) -> Slo | None:
        return self.scheduling.slo


class CompletedWork(Row, kw_only=True):
    run_id: str
    completed_at_ms: int


class RequestRecord(Row, kw_only=True):
    decisions: int = 0
    last: Receipt | None = None


class HandoffOut(Row, kw_only=True):
    """A handoff a run of this persona sent, until the target settles it."""

    handoff_id: str
    target_persona: str
    source_run_id: str
    request_id: str  # the target's request id for it
    task: str
    sent_at_ms: int


class HandoffIn(Row, kw_only=True):
    """A handoff this persona received, until its final decision goes back to the sender."""

    source_persona: str
    handoff_id: str


_HEAD = msgspec.json.Decoder(PersonaHead)
_LEASE = msgspec.json.Decoder(LeaseRecord)
_ITEM = msgspec.json.Decoder(QueueItem)
_COMPLETED = msgspec.json.Decoder(CompletedWork)
_REQUEST = msgspec.json.Decoder(RequestRecord)
_HANDOFF_OUT = msgspec.json.Decoder(HandoffOut)
_HANDOFF_IN = msgspec.json.Decoder(HandoffIn)


def decode_head(raw: bytes) -> PersonaHead:
    return _HEAD.decode(raw)


class PersonaState:
    """Typed reads and writes of one persona's tables through a transaction."""

    __slots__ = ("txn", "persona")

    def __init__(self, txn: Transaction, persona: str) -> None:
        self.txn = txn
        self.persona = persona

    def head(self) -> PersonaHead | None:
        return self.txn.load(PERSONAS, self.persona, _HEAD)

    def put_head(self, head: PersonaHead) -> None:
        self.txn.put(PERSONAS, self.persona, head)

    def lease(self) -> LeaseRecord | None:
        return self.txn.load(LEASES, self.persona, _LEASE)

    def put_lease(self, record: LeaseRecord | None) -> None:
        self.txn.put(LEASES, self.persona, record)

    def item(self, work_key: str) -> QueueItem | None:
        return self.txn.load(QUEUES, key(self.persona, work_key), _ITEM)

    def put_item(self, item: QueueItem) -> None:
        self.txn.put(QUEUES, key(self.persona, item.work_key), item)

    def drop_item(self, work_key: str) -> None:
        self.txn.delete(QUEUES, key(self.persona, work_key))

    def completed(self, work_key: str) -> CompletedWork | None:
        return self.txn.load(COMPLETED, key(self.persona, work_key), _COMPLETED)

    def put_completed(self, work_key: str, record: CompletedWork) -> None:
        self.txn.put(COMPLETED, key(self.persona, work_key), record)

    def request(self, kind: str, request_id: str) -> RequestRecord | None:
        return self.txn.load(REQUESTS, key(self.persona, kind, request_id), _REQUEST)

    def put_request(self, kind: str, request_id: str, record: RequestRecord) -> None:
        self.txn.put(REQUESTS, key(self.persona, kind, request_id), record)

    def value(self, slot: int) -> bytes | None:
        """A value receipt, as its JSON."""
        return self.txn.get(VALUES, key(self.persona, slot))

    def put_value(self, slot: int, receipt: bytes) -> None:
        self.txn.put(VALUES, key(self.persona, slot), receipt)

    def held(self, number: int) -> bytes | None:
        """A held trigger (an encoded inbox record)."""
        return self.txn.get(HELD, key(self.persona, number))

    def put_held(self, number: int, record: bytes | None) -> None:
        self.txn.put(HELD, key(self.persona, number), record)

    def handoff_out(self, handoff_id: str) -> HandoffOut | None:
        return self.txn.load(HANDOFFS_OUT, key(self.persona, handoff_id), _HANDOFF_OUT)

    def put_handoff_out(self, handoff_id: str, record: HandoffOut | None) -> None:
        self.txn.put(HANDOFFS_OUT, key(self.persona, handoff_id), record)

    def handoff_in(self, request_id: str) -> HandoffIn | None:
        return self.txn.load(HANDOFFS_IN, key(self.persona, request_id), _HANDOFF_IN)

    def put_handoff_in(self, request_id: str, record: HandoffIn | None) -> None:
        self.txn.put(HANDOFFS_IN, key(self.persona, request_id), record)
