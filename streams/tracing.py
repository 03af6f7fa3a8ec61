"""W3C trace context, pure: parse and format ``traceparent``, the fallback context of a
record that came without one, and span ids derived from what a span is about.

Every id here is a function of its input, so a transition replayed from the log gives
its records and spans the same trace and span ids.

- A ``traceparent`` is ``{version}-{trace id: 32 hex}-{parent span id: 16 hex}-{flags}``;
  version ``ff``, an all-zero id, upper-case hex or a malformed value make it invalid, and
  an invalid one counts as absent (the record gets the fallback).
- The fallback of a UUID: its 16 bytes are the trace id; the XOR of its two 64-bit halves
  is the span id (0 becomes 1).
- An id that is not a UUID stands for the UUID5 of itself in :data:`NAMESPACE`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import NamedTuple

#: UUID5 namespace of ids that are not UUIDs themselves (request and command ids).
NAMESPACE = uuid.UUID("6f1f6b3e-8a51-5d3c-9a0e-2d1c4f7a9b10")
#: Longest ``traceparent`` accepted (version 00 is 55 characters; later versions may append).
MAX_TRACEPARENT = 128
#: Longest ``tracestate`` (the W3C limit) and ``baggage`` (its recommended limit) kept.
MAX_TRACESTATE = 512
MAX_BAGGAGE = 8192

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[0-9a-zA-Z._~-]*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class SpanContext(NamedTuple):
    """Where a span sits: its trace and its own id."""

    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse(traceparent: str | None) -> SpanContext | None:
    """The context a ``traceparent`` names, or None if it is absent or invalid."""
    if traceparent is None or len(traceparent) > MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return SpanContext(trace_id, span_id, bool(int(flags, 16) & 1))


def uuid_of(id_: str) -> uuid.UUID:
    """``id_`` as a UUID: itself if it is one, else its UUID5 in :data:`NAMESPACE`."""
    return uuid.UUID(int=_uuid_int(id_))


def _uuid_int(id_: str) -> int:
    # The UUID's integer without building UUID objects (a trigger pays this once).
    if len(id_) in _UUID_LENGTHS:
        try:
            return uuid.UUID(id_).int
        except ValueError:
            pass
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + id_.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return int.from_bytes(digest, "big")


_NAMESPACE_BYTES = NAMESPACE.bytes
#: Lengths ``uuid.UUID`` may parse (hex, hyphens, braces, ``urn:uuid:``); others are not UUIDs.
_UUID_LENGTHS = frozenset({32, 36, 38, 41, 45})


def fallback(id_: str) -> SpanContext:
    """The context of a record that came without one: trace id = the 16 bytes of its id's
    UUID, span id = the XOR of the UUID's halves (0 mapped to 1)."""
    value = _uuid_int(id_)
    span = ((value >> 64) ^ (value & 0xFFFF_FFFF_FFFF_FFFF)) or 1
    return SpanContext(f"{value:032x}", f"{span:016x}")


def derived(text: str) -> SpanContext:
    """A context of its own for ``text`` (an input without an id, e.g. a timer's tick)."""
    digest = hashlib.blake2b(text.encode(), digest_size=24).digest()
    trace_id, span = digest[:16].hex(), digest[16:].hex()
    return SpanContext(
        trace_id if trace_id != _ZERO_TRACE else "0" * 31 + "1", span if span != _ZERO_SPAN else "0" * 15 + "1"
    )


def span_id(trace_id: str, *about: str) -> str:
    """A span id within ``trace_id`` for the span ``about`` names (never all zero)."""
    digest = hashlib.blake2b("\x1f".join((trace_id, *about)).encode(), digest_size=8).hexdigest()
    return digest if digest != _ZERO_SPAN else "0000000000000001"


class Span(NamedTuple):
    """A span a transition produced, as data (the worker exports it)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    attributes: dict[str, str | int]
