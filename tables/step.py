"""One transition in progress for one persona: its state, its clock and its outputs.

A :class:`Step` only records: outbox events, receipts, messages to other topics. Each
method publishes exactly the one record it names; whatever follows from a decision (a
handoff's settlement notice, a dispatch) is an explicit output of the transition that
decides it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import orjson

from streams import chain, tracing
from streams.outputs import Output
from streams.records import ReceiptStatus
from streams.redaction import redact
from streams.tracing import Span
from streams.wire import DeadLetter, OutboxEvent, PersonaBinding, PersonaLease, Receipt, Trace, encode

from . import ids
from .queue import Queue
from .runstate import RunState
from .state import LeaseRecord, PersonaHead, PersonaState, RequestRecord, TraceRef
from .timers import set_timer

RequestKind = Literal["trigger", "control", "run_control"]


_KINDS: dict[str, bytes] = {}

#: An outbox event without its digest fields: the canonical body is this struct's sorted
#: encoding, so the event is encoded once (the digests are appended to those bytes).
_EventBody = msgspec.defstruct(
    "OutboxEventBody",
    [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(OutboxEvent)
        if f.name not in chain.DIGEST_FIELDS
    ],
    kw_only=True,
    gc=False,
)


def outbox_output(
    stream: str,
    seq: int,
    kind: str,
    persona: str,
    run_id: str | None,
    now: int,
    payload: dict[str, Any],
    cause: dict[str, Any],
    trace: Trace | None = None,
    prev_digest: str = chain.GENESIS,
) -> tuple[Output, str]:
    """Outbox event ``seq`` of ``stream``, keyed by persona, with the contract's headers,
    chained to ``prev_digest`` (the stream's last event's digest); and its digest."""
    event_id = ids.event_id(stream, seq)
    body = _EventBody(
        event_id=event_id,
        stream=stream,
        seq=seq,
        kind=kind,
        persona=persona,
        run_id=run_id,
        occurred_at_ms=now,
        payload=payload,
        cause=cause,
        trace=trace,
    )
    kind_bytes = _KINDS.get(kind)
    if kind_bytes is None:
        kind_bytes = _KINDS[kind] = kind.encode()
    key = persona.encode()
    value, digest = chain.seal(prev_digest, chain.encode_canonical(body))
    output = Output("outbox", key, value, [("persona", key), ("kind", kind_bytes), ("event_id", event_id.encode())])
    return output, digest


def dead_letter_output(
    record: Any, key: str, error: str, at_ms: int, inbox: str, reason: str, redact_keys: frozenset[str] = frozenset()
) -> Output:
    """A dead letter about an inbox record, pointing at the public record it came from
    (its preview redacted by the persona's ``redact_metadata_keys``)."""
    source = record.source
    letter = DeadLetter(
        source_topic=source.topic if source else inbox,
        partition=source.partition if source else -1,
        offset=source.offset if source else -1,
        key=key,
        value_b64=base64.b64encode(encode(redact(record, redact_keys))).decode(),
        error=error,
        at_ms=at_ms,
    )
    return Output("dlq", key, encode(letter), (("error", error[:200]), ("reason", reason)))


def request_origin(request_id: str, given: Trace | None) -> tuple[TraceRef, bool]:
    """The trace of a request: its producer's context if valid, else the fallback of its
    id; and whether it is the fallback (then the request's first span starts the trace)."""
    context = tracing.parse(given.traceparent) if given is not None else None
    if context is None or given is None:
        fallback = tracing.fallback(request_id)
        return TraceRef(trace_id=fallback.trace_id, span_id=fallback.span_id), True
    ref = TraceRef(
        trace_id=context.trace_id, span_id=context.span_id, tracestate=given.tracestate, baggage=given.baggage
    )
    return ref, False


def request_trace(request_id: str, given: Trace | None) -> TraceRef:
    """The trace of a request (:func:`request_origin` without the flag)."""
    return request_origin(request_id, given)[0]


def receipt_output(receipt: Receipt) -> Output:
    key = receipt.persona.encode()
    return Output(
        "receipts",
        key,
        encode(receipt),
        [("persona", key), ("status", receipt.status.encode()), ("receipt_id", receipt.receipt_id.encode())],
    )


@dataclass
class Step:
    state: PersonaState
    head: PersonaHead
    #: The transition's time: the persona's clock, moved to the input's event time once the
    #: input is accepted (:meth:`advance`); a rejected or fenced input never moves it.
    now: int
    cause: dict[str, Any]
    outputs: list[Output] = field(default_factory=list)
    #: Trigger receipts issued by this step (their handoff settlements follow from them).
    issued: list[Receipt] = field(default_factory=list)
    #: The input's trace (a request's, or the executor's span a report comes from); None:
    #: the input names none (a tick, a binding), its outputs get the fallback of its cause.
    origin: TraceRef | None = None
    #: ``origin`` is a fallback: this transition's span in it is the trace's root (with
    #: the fallback's span id).
    rooted: bool = False
    #: The request id of the input's own trigger (``origin`` is its trace).
    origin_request: str | None = None
    #: The work item being decided (its outputs carry its request's trace).
    work: TraceRef | None = None
    work_request: str | None = None
    #: The inline run being executed (it has no run row: its outputs carry the work's trace).
    inline_run: str | None = None
    #: Spans of this transition, if the caller collects them (one per trace it touched).
    spans: list[Span] | None = None
    _mine: dict[str, tuple[Span, Trace]] = field(default_factory=dict)

    def advance(self, at_ms: int) -> None:
        """The input is accepted: the persona's clock moves to its event time (never back)."""
        if at_ms > self.now:
            self.now = at_ms

    @property
    def persona(self) -> str:
        return self.head.name

    @property
    def binding(self) -> PersonaBinding:
        assert self.head.binding is not None, "transition needs a bound persona"
        return self.head.binding

    @property
    def stream(self) -> str:
        return f"persona:{self.persona}"

    @property
    def queue(self) -> Queue:
        return Queue(self.state, self.head.queue)

    # ------------------------------------------------------------------ outbox

    def next_seq(self) -> int:
        return self.head.seq + 1

    @property
    def redact_keys(self) -> frozenset[str]:
        """Metadata keys whose values this persona's published records must not show."""
        binding = self.head.binding
        return (
            frozenset(binding.redact_metadata_keys)
            if binding is not None and binding.redact_metadata_keys
            else frozenset()
        )

    def redacted(self, value: Any) -> Any:
        keys = self.redact_keys
        return redact(value, keys) if keys else value

    def emit(self, kind: str, payload: dict[str, Any], run_id: str | None = None, trace: TraceRef | None = None) -> int:
        """Append one event to the persona's outbox stream; return its sequence number. It
        carries the trace of ``trace``, else of run ``run_id``, else the work's or input's."""
        payload = self.redacted(payload)
        self.head.seq += 1
        event_trace = self.trace(trace, run_id, kind)
        output, self.head.digest = outbox_output(
            self.stream,
            self.head.seq,
            kind,
            self.persona,
            run_id,
            self.now,
            payload,
            self.cause,
            event_trace,
            self.head.digest,
        )
        self.outputs.append(output)
        return self.head.seq

    # ------------------------------------------------------------------ traces

    def trace(self, ref: TraceRef | None = None, run_id: str | None = None, decision: str | None = None) -> Trace:
        """The ``trace`` of an output: this transition's span in the trace of ``ref``, else
        of run ``run_id``, else of the work item being decided, else of the input."""
        if ref is None and run_id is not None and run_id != self.inline_run:
            ref = self._run_trace(run_id)
        ref = ref or self.trace_ref()
        mine = self._mine.get(ref.trace_id)
        if mine is None:
            mine = self._open(ref, run_id)
        if decision is not None:
            mine[0].attributes["personaflow.decision"] = decision
        return mine[1]

    def trace_ref(self) -> TraceRef:
        """The trace outputs belong to unless they are about a run: the work being decided,
        else the input's."""
        return self.work or self.origin or self._fallback()

    def _receipt_trace(
        self, kind: RequestKind, request_id: str, run_id: str | None, status: str, ref: TraceRef | None
    ) -> Trace:
        """A receipt carries its request's trace: a trigger's is the work's being decided, or
        its run's (the run took it over); run control's and control's, their input's."""
        if ref is None and kind == "trigger":
            if self.work is not None and self.work_request == request_id:
                ref = self.work
            elif run_id is not None:
                ref = self._run_trace(run_id, request_id)
        elif ref is None:
            ref = self.origin
        return self.trace(ref, decision=status)

    @contextmanager
    def working(self, request_id: str, trace: TraceRef | None) -> Iterator[None]:
        """While deciding about one request's work, its outputs carry the request's trace."""
        previous = self.work, self.work_request
        self.work, self.work_request = trace, request_id
        try:
            yield
        finally:
            self.work, self.work_request = previous

    def span_in(self, ref: TraceRef, run_id: str | None = None) -> str:
        """This transition's span id in the trace of ``ref``."""
        mine = self._mine.get(ref.trace_id)
        return (mine or self._open(ref, run_id))[0].span_id

    def child_span(self, ref: TraceRef, name: str, about: tuple[str, ...], attributes: dict[str, Any]) -> Trace:
        """A span under this transition's (a dispatch): its context, with the trace's state."""
        parent = self.span_in(ref)
        span_id = tracing.span_id(ref.trace_id, name, *about)
        if self.spans is not None:
            self.spans.append(
                Span(ref.trace_id, span_id, parent, name, {"personaflow.persona": self.persona, **attributes})
            )
        return Trace(traceparent=f"00-{ref.trace_id}-{span_id}-01", tracestate=ref.tracestate, baggage=ref.baggage)

    def _open(self, ref: TraceRef, run_id: str | None) -> tuple[Span, Trace]:
        # The span's id derives from the input (its cause), so a replay gives the same ids.
        origin = self.origin
        if origin is not None and origin.trace_id == ref.trace_id:
            if self.rooted:  # the input's own fallback context: this span starts the trace
                span_id, parent = origin.span_id, None
            else:
                span_id, parent = self._span_id(ref), origin.span_id
        else:
            span_id, parent = self._span_id(ref), ref.span_id
        attributes: dict[str, Any] = {"personaflow.persona": self.persona, "personaflow.kind": self.cause["type"]}
        if run_id is not None:
            attributes["personaflow.run_id"] = run_id
        span = Span(ref.trace_id, span_id, parent, f"persona.{self.cause['type']}", attributes)
        if self.spans is not None:
            self.spans.append(span)
        mine = self._mine[ref.trace_id] = (span, Trace(traceparent=f"00-{ref.trace_id}-{span_id}-01"))
        return mine

    def _run_trace(self, run_id: str, request_id: str | None = None) -> TraceRef | None:
        """Run ``run_id``'s trace (with ``request_id``: only if the run is that request's).
        The transaction decodes a row once, so asking again costs a lookup."""
        run = RunState(self.state).run(run_id)
        if run is None or (request_id is not None and run.request_id != request_id):
            return None
        return run.trace

    def _span_id(self, ref: TraceRef) -> str:
        return tracing.span_id(ref.trace_id, "transition", self.persona, self._cause_key())

    def _cause_key(self) -> str:
        # The cause can change within a step (held triggers applied one by one): no cache.
        return orjson.dumps(self.cause, option=orjson.OPT_SORT_KEYS).decode()

    def _fallback(self) -> TraceRef:
        """An input without a trace of its own (a tick, a binding): a trace derived from its cause."""
        context = tracing.derived(f"{self.persona}:{self._cause_key()}")
        self.origin, self.rooted = TraceRef(trace_id=context.trace_id, span_id=context.span_id), True
        return self.origin

    # ---------------------------------------------------------------- receipts

    def decisions(self, kind: RequestKind, request_id: str) -> int:
        record = self.state.request(kind, request_id)
        return 0 if record is None else record.decisions

    def receipt(
        self,
        kind: RequestKind,
        request_id: str,
        status: ReceiptStatus,
        *,
        work_key: str | None = None,
        run_id: str | None = None,
        lease: PersonaLease | None = None,
        queued: bool = False,
        error: str | None = None,
        budget_receipt_id: str | None = None,
        attempt: int | None = None,
        not_before_ms: int | None = None,
        event_id: str | None = None,
        trace: TraceRef | None = None,
    ) -> Receipt:
        """Issue the next decision's receipt about a request and remember it (with the
        trace of ``trace``, else of its run, else of the work being decided or the input)."""
        record = self.state.request(kind, request_id)
        decisions = 0 if record is None else record.decisions
        receipt = Receipt(
            status=status,
            persona=self.persona,
            run_id=run_id,
            work_key=work_key,
            lease=lease,
            queued=queued,
            error=error,
            budget_receipt_id=budget_receipt_id,
            request_id=request_id,
            receipt_id=ids.receipt_id(self.persona, f"{kind}:{request_id}", decisions),
            at_ms=self.now,
            attempt=attempt,
            not_before_ms=not_before_ms,
            event_id=event_id,
            trace=self._receipt_trace(kind, request_id, run_id, status, trace),
        )
        self.state.put_request(kind, request_id, RequestRecord(decisions=decisions + 1, last=receipt))
        self.outputs.append(receipt_output(receipt))
        if kind == "trigger":
            self.issued.append(receipt)
        return receipt

    def remember(self, kind: RequestKind, request_id: str) -> None:
        """Record that a request was applied, without a receipt (redelivery is then a no-op)."""
        if self.state.request(kind, request_id) is None:
            self.state.put_request(kind, request_id, RequestRecord())

    # ------------------------------------------------------------ other outputs

    def send(self, role: str, key: str, value: Any, phase: int = 0) -> None:
        self.outputs.append(Output(role, key, encode(value), (("persona", self.persona.encode()),), phase))

    def dead_letter(self, record: object, key: str, error: str, reason: str) -> None:
        self.outputs.append(dead_letter_output(record, key, error, self.now, "persona.inbox", reason, self.redact_keys))

    # ------------------------------------------------------------- leases, time

    def active_lease(self) -> LeaseRecord | None:
        record = self.state.lease()
        if record is not None and record.lease.expires_at_ms > self.now:
            return record
        return None

    def set_timer(self, kind: str, due_ms: int | None) -> None:
        set_timer(self.state, self.head, kind, due_ms)
