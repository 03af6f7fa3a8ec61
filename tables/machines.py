"""The state machines of the run core, declared as data.

Every change of a run's ``status``, a dispatch's (ledger row's) ``status`` and a persona's
``mode`` goes through :meth:`Machine.move` with one of the events below: the tables say
which (state, event) pairs lead where; any other pair is a rejection whose reason names
the state and the event, and the state stays as it was. Nothing else in ``tables/``
assigns those fields (``tests/tables/test_machines.py`` checks the source for it).

:func:`describe` prints the tables; ``docs/behaviour.md`` holds that print, and a test
fails when the two differ (as Kafka Streams prints ``Topology.describe()``). Update the
document with ``personaflow machines --write docs/behaviour.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar, cast, get_args

S = TypeVar("S", bound=str)
E = TypeVar("E", bound=str)

#: As a target: back to the state recorded when the subject entered its current state
#: (``resume`` returns a run to the state it was paused from).
PREVIOUS = "(previous)"


class Rejected(Exception):
    """A (state, event) pair the machine does not declare; ``reason`` says why, for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Machine(Generic[S, E]):
    """A finite state machine: ``edges[(state, event)]`` is the next state (or
    :data:`PREVIOUS`); ``refusals[event]`` is the reason template for an undeclared pair
    (``{state}`` and ``{event}`` are filled in)."""

    name: str
    subject: str
    states: tuple[S, ...]
    events: tuple[E, ...]
    edges: Mapping[tuple[S, E], str]
    refusals: Mapping[E, str]
    terminal: frozenset[S] = frozenset()
    #: Why each event happens, for the printed table.
    meanings: Mapping[E, str] | None = None

    def __post_init__(self) -> None:
        for (state, event), target in self.edges.items():
            assert state in self.states and event in self.events, (self.name, state, event)
            assert target == PREVIOUS or target in self.states, (self.name, state, event, target)
            assert state not in self.terminal, f"{self.name}: a terminal state has no way out ({state}, {event})"

    def target(self, state: S, event: E) -> str | None:
        """The declared next state (or :data:`PREVIOUS`), None if the pair is undeclared."""
        return self.edges.get((state, event))

    def reason(self, state: S, event: E) -> str:
        template = self.refusals.get(event, "a {state} {subject} cannot take '{event}'")
        return template.format(state=state.replace("_", " "), event=event, subject=self.subject)

    def next(self, state: S, event: E, previous: S | None = None) -> S:
        """The state after ``event``; raises :class:`Rejected` for an undeclared pair."""
        target = self.edges.get((state, event))
        if target is None:
            raise Rejected(self.reason(state, event))
        if target == PREVIOUS:
            assert previous is not None, f"{self.name}: ({state}, {event}) returns to a state nobody recorded"
            return previous
        return cast(S, target)


# --------------------------------------------------------------------------- runs

#: In the order the printed table shows them.
RunStatus = Literal[
    "ready", "dispatched", "running", "waiting", "paused", "retry_wait", "completed", "failed", "cancelled", "expired"
]
RunEvent = Literal[
    "dispatch",
    "started",
    "report",
    "wait",
    "input",
    "pause",
    "resume",
    "command",
    "complete",
    "fail",
    "retry",
    "requeue",
    "expire",
    "due",
    "refuse",
    "cancel",
]

RUN_STATES: tuple[RunStatus, ...] = get_args(RunStatus)
RUN_TERMINAL: frozenset[RunStatus] = frozenset({"completed", "failed", "cancelled", "expired"})
#: In flight: an executor has (or is about to have) the run.
EXECUTING: frozenset[RunStatus] = frozenset({"dispatched", "running", "paused", "waiting"})
_LIVE: tuple[RunStatus, ...] = ("dispatched", "running", "waiting")  # executing and not paused
_OPEN: tuple[RunStatus, ...] = ("ready", "dispatched", "running", "waiting", "paused", "retry_wait")


def _edges(pairs: list[tuple[tuple[S, ...], E, str]]) -> dict[tuple[S, E], str]:
    """Edges from rows of (states, event, target); target ``(same)``: each state to itself."""
    edges: dict[tuple[S, E], str] = {}
    for states, event, target in pairs:
        for state in states:
            edges[(state, event)] = state if target == "(same)" else target
    return edges


