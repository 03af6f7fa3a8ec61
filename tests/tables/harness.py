"""Drive the pure persona transition the way the runtime does: record by record, in
inbox order, applying each transaction to a memory store. Outputs are read back the
way consumers read them: the published bytes, parsed by the contract's models (so every
assertion also checks that what the transition publishes is contract-valid)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from streams import chain, records, wire
from streams.inbox import (
    PERSONA_INPUT,
    RUN_INPUT,
    BindingChanged,
    ControlReceived,
    RunControlReceived,
    RunReportReceived,
    Tick,
    TriggerReceived,
)
from streams.outputs import Output
from tables import persona as transition
from tables.state import PersonaState
from tables.status import project
from tables.store import MemoryStore
from tables.timefmt import parse_rfc3339_ms

T0 = parse_rfc3339_ms("2026-04-24T12:00:00Z")

#: How consumers parse each output topic.
PARSERS = {
    "receipts": records.Receipt.model_validate_json,
    "outbox": records.OutboxEvent.model_validate_json,
    "status": records.PersonaStatus.model_validate_json,
    "dlq": records.DeadLetter.model_validate_json,
    "dispatch": records.RunDispatch.model_validate_json,
    "persona_inbox": PERSONA_INPUT.decode,
    "run_inbox": RUN_INPUT.decode,
}


@dataclass(frozen=True)
class Seen:
    """One output as a consumer sees it: topic role, key, parsed value, bytes."""

    role: str
    key: Any
    value: Any
    raw: bytes | None
    headers: tuple[tuple[str, str], ...] = ()
    phase: int = 0

    def value_bytes(self) -> bytes | None:
        return self.raw


def seen(outputs: Iterable[Output]) -> list[Seen]:
    result = []
    for output in outputs:
        raw = output.value_bytes()
        value = None if raw is None else PARSERS[output.role](raw)
        result.append(Seen(output.role, output.key, value, raw, output.headers, output.phase))
    return result


def binding(**fields: Any) -> Any:
    """A validated binding as the pipeline carries it (the contract model's twin)."""
    return wire.from_model(records.PersonaBinding.model_validate({"entry_workflow": "wf", **fields}))


def replace(struct: Any, **changes: Any) -> Any:
    return msgspec.structs.replace(struct, **changes)


def merge_captain(**budget: float | None) -> Any:
    """The binding of the original runtime's tests."""
    policy = {"daily_usd": 0.02, "hourly_usd": None, "run_usd": 0.02, "max_tokens": 100}
    policy.update(budget)
    return binding(
        name="merge_captain",
        template_ref="software_factory@v0",
        entry_workflow="workflows/merge.harn#run",
        schedules=["*/30 * * * *"],
        triggers=["github.pr_opened"],
        budget=policy,
    )


def external(**changes: Any) -> Any:
    return replace(merge_captain(), execution="external", **changes)


def cost(cost_usd: float = 0.0, tokens: int = 0, **extra: Any) -> Any:
    return wire.from_model(records.RunCost.model_validate({"cost_usd": cost_usd, "tokens": tokens, **extra}))


def request(
    persona: str,
    provider: str,
    kind: str,
    metadata: dict[str, str] | None = None,
    *,
    request_id: str,
    cost: Any = None,
    priority: int = 0,
) -> Any:
    return wire.TriggerRequest(
        request_id=request_id,
        persona=persona,
        provider=provider,
        kind=kind,
        metadata=metadata or {},
        cost=cost,
        priority=priority,
    )


class Harness:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.offsets = itertools.count()
        self.ids = itertools.count(1)
        self.outputs: list[Seen] = []
        #: Each outbox stream's last digest: every event published is checked to link to it.
        self.heads: dict[str, str] = {}

    # ------------------------------------------------------------- feeding

    def feed(self, record: Any, position: int | None = None) -> list[Seen]:
        txn = self.store.transaction()
        outputs = seen(transition.apply(txn, record, next(self.offsets) if position is None else position))
        self.store.apply(txn)
        self.outputs.extend(outputs)
        for output in outputs:
            if output.role == "outbox":
                event = output.value
                assert event.prev_digest == self.heads.get(event.stream, chain.GENESIS), (
                    f"{event.event_id}: broken link"
                )
                assert event.digest == chain.recompute(json.loads(output.raw)), f"{event.event_id}: digest differs"
                self.heads[event.stream] = event.digest
        return outputs

    def bind(self, bound: Any, at_ms: int = T0) -> list[Seen]:
        return self.feed(BindingChanged(at_ms=at_ms, persona=bound.name, binding=bound))

    def unbind(self, persona: str, at_ms: int = T0) -> list[Seen]:
        return self.feed(BindingChanged(at_ms=at_ms, persona=persona, binding=None))

    def trigger(
        self,
        persona: str,
        provider: str,
        kind: str,
        metadata: dict[str, str] | None = None,
        *,
        cost: Any = None,
        at_ms: int = T0,
        priority: int = 0,
        request_id: str | None = None,
        hold_ms: int = 0,
    ) -> records.Receipt | None:
        req = request(
            persona,
            provider,
            kind,
            metadata,
            request_id=request_id or f"req-{next(self.ids)}",
            cost=cost,
            priority=priority,
        )
        outputs = self.feed(TriggerReceived(at_ms=at_ms, request=req, hold_ms=hold_ms))
        found = self.receipts_in(outputs, req.request_id)
        return found[-1] if found else None

    def control(
        self, persona: str, action: str, at_ms: int = T0, cost: Any = None, command_id: str | None = None
    ) -> list[Seen]:
        command = wire.ControlCommand(
            command_id=command_id or f"cmd-{next(self.ids)}", persona=persona, action=action, actor="test", cost=cost
        )
        return self.feed(ControlReceived(at_ms=at_ms, command=command))

    def report(
        self,
        persona: str,
        run_id: str,
        lease_id: str,
        kind: str,
        *,
        at_ms: int = T0,
        event_id: str | None = None,
        **fields: Any,
    ) -> list[Seen]:
        """An executor's report, as the run directory routes it to the persona."""
        event = wire.RunEvent(
            event_id=event_id or f"ev-{next(self.ids)}", run_id=run_id, lease_id=lease_id, kind=kind, **fields
        )
        return self.feed(RunReportReceived(at_ms=at_ms, persona=persona, event=event))

    def finish(
        self,
        persona: str,
        run_id: str,
        lease_id: str,
        outcome: str = "completed",
        *,
        cost: Any = None,
        error: str | None = None,
        at_ms: int = T0,
        retryable: bool | None = None,
    ) -> list[Seen]:
        """The executor reports the run's outcome (``completed`` or ``failed``)."""
        fields: dict[str, Any] = {"cost": cost}
        if outcome == "failed":
            fields.update(error=error or "run failed", retryable=retryable)
        return self.report(persona, run_id, lease_id, outcome, at_ms=at_ms, **fields)

    def run_control(
        self,
        persona: str,
        run_id: str,
        action: str,
        *,
        at_ms: int = T0,
        command_id: str | None = None,
        content: Any = None,
        reason: str | None = None,
    ) -> list[Seen]:
        command = wire.RunControl(
            command_id=command_id or f"rc-{next(self.ids)}",
            run_id=run_id,
            action=action,
            actor="ops",
            reason=reason,
            content=content,
        )
        return self.feed(RunControlReceived(at_ms=at_ms, persona=persona, command=command))

    def tick(self, persona: str, at_ms: int) -> list[Seen]:
        return self.feed(Tick(at_ms=at_ms, persona=persona))

    # ------------------------------------------------------------- reading

    def status(self, persona: str, now_ms: int | None = None) -> records.PersonaStatus:
        state = PersonaState(self.store.transaction(), persona)
        head = state.head()
        assert head is not None
        return records.PersonaStatus.model_validate_json(wire.encode(project(state, head, now_ms)))

    @staticmethod
    def receipts_in(outputs: list[Seen], request_id: str | None = None) -> list[records.Receipt]:
        return [
            o.value
            for o in outputs
            if o.role == "receipts" and (request_id is None or o.value.request_id == request_id)
        ]

    def receipts(self, request_id: str | None = None) -> list[records.Receipt]:
        return self.receipts_in(self.outputs, request_id)

    def events(self, persona: str | None = None, kind_prefix: str = "") -> list[records.OutboxEvent]:
        """Events of persona streams (``persona:<name>``); run streams: :meth:`run_events`."""
        return [
            o.value
            for o in self.outputs
            if o.role == "outbox"
            and o.value.stream.startswith("persona:")
            and (persona is None or o.value.persona == persona)
            and o.value.kind.startswith(kind_prefix)
        ]

    def run_events(self, run_id: str, kind_prefix: str = "") -> list[records.OutboxEvent]:
        """Events of the stream ``run:<run_id>``."""
        return [
            o.value
            for o in self.outputs
            if o.role == "outbox" and o.value.stream == f"run:{run_id}" and o.value.kind.startswith(kind_prefix)
        ]

    def dispatches(self, run_id: str | None = None) -> list[records.RunDispatch]:
        return [o.value for o in self.outputs if o.role == "dispatch" and (run_id is None or o.value.run_id == run_id)]

    def kinds(self, outputs: list[Seen]) -> list[str]:
        return [o.value.kind for o in outputs if o.role == "outbox" and o.value.stream.startswith("persona:")]

    def role(self, role: str) -> list[Any]:
        return [o.value for o in self.outputs if o.role == role]
