"""Run state: the external runs of a persona, kept with the persona.

A persona's runs live in its own partition, so that a run's leases, budget reservations,
limits, retries and children change in the same transaction as the persona itself.

=================  =================================  ====================================
table              key                                value
=================  =================================  ====================================
``runs``           [persona, run_id]                  :class:`RunRow`: status, attempts and
                                                      their cost ledger, usage, steps,
                                                      children, counters
``run_reports``    [persona, run_id, event_id]        a report id seen (redelivered
                                                      reports are dropped, forever);
                                                      for one refused at admission,
                                                      its time
``run_events``     [persona, run_id, page]            the run stream's events (a ring,
                                                      eight to a row)
``transcript``     [persona, run_id, index % kept]    :class:`TranscriptEntry` (a ring)
``persona_runs``   [persona, n]                       the persona's ``n``-th run id
=================  =================================  ====================================
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from streams.chain import GENESIS
from streams.wire import TriggerEnvelope

from .machines import EXECUTING, RUN_TERMINAL, AttemptStatus, RunStatus
from .state import PersonaState, Row, Scheduling, TraceRef
from .store import key

RUNS = "runs"
RUN_REPORTS = "run_reports"
RUN_EVENTS = "run_events"
TRANSCRIPT = "transcript"
PERSONA_RUNS = "persona_runs"

#: Events of a run stream kept for ``GET /runs/{id}/events`` (the outbox has them all).
RUN_EVENTS_KEPT = 1000
#: Transcript entries kept per run; older ones are dropped (the projection says how many).
TRANSCRIPT_KEPT = 200
#: Step outputs kept per run (the latest).
STEP_OUTPUTS_KEPT = 20

TERMINAL = RUN_TERMINAL
__all__ = ["EXECUTING", "TERMINAL", "Attempt", "RunRow", "RunState", "TranscriptEntry", "WindowShare", "decode_run"]


class WindowShare(Row, kw_only=True):
    """What one dispatch put into the persona's current day and hour windows: a settlement
    below the usage takes back at most this much from them (spend is never negative)."""

    day_start: int = 0
    day_usd: float = 0.0
    day_tokens: int = 0
    hour_start: int = 0
    hour_usd: float = 0.0


class Attempt(Row, kw_only=True):
    """One dispatch of a run, and what it cost: a row of the run's cost ledger."""

    dispatch: int  # 1, 2, ...: every dispatch has its own lease
    attempt: int  # the attempt it counts as (a re-dispatch after an expiry keeps it)
    lease_id: str
    status: AttemptStatus = "running"
    started_at_ms: int
    ended_at_ms: int | None = None
    reserved_usd: float = 0.0
    reserved_tokens: int = 0
    usage_usd: float = 0.0  # sum of the usage reports
    usage_tokens: int = 0
    final_usd: float | None = None  # the cost reported with the outcome
    final_tokens: int | None = None
    recorded_usd: float = 0.0  # what the persona's budget holds for this attempt
    recorded_tokens: int = 0
    share: WindowShare = msgspec.field(default_factory=WindowShare)
    error: str | None = None

    @property
    def actual_usd(self) -> float:
        return self.usage_usd if self.final_usd is None else self.final_usd

    @property
    def actual_tokens(self) -> int:
        return self.usage_tokens if self.final_tokens is None else self.final_tokens

    @property
    def open(self) -> bool:
        return self.status == "running"