RUNS: Machine[RunStatus, RunEvent] = Machine(
    name="run",
    subject="run",
    states=RUN_STATES,
    events=get_args(RunEvent),
    edges=_edges(
        [
            (("ready",), "dispatch", "dispatched"),
            (("dispatched",), "started", "running"),
            (("dispatched",), "report", "running"),
            (("running", "waiting", "paused"), "report", "(same)"),
            (("dispatched", "running"), "wait", "waiting"),
            (("waiting",), "input", "running"),
            (_LIVE, "pause", "paused"),
            (("paused",), "resume", PREVIOUS),
            (tuple(EXECUTING), "command", "(same)"),
            (tuple(EXECUTING), "complete", "completed"),
            (tuple(EXECUTING), "fail", "failed"),
            (tuple(EXECUTING), "retry", "retry_wait"),
            (_LIVE, "requeue", "retry_wait"),
            (_LIVE, "expire", "expired"),
            (("retry_wait",), "due", "ready"),
            (("ready",), "refuse", "failed"),
            (_OPEN, "cancel", "cancelled"),
        ]
    ),
    refusals={
        "dispatch": "a {state} run cannot be dispatched (only a ready one)",
        "started": "a {state} run cannot start again",
        "report": "a {state} run has no executor to report",
        "wait": "a {state} run cannot wait",
        "input": "input received by a {state} run (only a waiting one takes input)",
        "pause": "a {state} run cannot be paused",
        "resume": "a {state} run cannot be resumed (only a paused one)",
        "command": "a {state} run has no executor to take the command",
        "complete": "a {state} run cannot complete",
        "fail": "a {state} run cannot fail",
        "retry": "a {state} run cannot be retried",
        "requeue": "a {state} run has no lease to expire",
        "expire": "a {state} run has no lease to expire",
        "due": "a {state} run is not waiting for a retry",
        "refuse": "a {state} run is not waiting for a dispatch",
        "cancel": "a {state} run cannot be cancelled",
    },
    terminal=RUN_TERMINAL,
    meanings={
        "dispatch": "a `RunDispatch` goes out under a new lease (the budget gate passed)",
        "started": "the executor reports `started`",
        "report": "any other report of the current dispatch (heartbeat, step, usage, checkpoint, ...)",
        "wait": "the executor reports `waiting`",
        "input": "the executor reports `input_received`",
        "pause": "run control `pause` (or a breakpoint)",
        "resume": "run control `resume`",
        "command": "run control `checkpoint` or `compact` (needs an executor)",
        "complete": "the executor reports `completed`",
        "fail": "`failed` with no retry left (or not retryable), or a run limit exceeded",
        "retry": "`failed`, retryable, attempts left: the next attempt waits for its backoff",
        "requeue": "the dispatch's lease expired; the run waits for the backoff (no attempt spent)",
        "expire": "the dispatch's lease expired for the last time (or `on_lease_expiry: expire`)",
        "due": "the backoff is over",
        "refuse": "the budget gate refuses the dispatch for good (the reservation alone exceeds a limit)",
        "cancel": "run control `cancel`, a parent that stopped, or the parent gone",
    },
)


# ------------------------------------------------------------------ dispatches

AttemptStatus = Literal["running", "completed", "failed", "cancelled", "expired", "retry_scheduled"]
AttemptEvent = Literal["complete", "fail", "cancel", "expire", "retry"]

ATTEMPTS: Machine[AttemptStatus, AttemptEvent] = Machine(
    name="dispatch",
    subject="dispatch",
    states=get_args(AttemptStatus),
    events=get_args(AttemptEvent),
    edges={
        ("running", "complete"): "completed",
        ("running", "fail"): "failed",
        ("running", "cancel"): "cancelled",
        ("running", "expire"): "expired",
        ("running", "retry"): "retry_scheduled",
    },
    refusals={},
    terminal=frozenset({"completed", "failed", "cancelled", "expired", "retry_scheduled"}),
    meanings={
        "complete": "the run completed",
        "fail": "the run failed for good, or a limit was exceeded",
        "cancel": "the run was cancelled",
        "expire": "the dispatch's lease expired",
        "retry": "the attempt failed and another is scheduled",
    },
)


# -------------------------------------------------------------------- personas

Mode = Literal["idle", "paused", "draining", "failed", "disabled"]
PersonaEvent = Literal["pause", "resume", "disable", "enable", "drain", "drained", "run_failed", "run_started"]

