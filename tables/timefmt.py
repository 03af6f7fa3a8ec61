"""Time helpers: RFC3339 formatting and UTC hour/day windows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EPOCH_TEXT = "1970-01-01T00:00:00Z"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Formatted:
    """The last second formatted, and its text: events come in bursts."""

    seconds = -1
    text = ""


_last = _Formatted()


def format_ms(ms: int) -> str:
    """RFC3339 in UTC; no fraction when the milliseconds are zero (``2026-04-24T12:30:00Z``)."""
    try:
        seconds, millis = divmod(int(ms), 1000)
        if seconds < 0 or seconds > 253402300799:
            return EPOCH_TEXT
        if _last.seconds == seconds:
            text = _last.text
        else:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            _last.seconds, _last.text = seconds, text
    except (OverflowError, ValueError, OSError):
        return EPOCH_TEXT
    if millis:
        text += f".{millis:03d}".rstrip("0")
    return text + "Z"


def parse_rfc3339_ms(value: str) -> int:
    """Milliseconds since the epoch; ``ValueError("invalid RFC3339 timestamp ...")`` otherwise."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("missing UTC offset")
    except ValueError as exc:
        raise ValueError(f"invalid RFC3339 timestamp '{value}': {exc}") from None
    return (parsed - EPOCH) // timedelta(milliseconds=1)


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