class RunRow(Row, kw_only=True):
    run_id: str
    persona: str
    kind: Literal["work", "child", "compensation"] = "work"
    request_id: str  # the trigger request (work); for others, what made the run
    work_key: str
    envelope: TriggerEnvelope
    entry_workflow: str
    root_run_id: str  # the work (or compensation) run at the top of this run's family
    parent_run_id: str | None = None
    spawn_mode: Literal["inline", "child"] | None = None
    background: bool = False
    inherit_inbox: bool = False
    child_key: str | None = None
    status: RunStatus = "ready"
    paused_from: RunStatus | None = None  # the state ``resume`` returns to
    #: A breakpoint paused it: ``{step, reason, since_ms}`` until it is resumed.
    active_pause: dict[str, Any] | None = None
    #: Scheduling: SLO, deadline, breakpoints still armed (one-shot), priority, and when its
    #: work was queued (the SLO's clock); ``queue_rank``: its entry while it waits for the lease.
    scheduling: Scheduling = msgspec.field(default_factory=Scheduling)
    priority: int = 0
    queued_at_ms: int = 0
    queue_rank: str | None = None
    queue_list: Literal["r", "w"] = "r"
    #: Why the budget gate refused the run's next dispatch (it waits until budget frees up or
    #: the window turns); None when it is not waiting for budget.
    blocked: str | None = None
    attempt: int = 1
    dispatches: int = 0
    expiries: int = 0  # dispatches whose lease ran out (they do not spend attempts)
    lease_id: str = ""  # the current dispatch's
    deadline_ms: int = 0  # when the current dispatch's lease expires unless renewed
    created_at_ms: int
    not_before_ms: int | None = None  # retry_wait: when the next attempt may start
    seq: int = 0  # last event of stream run:<run_id>
    digest: str = GENESIS  # that event's (the next one's ``prev_digest``)
    steps: int = 0
    current_step_id: str | None = None
    step_outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    checkpoint: Any = None  # the executor's latest ``checkpoint`` payload (to resume from)
    warned: list[str] = msgspec.field(default_factory=list)  # limits warned about
    children: list[str] = msgspec.field(default_factory=list)
    compensation_run_id: str | None = None
    terminal_event_id: str | None = None  # the first terminal event: it answers later ones
    budget_receipt_id: str | None = None  # the run's own last ``persona.budget.recorded``
    error: str | None = None
    transcript: int = 0  # transcript entries written so far
    ledger: list[Attempt] = msgspec.field(default_factory=list)
    #: The first :data:`REPORTS_INLINE` report ids seen, by digest (a row of
    #: ``run_reports`` each for later ones): most runs write no row for their dedupe.
    reports: dict[str, str] = msgspec.field(default_factory=dict)
    #: The stream's first :data:`EVENTS_INLINE` events (``run_events`` rows hold later
    #: ones): a short run writes no row for its stream.
    events: list[msgspec.Raw] = msgspec.field(default_factory=list)
    #: The run's trace: its request's (a child's or compensation's: its parent's), with the
    #: span of the transition that created it.
    trace: TraceRef | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def current(self) -> Attempt | None:
        return self.ledger[-1] if self.ledger else None

    def attempt_of(self, lease_id: str) -> Attempt | None:
        for attempt in self.ledger:
            if attempt.lease_id == lease_id:
                return attempt
        return None

    @property
    def usage_usd(self) -> float:
        return sum(a.actual_usd for a in self.ledger)

    @property
    def usage_tokens(self) -> int:
        return sum(a.actual_tokens for a in self.ledger)


class TranscriptEntry(Row, kw_only=True):
    index: int  # 0-based, gap-free per run
    kind: Literal["guidance", "evidence", "a2a", "message"]
    actor: str
    content: Any = None
    at_ms: int
    event_id: str  # the run-stream event that recorded it


_RUN = msgspec.json.Decoder(RunRow)
#: Report ids a run row keeps itself before ``run_reports`` rows take over.
REPORTS_INLINE = 32