PERSONAS: Machine[Mode, PersonaEvent] = Machine(
    name="persona",
    subject="persona",
    states=get_args(Mode),
    events=get_args(PersonaEvent),
    edges=_edges(
        [
            (("idle", "paused", "draining", "failed"), "pause", "paused"),
            (("idle", "paused", "draining", "failed"), "resume", "idle"),
            (("idle", "paused", "draining", "failed", "disabled"), "disable", "disabled"),
            (("disabled",), "enable", "idle"),
            (("idle", "paused", "draining", "failed"), "drain", "draining"),
            (("draining",), "drained", "paused"),
            (("idle", "failed"), "run_failed", "failed"),
            (("paused", "draining", "disabled"), "run_failed", "(same)"),
            (("failed",), "run_started", "idle"),
            (("idle", "paused", "draining", "disabled"), "run_started", "(same)"),
        ]
    ),
    refusals={
        "pause": "persona is disabled; send `enable` to take it back into service",
        "resume": "persona is disabled; send `enable` to take it back into service",
        "enable": "persona is not disabled (it is {state}); nothing to enable",
        "drain": "persona is disabled; send `enable` before draining it",
        "drained": "persona is {state}, not draining",
    },
    meanings={
        "pause": "control `pause`: new work queues",
        "resume": "control `resume`: the queue drains",
        "disable": "control `disable`: new work is dead-lettered",
        "enable": "control `enable`: the queue drains",
        "drain": "control `drain`: queued work runs one by one, new work queues",
        "drained": "a draining persona has nothing left to run",
        "run_failed": "a run holding the lease failed or expired",
        "run_started": "a run takes the lease",
    },
)


# ----------------------------------------------------------------------- moving


class RunLike(Protocol):
    status: RunStatus
    paused_from: RunStatus | None


def move_run(run: RunLike, event: RunEvent) -> RunStatus:
    """Apply ``event`` to a run (raises :class:`Rejected`); returns the new status."""
    before = run.status
    after = RUNS.next(before, event, run.paused_from)
    if after == "paused" and before != "paused":
        run.paused_from = before
    elif before == "paused" and after != "paused":
        run.paused_from = None
    run.status = after
    return after


def run_refusal(run: RunLike, event: RunEvent) -> str | None:
    """Why ``event`` cannot happen to the run now, or None if it can."""
    return None if RUNS.target(run.status, event) is not None else RUNS.reason(run.status, event)


class AttemptLike(Protocol):
    status: AttemptStatus


def close_attempt(attempt: AttemptLike, event: AttemptEvent) -> bool:
    """End a dispatch; False (and nothing changes) if it had ended already."""
    if ATTEMPTS.target(attempt.status, event) is None:
        return False
    attempt.status = ATTEMPTS.next(attempt.status, event)
    return True


class HeadLike(Protocol):
    mode: Mode


def move_persona(head: HeadLike, event: PersonaEvent) -> Mode:
    """Apply ``event`` to a persona's mode (raises :class:`Rejected`); returns the new mode."""
    head.mode = PERSONAS.next(head.mode, event)
    return head.mode


# --------------------------------------------------------------------- printing


def _table(machine: Machine[S, E]) -> str:
    meanings = machine.meanings or {}
    head = f"**The {machine.name} machine.** States: {', '.join(f'`{s}`' for s in machine.states)}"
    if machine.terminal:
        head += f"; terminal: {', '.join(f'`{s}`' for s in machine.states if s in machine.terminal)}"
    lines = [head + ".", "", "| event | when | from → to |", "|---|---|---|"]
    for event in machine.events:
        moves = [
            f"`{state}` → {'the state it was paused from' if target == PREVIOUS else f'`{target}`'}"
            for state in machine.states
            if (target := machine.edges.get((state, event))) is not None
        ]
        lines.append(f"| `{event}` | {meanings.get(event, '')} | {'; '.join(moves)} |")
    lines += ["", "Any other (state, event) pair is rejected and changes nothing" + _refusals(machine)]
    return "\n".join(lines)


def _refusals(machine: Machine[S, E]) -> str:
    reasons = [f"- `{event}`: {machine.refusals[event]}" for event in machine.events if event in machine.refusals]
    return ", with the reason:\n\n" + "\n".join(reasons) if reasons else " (a dispatch closes once)."


def describe() -> str:
    """The three machines as Markdown (the text ``docs/behaviour.md`` holds)."""
    return "\n\n".join((_table(RUNS), _table(ATTEMPTS), _table(PERSONAS))) + "\n"


BEGIN = "<!-- machines: generated by `personaflow machines`; do not edit by hand -->"
END = "<!-- machines: end -->"


def splice(document: str) -> str:
    """``document`` with the text between :data:`BEGIN` and :data:`END` replaced by :func:`describe`."""
    start, stop = document.index(BEGIN) + len(BEGIN), document.index(END)
    return document[:start] + "\n" + describe() + document[stop:]
