"""One transition in progress for one persona: its state, its clock and its outputs.

A :class:`Step` only records: outbox events, receipts, messages to other topics. Each
method publishes exactly the one record it names; whatever follows from a decision (a
handoff's settlement notice, a dispatch) is an explicit output of the transition that
decides it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.outputs import Output
from streams.records import ReceiptStatus
from streams.redaction import redact
from streams.wire import DeadLetter, OutboxEvent, PersonaBinding, PersonaLease, Receipt, encode

from . import ids
from .queue import Queue
from .state import LeaseRecord, PersonaHead, PersonaState, RequestRecord
from .timers import set_timer

RequestKind = Literal["trigger", "control", "run_control"]


_KINDS: dict[str, bytes] = {}


def outbox_output(
    stream: str,
    seq: int,
    kind: str,
    persona: str,
    run_id: str | None,
    now: int,
    payload: dict[str, Any],
    cause: dict[str, Any],
) -> Output:
    """Outbox event ``seq`` of ``stream``, keyed by persona, with the contract's headers."""
    event_id = ids.event_id(stream, seq)
    event = OutboxEvent(
        event_id=event_id,
        stream=stream,
        seq=seq,
        kind=kind,
        persona=persona,
        run_id=run_id,
        occurred_at_ms=now,
        payload=payload,
        cause=cause,
    )
    kind_bytes = _KINDS.get(kind)
    if kind_bytes is None:
        kind_bytes = _KINDS[kind] = kind.encode()
    key = persona.encode()
    return Output(
        "outbox", key, encode(event), [("persona", key), ("kind", kind_bytes), ("event_id", event_id.encode())]
    )


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

    def emit(self, kind: str, payload: dict[str, Any], run_id: str | None = None) -> int:
        """Append one event to the persona's outbox stream; return its sequence number."""
        payload = self.redacted(payload)
        self.head.seq += 1
        self.outputs.append(
            outbox_output(self.stream, self.head.seq, kind, self.persona, run_id, self.now, payload, self.cause)
        )
        return self.head.seq

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
    ) -> Receipt:
        """Issue the next decision's receipt about a request and remember it."""
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