def report_digest(event_id: str) -> str:
    """A report id as the run row keeps it (64 bits of its SHA-256: ids never collide in a run)."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:16]


_ENTRY = msgspec.json.Decoder(TranscriptEntry)
#: Events of a run stream per ``run_events`` row.
EVENTS_PAGE = 8
#: Events of a run stream its run row keeps itself (the first ones).
EVENTS_INLINE = 8
_PAGE = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_run(raw: bytes) -> RunRow:
    return _RUN.decode(raw)


class RunState:
    """Typed access to one persona's run tables through a transaction."""

    __slots__ = ("state", "txn", "persona")

    def __init__(self, state: PersonaState) -> None:
        self.state = state
        self.txn = state.txn
        self.persona = state.persona

    def run(self, run_id: str) -> RunRow | None:
        return self.txn.load(RUNS, key(self.persona, run_id), _RUN)

    def put_run(self, run: RunRow) -> None:
        self.txn.put(RUNS, key(self.persona, run.run_id), run)

    def seen_report(self, run: RunRow, event_id: str, at_ms: int) -> bool:
        """Whether this report was handled before: accepted (with any time), or refused at
        admission with this very time (the same record again; a resend with its clock fixed
        is not seen). The run row keeps its first report ids, ``run_reports`` the others."""
        inline = run.reports.get(report_digest(event_id))
        if inline is not None:
            return inline == "" or inline == str(at_ms)
        if len(run.reports) < REPORTS_INLINE:
            return False  # the row holds every id so far
        seen = self.txn.get(RUN_REPORTS, key(self.persona, run.run_id, event_id))
        return seen is not None and (seen == b"" or seen == str(at_ms).encode())

    def remember_report(self, run: RunRow, event_id: str, refused_at_ms: int | None = None) -> None:
        """A report handled: ``refused_at_ms`` for one refused at admission (its time is kept).
        In the run row while it has room (the caller stores the row), else in a row of its own."""
        marker = "" if refused_at_ms is None else str(refused_at_ms)
        digest = report_digest(event_id)
        if digest in run.reports or len(run.reports) < REPORTS_INLINE:
            run.reports[digest] = marker
            return
        self.txn.put(RUN_REPORTS, key(self.persona, run.run_id, event_id), marker.encode())

    def put_event(self, run: RunRow, seq: int, event: bytes) -> None:
        """Keep event ``seq`` of the run's stream: the first :data:`EVENTS_INLINE` in the run
        row (the caller stores it), the others in a ring of :data:`RUN_EVENTS_KEPT`, stored
        :data:`EVENTS_PAGE` to a row (a pass that writes several events writes one row)."""
        if seq <= EVENTS_INLINE:
            del run.events[seq - 1 :]  # gap-free from 1: seq is always the next one
            run.events.append(msgspec.Raw(event))
            return
        slot = seq % RUN_EVENTS_KEPT
        page_key = key(self.persona, run.run_id, slot // EVENTS_PAGE)
        page = self.txn.load(RUN_EVENTS, page_key, _PAGE)
        page = {} if page is None else page
        page[str(slot)] = msgspec.Raw(event)
        self.txn.put(RUN_EVENTS, page_key, page)

    def event(self, run: RunRow, seq: int) -> bytes | None:
        if seq <= EVENTS_INLINE:
            return bytes(run.events[seq - 1]) if 0 < seq <= len(run.events) else None
        slot = seq % RUN_EVENTS_KEPT
        page = self.txn.load(RUN_EVENTS, key(self.persona, run.run_id, slot // EVENTS_PAGE), _PAGE)
        raw = None if page is None else page.get(str(slot))
        return None if raw is None else bytes(raw)

    def put_entry(self, run_id: str, entry: TranscriptEntry) -> None:
        self.txn.put(TRANSCRIPT, key(self.persona, run_id, entry.index % TRANSCRIPT_KEPT), entry)

    def entry(self, run_id: str, index: int) -> TranscriptEntry | None:
        return self.txn.load(TRANSCRIPT, key(self.persona, run_id, index % TRANSCRIPT_KEPT), _ENTRY)

    def put_index(self, number: int, run_id: str) -> None:
        self.txn.put(PERSONA_RUNS, key(self.persona, number), run_id.encode())

    def indexed(self, number: int) -> str | None:
        raw = self.txn.get(PERSONA_RUNS, key(self.persona, number))
        return None if raw is None else raw.decode()
