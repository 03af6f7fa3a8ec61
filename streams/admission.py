"""Ingress admission: decide, for one raw public record, where it goes.

A pure function of the record's bytes and position: either a :class:`Forward` into
an inbox (validated, keyed, stamped with event time and source position) or a
:class:`~streams.records.DeadLetter` whose error says what to fix. The contract model
validates; once it has, the same bytes are read into the record's fast twin
(:mod:`streams.wire`) that travels through the inbox.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from . import wire
from .codec import DecodeError, check_size, decode
from .inbox import (
    BindingChanged,
    ControlReceived,
    RunCommanded,
    RunReported,
    Source,
    TriggerReceived,
)
from .records import (
    ControlCommand,
    DeadLetter,
    PersonaBinding,
    RunControl,
    RunEvent,
    TriggerRequest,
    is_persona_name,
)

#: Dead letters keep at most this much of the original value (the rest is counted).
DLQ_VALUE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class RawRecord:
    """One consumed record, as bytes, with its position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def source(self) -> Source:
        return Source(self.topic, self.partition, self.offset)

    @property
    def time_ms(self) -> int:
        return max(0, self.timestamp_ms)


@dataclass(frozen=True)
class Forward:
    inbox: Literal["persona_inbox", "run_inbox"]
    key: str
    record: Any  # an inbox record (streams.inbox)


def dead_letter(raw: RawRecord, error: str) -> DeadLetter:
    value = raw.value or b""
    return DeadLetter(
        source_topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=None if raw.key is None else raw.key.decode("utf-8", errors="replace"),
        value_b64=base64.b64encode(value[:DLQ_VALUE_LIMIT]).decode(),
        error=error,
        at_ms=raw.time_ms,
        value_truncated=len(value) > DLQ_VALUE_LIMIT,
    )


def _key_text(raw: RawRecord, what: str) -> str:
    if raw.key is None:
        raise DecodeError(f"record key is missing; key each record by its {what}")
    try:
        return raw.key.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"record key is not UTF-8 text; key each record by its {what}") from None


def _matching_key(raw: RawRecord, what: str, field: str, expected: str) -> str:
    key = _key_text(raw, what)
    if key != expected:
        raise DecodeError(
            f"record key {key!r} does not match {field} {expected!r}; key each record by its {what}"
            " so everything about it stays in order"
        )
    return key


def _twin(raw: RawRecord, kind: type) -> object:
    """The validated value as its fast twin (same JSON, read again without validation)."""
    return msgspec.json.decode(raw.value or b"", type=kind)


def _binding(raw: RawRecord) -> Forward:
    key = _key_text(raw, "persona name")
    if raw.value is None:  # tombstone: unbind
        if not is_persona_name(key):
            raise DecodeError(f"tombstone key {key!r} is not a valid persona name")
        return Forward(
            "persona_inbox", key, BindingChanged(at_ms=raw.time_ms, source=raw.source, persona=key, binding=None)
        )
    binding = decode(PersonaBinding, raw.value)
    _matching_key(raw, "persona name", "binding name", binding.name)
    return Forward(
        "persona_inbox",
        key,
        BindingChanged(at_ms=raw.time_ms, source=raw.source, persona=key, binding=_twin(raw, wire.PersonaBinding)),
    )


def _trigger(raw: RawRecord, hold_ms: int = 0) -> Forward:
    request = decode(TriggerRequest, raw.value)
    key = _matching_key(raw, "persona name", "persona", request.persona)
    at_ms = request.received_at_ms if request.received_at_ms is not None else raw.time_ms
    return Forward(
        "persona_inbox",
        key,
        TriggerReceived(at_ms=at_ms, source=raw.source, request=_twin(raw, wire.TriggerRequest), hold_ms=hold_ms),
    )


def _control(raw: RawRecord) -> Forward:
    command = decode(ControlCommand, raw.value)
    key = _matching_key(raw, "persona name", "persona", command.persona)
    at_ms = command.at_ms if command.at_ms is not None else raw.time_ms
    return Forward(
        "persona_inbox", key, ControlReceived(at_ms=at_ms, source=raw.source, command=_twin(raw, wire.ControlCommand))
    )


def _run_event(raw: RawRecord) -> Forward:
    event = decode(RunEvent, raw.value)
    key = _matching_key(raw, "run id", "run_id", event.run_id)
    at_ms = event.at_ms if event.at_ms is not None else raw.time_ms
    return Forward("run_inbox", key, RunReported(at_ms=at_ms, source=raw.source, event=_twin(raw, wire.RunEvent)))


def _run_control(raw: RawRecord) -> Forward:
    command = decode(RunControl, raw.value)
    key = _matching_key(raw, "run id", "run_id", command.run_id)
    at_ms = command.at_ms if command.at_ms is not None else raw.time_ms
    return Forward("run_inbox", key, RunCommanded(at_ms=at_ms, source=raw.source, command=_twin(raw, wire.RunControl)))


RULES: dict[str, Callable[[RawRecord], Forward]] = {
    "bindings": _binding,
    "triggers": _trigger,
    "control": _control,
    "run_events": _run_event,
    "run_control": _run_control,
}


def admit(role: str, raw: RawRecord, *, hold_ms: int = 0) -> Forward | DeadLetter:
    """Validate one record of the public input topic ``role``. A trigger carries
    ``hold_ms``: how long it waits for its persona's binding if there is none yet (the
    setting travels in the inbox record so that a replay decides the same way)."""
    try:
        check_size(raw.key, raw.value)
        if role == "triggers":
            return _trigger(raw, hold_ms)
        return RULES[role](raw)
    except DecodeError as exc:
        return dead_letter(raw, str(exc))
