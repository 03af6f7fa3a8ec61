"""The persona's work lease: one holder at a time, renewed by the holder's reports.

An inline run takes and gives back its lease within one transition. An external run's
lease is a row (:class:`~tables.state.LeaseRecord`) with a timer at its expiry; reports
of the holder and of its non-background descendants renew it (docs/behaviour.md, section 5).
"""

from __future__ import annotations

import msgspec

from streams.wire import PersonaLease

from .machines import move_persona
from .runstate import RunRow
from .state import LeaseRecord
from .step import Step

#: The ``holder`` of every lease personaflow grants.
LEASE_HOLDER = "persona-runtime"


def grant(step: Step, lease_id: str, work_key: str) -> PersonaLease:
    """A lease from now for ``lease_ttl_ms``: written as ``persona.lease.acquired``; the
    persona's mode leaves ``failed``."""
    lease = PersonaLease(
        id=lease_id,
        holder=LEASE_HOLDER,
        work_key=work_key,
        acquired_at_ms=step.now,
        expires_at_ms=step.now + step.binding.lease_ttl_ms,
    )
    step.emit("persona.lease.acquired", msgspec.to_builtins(lease))
    move_persona(step.head, "run_started")
    return lease


def hold(step: Step, lease: PersonaLease, run: RunRow) -> None:
    """``run`` holds ``lease`` until it is released, dropped or expires (its timer)."""
    record = LeaseRecord(
        lease=lease,
        run_id=run.run_id,
        request_id=run.request_id,
        envelope=run.envelope,
        external=True,
        attempt=run.attempt,
    )
    step.state.put_lease(record)
    arm(step, lease.expires_at_ms)


def current(step: Step) -> LeaseRecord | None:
    """The lease row, valid or not (expiry is decided by ticks and the persona's own inputs)."""
    return step.state.lease()


def holds(step: Step, run: RunRow) -> bool:
    """Whether ``run`` holds the persona's lease."""
    record = step.state.lease()
    return record is not None and record.run_id == run.run_id


def renews(step: Step, run: RunRow) -> bool:
    """Reports of the lease holder and of its non-background descendants keep the lease."""
    record = step.state.lease()
    return record is not None and record.run_id == run.root_run_id and not run.background


def renew(step: Step, run: RunRow) -> None:
    """A report of ``run``'s current dispatch: its deadline, and the persona's lease if the
    run keeps it, move to ``now + lease_ttl_ms`` (never back)."""
    ttl = step.binding.lease_ttl_ms
    run.deadline_ms = max(run.deadline_ms, step.now + ttl)
    if not renews(step, run):
        return
    record = step.state.lease()
    assert record is not None
    expires = max(record.lease.expires_at_ms, step.now + ttl)
    if expires != record.lease.expires_at_ms:
        lease = msgspec.structs.replace(record.lease, expires_at_ms=expires)
        step.state.put_lease(msgspec.structs.replace(record, lease=lease))
        # The timer stays where it is: it fires before this expiry and is moved then.


def released(step: Step, lease: PersonaLease) -> None:
    step.emit("persona.lease.released", {"id": lease.id, "work_key": lease.work_key, "released_at_ms": step.now})


def drop(step: Step) -> None:
    """No run holds the lease any more (its timer stays: when it fires it finds no lease)."""
    step.state.put_lease(None)


def arm(step: Step, expires_at_ms: int) -> None:
    """The lease timer fires by ``expires_at_ms``. It is moved only earlier: a renewal
    leaves it, a drop leaves it, and when it fires it is moved to the lease's expiry (or
    removed). A burst of short runs writes no timer row at all, a renewal none either."""
    due = step.head.timers.get("lease")
    if due is None or due > expires_at_ms:
        step.set_timer("lease", expires_at_ms)


def rearm(step: Step) -> None:
    """The lease timer fired: it moves to the expiry of the lease there is now, if any."""
    record = step.state.lease()
    step.set_timer("lease", record.lease.expires_at_ms if record is not None else None)


def expired(step: Step, record: LeaseRecord) -> None:
    lease = record.lease
    step.emit("persona.lease.expired", {"id": lease.id, "work_key": lease.work_key, "expired_at_ms": step.now})
    step.head.last_error = (
        f"lease {lease.id} expired: run {record.run_id} did not report for {step.binding.lease_ttl_ms} ms"
    )
