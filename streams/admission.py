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
from typing import Any, Literal, TypeVar

import msgspec
import orjson

from . import wire
from .codec import DecodeError, check_size, decode
from .inbox import (
    BindingChanged,
    ControlReceived,
    RunCommanded,
    RunReported,
    RunReportReceived,
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
from .redaction import redact
from .tracing import MAX_BAGGAGE, MAX_TRACEPARENT, MAX_TRACESTATE

_T = TypeVar("_T")

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
    #: The record's headers (only ``traceparent``, ``tracestate`` and ``baggage`` are read).
    headers: tuple[tuple[str, bytes], ...] = ()

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


#: ``reason`` header of a dead letter whose event time lies too far ahead.
FUTURE = "timestamp_in_future"


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


def reason_of(letter: DeadLetter) -> str:
    """The ``reason`` header of an admission dead letter."""
    return FUTURE if letter.error.startswith(FUTURE) else "invalid_input"


def redacted_dead_letter(letter: DeadLetter, raw: RawRecord, keys: frozenset[str]) -> DeadLetter:
    """``letter`` for a persona whose binding redacts ``keys``: its value with every
    ``metadata`` mapping redacted, or no value at all when it cannot be read as a JSON
    object (then nothing in it can be told apart from a redacted value)."""
    if not keys:
        return letter
    try:
        value = orjson.loads(raw.value or b"")
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        shown = orjson.dumps(redact(value, keys))
        return letter.model_copy(
            update={
                "value_b64": base64.b64encode(shown[:DLQ_VALUE_LIMIT]).decode(),
                "value_truncated": len(shown) > DLQ_VALUE_LIMIT,
            }
        )
    return letter.model_copy(
        update={
            "value_b64": "",
            "value_truncated": bool(raw.value),
            "error": f"{letter.error} (value withheld: the persona redacts metadata and the value is not a JSON object)",
        }
    )


def _future(at_ms: int, now_ms: int | None, max_future_ms: int | None) -> str | None:
    """Why an event time too far ahead of the admitting clock is refused, or None."""
    if now_ms is None or max_future_ms is None or at_ms - now_ms <= max_future_ms:
        return None
    return (
        f"{FUTURE}: the event time {at_ms} is {at_ms - now_ms} ms ahead of this worker's clock ({now_ms});"
        f" at most PERSONAFLOW_MAX_FUTURE_MS={max_future_ms} ms is accepted: fix the producer's clock or the"
        " record's timestamp"
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


def _twin(raw: RawRecord, kind: type[_T]) -> _T:
    """The validated value as its fast twin (same JSON, read again without validation);
    a record without a ``trace`` takes the one its headers carry, if any."""
    twin = msgspec.json.decode(raw.value or b"", type=kind)
    if raw.headers and getattr(twin, "trace", False) is None:
        trace = header_trace(raw.headers)
        if trace is not None:
            twin = msgspec.structs.replace(twin, trace=trace)  # type: ignore[type-var]
    return twin


_TRACE_LIMITS = {"traceparent": MAX_TRACEPARENT, "tracestate": MAX_TRACESTATE, "baggage": MAX_BAGGAGE}


def header_trace(headers: tuple[tuple[str, bytes], ...]) -> Any:
    """The W3C trace context in Kafka headers (a :class:`wire.Trace`), or None without a
    ``traceparent``. A header that is not UTF-8 or is too long is ignored."""
    found: dict[str, str] = {}
    for name, value in headers:
        limit = _TRACE_LIMITS.get(name.lower())
        if limit is None or value is None or len(value) > limit:
            continue
        try:
            found[name.lower()] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
    if "traceparent" not in found:
        return None
    return wire.Trace(
        traceparent=found["traceparent"], tracestate=found.get("tracestate"), baggage=found.get("baggage")
    )


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
    """A report: straight to its persona's inbox when it names the persona (every report of
    such an executor takes that one path, so a run's reports stay in their order), else
    through the run directory, which knows the run's persona."""
    event = decode(RunEvent, raw.value)
    key = _matching_key(raw, "run id", "run_id", event.run_id)
    at_ms = event.at_ms if event.at_ms is not None else raw.time_ms
    twin = _twin(raw, wire.RunEvent)
    if event.persona is not None:
        return Forward(
            "persona_inbox",
            event.persona,
            RunReportReceived(at_ms=at_ms, source=raw.source, persona=event.persona, event=twin),  # fmt: skip
        )
    return Forward("run_inbox", key, RunReported(at_ms=at_ms, source=raw.source, event=twin))


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


def admit(
    role: str,
    raw: RawRecord,
    *,
    hold_ms: int = 0,
    now_ms: int | None = None,
    max_future_ms: int | None = None,
) -> Forward | DeadLetter:
    """Validate one record of the public input topic ``role``. A trigger carries
    ``hold_ms``: how long it waits for its persona's binding if there is none yet (the
    setting travels in the inbox record so that a replay decides the same way).

    ``now_ms`` is the admitting worker's wall clock: it is recorded in the inbox record,
    and an input whose event time is more than ``max_future_ms`` ahead of it is refused —
    forwarded marked ``refused`` (the transition answers it with a rejection, so a replay
    decides the same), or dead-lettered if it is a binding."""
    try:
        check_size(raw.key, raw.value)
        forward = _trigger(raw, hold_ms) if role == "triggers" else RULES[role](raw)
    except DecodeError as exc:
        return dead_letter(raw, str(exc))
    if now_ms is None:
        return forward
    record = forward.record
    refused = _future(record.at_ms, now_ms, max_future_ms)
    if refused is not None and role == "bindings":
        return dead_letter(raw, refused)
    return Forward(forward.inbox, forward.key, msgspec.structs.replace(record, admitted_at_ms=now_ms, refused=refused))
