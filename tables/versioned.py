"""Atomic multi-table commits without broker transactions.

A transition writes several tables (queue rows, lease, budget, ...) and the persona's
head. Each table has its own changelog topic, and a crash can leave any subset of those
writes durable. So the head is the commit record:

1. dependent rows are stored as entries holding ``offset``, ``new`` and ``previous``,
   where ``offset`` is the inbox offset the head will record as applied and
   ``previous`` is the committed value the transition started from;
2. once every entry is durable (producer flushed), the head is written with
   ``applied = offset``;
3. once the head is durable, rows deleted by the transition are removed physically.

Readers see an entry's ``v`` only if the head has applied its offset, else its ``p``.
A crash between 1 and 2 therefore shows exactly the state before the batch, which is
what the redelivered inbox records are replayed against (identical outputs, identical
writes). A crash after 2 shows the new state and the replayed records are skipped as
already applied. Deleting only after 3 means a lost head can never expose a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .store import Transaction

Entry = bytes


def entry(value: bytes | None, previous: bytes | None, offset: int) -> Entry:
    """``b"<offset> <len(value)> <len(previous)>\n" + value + previous`` (-1: absent)."""
    header = f"{offset} {-1 if value is None else len(value)} {-1 if previous is None else len(previous)}\n"
    return header.encode() + (value or b"") + (previous or b"")


def parse(stored: Entry) -> tuple[int, bytes | None, bytes | None]:
    """(offset, value, previous) of a stored entry."""
    header, _, body = stored.partition(b"\n")
    offset, value_len, previous_len = (int(part) for part in header.split())
    value = None if value_len < 0 else body[:value_len]
    previous = None if previous_len < 0 else body[max(value_len, 0):max(value_len, 0) + previous_len]
    return offset, value, previous


def visible(stored: Entry | None, applied: int) -> bytes | None:
    """The committed value of a stored entry, given the head's applied offset."""
    if stored is None:
        return None
    offset, value, previous = parse(stored)
    return previous if offset > applied else value


class CommittedView:
    """A :class:`tables.store.Reader` over versioned tables, for one persona's head."""

    def __init__(self, tables: Mapping[str, Mapping[str, bytes]], head_table: str, applied: int) -> None:
        self.tables = tables
        self.head_table = head_table
        self.applied = applied

    def get(self, table: str, key: str) -> bytes | None:
        stored = self.tables[table].get(key)
        if table == self.head_table:
            return stored
        return visible(stored, self.applied)


@dataclass
class CommitPlan:
    """The writes of one batch, in the three steps that must happen in order.

    Each write names the persona it belongs to, so the agent can attribute it to that
    persona's partition.
    """

    entries: list[tuple[str, str, Entry, str]] = field(default_factory=list)  # table, key, entry, persona
    heads: list[tuple[str, bytes]] = field(default_factory=list)  # persona, head
    deletions: list[tuple[str, str, str]] = field(default_factory=list)  # table, key, persona


def plan_commit(transactions: Mapping[str, Transaction], head_table: str,
                applied_of: Callable[[bytes], int]) -> CommitPlan:
    """Turn per-persona transactions (over :class:`CommittedView`) into a commit plan;
    ``applied_of`` reads the applied offset out of a head row."""
    plan = CommitPlan()
    for persona, txn in transactions.items():
        if not txn.changed:
            continue
        head = txn.get(head_table, persona)
        assert head is not None, "every state change writes the head"
        applied = applied_of(head)  # one parse of the head row per persona, not one per row
        view = txn.reader
        assert isinstance(view, CommittedView)
        for table, key, value in txn.changes():
            if table == head_table:
                continue
            plan.entries.append((table, key, entry(value, view.get(table, key), applied), persona))
            if value is None:
                plan.deletions.append((table, key, persona))
        plan.heads.append((persona, head))
    return plan
