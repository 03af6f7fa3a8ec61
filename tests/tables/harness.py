"""Drive the pure persona transition the way the agent does: record by record, in
inbox order, applying each transaction to a memory store."""

from __future__ import annotations

import itertools
from typing import Any

from streams.inbox import BindingChanged, ControlReceived, LeaseTick, RunFinished, ScheduleTick, TriggerReceived
from streams.outputs import Output
from streams.records import ControlCommand, OutboxEvent, PersonaBinding, PersonaStatus, Receipt, RunCost, TriggerRequest
from tables import persona as transition
from tables.state import PersonaState
from tables.status import project
from tables.store import MemoryStore
from tables.timefmt import parse_rfc3339_ms

T0 = parse_rfc3339_ms("2026-04-24T12:00:00Z")


def merge_captain(**budget: float | None) -> PersonaBinding:
    """The seed tests' binding (catalog 000.17)."""
    policy = {"daily_usd": 0.02, "hourly_usd": None, "run_usd": 0.02, "max_tokens": 100}
    policy.update(budget)
    return PersonaBinding.model_validate({
        "name": "merge_captain", "template_ref": "software_factory@v0", "entry_workflow": "workflows/merge.harn#run",
        "schedules": ["*/30 * * * *"], "triggers": ["github.pr_opened"], "budget": policy,
    })


def cost(cost_usd: float = 0.0, tokens: int = 0, **extra: Any) -> RunCost:
    return RunCost.model_validate({"cost_usd": cost_usd, "tokens": tokens, **extra})


class Harness:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.offsets = itertools.count()
        self.ids = itertools.count(1)
        self.outputs: list[Output] = []

    # ------------------------------------------------------------- feeding

    def feed(self, record: Any, position: int | None = None) -> list[Output]:
        txn = self.store.transaction()
        outputs = transition.apply(txn, record, next(self.offsets) if position is None else position)
        self.store.apply(txn)
        self.outputs.extend(outputs)
        return outputs

    def bind(self, binding: PersonaBinding, at_ms: int = T0) -> list[Output]:
        return self.feed(BindingChanged(at_ms=at_ms, persona=binding.name, binding=binding))

    def unbind(self, persona: str, at_ms: int = T0) -> list[Output]:
        return self.feed(BindingChanged(at_ms=at_ms, persona=persona, binding=None))

    def trigger(self, persona: str, provider: str, kind: str, metadata: dict[str, str] | None = None, *,
                cost: RunCost | None = None, at_ms: int = T0, priority: int = 0,
                request_id: str | None = None) -> Receipt:
        request = TriggerRequest(request_id=request_id or f"req-{next(self.ids)}", persona=persona, provider=provider,
                                 kind=kind, metadata=metadata or {}, cost=cost, priority=priority)
        outputs = self.feed(TriggerReceived(at_ms=at_ms, request=request))
        return self.receipts_in(outputs, request.request_id)[-1]

    def control(self, persona: str, action: str, at_ms: int = T0, cost: RunCost | None = None,
                command_id: str | None = None) -> list[Output]:
        command = ControlCommand(command_id=command_id or f"cmd-{next(self.ids)}", persona=persona, action=action,
                                 actor="test", cost=cost)
        return self.feed(ControlReceived(at_ms=at_ms, command=command))

    def finish(self, persona: str, run_id: str, lease_id: str, outcome: str = "completed", *,
               cost: RunCost | None = None, error: str | None = None, at_ms: int = T0) -> list[Output]:
        return self.feed(RunFinished(at_ms=at_ms, persona=persona, run_id=run_id, lease_id=lease_id, outcome=outcome,
                                     cost=cost, error=error, event_id=f"ev-{next(self.ids)}"))

    def tick(self, persona: str, at_ms: int) -> list[Output]:
        return self.feed(LeaseTick(at_ms=at_ms, persona=persona))

    def schedule_tick(self, persona: str, at_ms: int) -> list[Output]:
        return self.feed(ScheduleTick(at_ms=at_ms, persona=persona))

    # ------------------------------------------------------------- reading

    def status(self, persona: str, now_ms: int | None = None) -> PersonaStatus:
        state = PersonaState(self.store.transaction(), persona)
        head = state.head()
        assert head is not None
        return project(state, head, now_ms)

    @staticmethod
    def receipts_in(outputs: list[Output], request_id: str | None = None) -> list[Receipt]:
        return [o.value for o in outputs if o.role == "receipts" and isinstance(o.value, Receipt)
                and (request_id is None or o.value.request_id == request_id)]

    def receipts(self, request_id: str | None = None) -> list[Receipt]:
        return self.receipts_in(self.outputs, request_id)

    def events(self, persona: str | None = None, kind_prefix: str = "") -> list[OutboxEvent]:
        return [o.value for o in self.outputs if o.role == "outbox" and isinstance(o.value, OutboxEvent)
                and (persona is None or o.value.persona == persona) and o.value.kind.startswith(kind_prefix)]

    def kinds(self, outputs: list[Output]) -> list[str]:
        return [o.value.kind for o in outputs if o.role == "outbox"]  # type: ignore[union-attr]

    def role(self, role: str) -> list[Any]:
        return [o.value for o in self.outputs if o.role == role]
