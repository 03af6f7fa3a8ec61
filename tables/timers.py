"""The timer index: when something of a persona falls due, in time order.

A transition that creates something with a deadline (a lease, the next cron occurrence,
a trigger held for a binding, ...) writes a row to ``timers`` whose key starts with the
due time, zero-padded so that key order is time order, and remembers it in the head
(``timers``: kind -> due) so it can move or remove it. The wall-clock timer then finds
what is due by reading keys up to "now" in order, O(due) however many personas there
are, and ticks each such persona; the tick's transition decides, at the tick's time,
what is really due, and moves or removes the rows it handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from .state import TIMERS, PersonaHead, PersonaState

WIDTH = 15  # digits of a due time in a key: ms up to the year 33658


def timer_key(due_ms: int, kind: str, persona: str) -> str:
    return f"{max(0, due_ms):0{WIDTH}d}/{kind}/{persona}"


def parse_key(text: str) -> tuple[int, str, str]:
    due, kind, persona = text.split("/", 2)
    return int(due), kind, persona


def set_timer(state: PersonaState, head: PersonaHead, kind: str, due_ms: int | None) -> None:
    """Make ``kind``'s timer of this persona due at ``due_ms`` (None: no timer)."""
    current = head.timers.get(kind)
    if current == due_ms:
        return
    if current is not None:
        state.txn.delete(TIMERS, timer_key(current, kind, head.name))
        del head.timers[kind]
    if due_ms is not None:
        state.txn.put(TIMERS, timer_key(due_ms, kind, head.name), b"")
        head.timers[kind] = due_ms


class OrderedRows(Protocol):
    def items(self, table: str, start: str = "", stop: str | None = None) -> Iterator[tuple[str, bytes]]: ...


def due_personas(rows: OrderedRows, now_ms: int) -> Iterable[tuple[str, str]]:
    """(timer key, persona) of every timer due at ``now_ms``, in time order."""
    for text, _ in rows.items(TIMERS, "", timer_key(now_ms + 1, "", "")):
        yield text, parse_key(text)[2]
