"""One transition in progress for one persona: its state, its clock and its outputs."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from streams.inbox import Source
from streams.outputs import Output
from streams.records import DeadLetter, OutboxEvent, PersonaBinding, PersonaLease, Receipt, ReceiptStatus

from . import ids
from .queue import Queue
from .state import LeaseRecord, PersonaHead, PersonaState, RequestRecord

RequestKind = str  # "trigger" | "control"


def receipt_output(receipt: Receipt) -> Output:
    return Output("receipts", receipt.persona, receipt,
                  (("persona", receipt.persona), ("status", receipt.status), ("receipt_id", receipt.receipt_id)))


@dataclass
class Step:
    state: PersonaState
    head: PersonaHead
    now: int
    cause: dict[str, Any]
    outputs: list[Output] = field(default_factory=list)

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

    def emit(self, kind: str, payload: dict[str, Any], run_id: str | None = None) -> int:
        """Append one event to the persona's outbox stream; return its sequence number."""
        self.head.seq += 1
        seq = self.head.seq
        event = OutboxEvent(
            event_id=ids.event_id(self.stream, seq), stream=self.stream, seq=seq, kind=kind,
            persona=self.persona, run_id=run_id, occurred_at_ms=self.now, payload=payload, cause=self.cause,
        )
        self.outputs.append(Output("outbox", self.persona, event,
                                   (("persona", self.persona), ("kind", kind), ("event_id", event.event_id))))
        return seq

    # ---------------------------------------------------------------- receipts

    def decisions(self, kind: RequestKind, request_id: str) -> int:
        record = self.state.request(kind, request_id)
        return 0 if record is None else record.decisions

    def receipt(self, kind: RequestKind, request_id: str, status: ReceiptStatus, *,
                work_key: str | None = None, run_id: str | None = None, lease: PersonaLease | None = None,
                queued: bool = False, error: str | None = None, budget_receipt_id: str | None = None) -> Receipt:
        """Issue the next decision's receipt about a request and remember it."""
        record = self.state.request(kind, request_id) or RequestRecord()
        receipt = Receipt(
            status=status, persona=self.persona, run_id=run_id, work_key=work_key, lease=lease,
            queued=queued, error=error, budget_receipt_id=budget_receipt_id, request_id=request_id,
            receipt_id=ids.receipt_id(self.persona, f"{kind}:{request_id}", record.decisions), at_ms=self.now,
        )
        self.state.put_request(kind, request_id, RequestRecord(decisions=record.decisions + 1, last=receipt))
        self.outputs.append(receipt_output(receipt))
        return receipt

    def remember(self, kind: RequestKind, request_id: str) -> None:
        """Record that a request was applied, without a receipt (redelivery is then a no-op)."""
        if self.state.request(kind, request_id) is None:
            self.state.put_request(kind, request_id, RequestRecord())

    # ------------------------------------------------------------ other outputs

    def send(self, role: str, key: str, value: BaseModel, phase: int = 0) -> None:
        self.outputs.append(Output(role, key, value, (("persona", self.persona),), phase))

    def dead_letter(self, source: Source | None, key: str, value: BaseModel, error: str) -> None:
        self.outputs.append(Output("dlq", key, DeadLetter(
            source_topic=source.topic if source else "persona.inbox",
            partition=source.partition if source else -1,
            offset=source.offset if source else -1,
            key=key, value_b64=base64.b64encode(value.model_dump_json().encode()).decode(),
            error=error, at_ms=self.now,
        )))

    # ------------------------------------------------------------------ leases

    def active_lease(self) -> LeaseRecord | None:
        record = self.state.lease()
        if record is not None and record.lease.expires_at_ms > self.now:
            return record
        return None
