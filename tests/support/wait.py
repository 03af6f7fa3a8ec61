"""Waiting on conditions (never on fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s}s (last: {result!r})")
        time.sleep(interval_s)
