"""The fast twins are the contract records: same fields and defaults, contract-valid JSON."""

from __future__ import annotations

import msgspec
import pytest
from pydantic import BaseModel

from streams import records, wire

PAIRS = [
    (model, wire.twin(model))
    for model in (
        records.RunCost,
        records.BudgetPolicy,
        records.RetryPolicy,
        records.RunLimits,
        records.PersonaBinding,
        records.TriggerRequest,
        records.ControlCommand,
        records.RunEvent,
        records.RunControl,
        records.TriggerEnvelope,
        records.PersonaLease,
        records.Receipt,
        records.RunDispatch,
        records.OutboxEvent,
        records.PersonaBudgetStatus,
        records.PersonaQueuedWork,
        records.PersonaValueReceipt,
        records.DeadLetter,
    )
]


@pytest.mark.parametrize(("model", "twin"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_each_twin_has_its_contract_models_fields_in_order_with_the_same_defaults(model: type[BaseModel], twin):
    assert twin.__struct_fields__ == tuple(model.model_fields)
    defaults = {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if not info.is_required()
    }
    for name, default in defaults.items():
        value = getattr(twin(**{n: _example(model, n) for n, i in model.model_fields.items() if i.is_required()}), name)
        expected = default.model_dump() if isinstance(default, BaseModel) else default
        assert msgspec.to_builtins(value) == expected, name


@pytest.mark.parametrize(("model", "twin"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_each_twin_encodes_to_json_its_contract_model_accepts(model: type[BaseModel], twin):
    required = {name: _example(model, name) for name, info in model.model_fields.items() if info.is_required()}
    encoded = wire.encode(twin(**required))
    assert model.model_validate_json(encoded).model_dump(mode="json") == msgspec.json.decode(encoded)


def test_a_validated_record_read_into_its_twin_re_encodes_to_the_same_json():
    binding = records.PersonaBinding.model_validate(
        {
            "name": "a",
            "entry_workflow": "w",
            "schedules": ["0 9 * * *"],
            "budget": {"daily_usd": 1.5},
            "run_limits": {"max_steps": 3},
        }
    )
    assert msgspec.json.decode(wire.encode(wire.from_model(binding))) == binding.model_dump(mode="json")


EXAMPLES = {
    "cost_usd": 0.5,
    "tokens": 3,
    "name": "a",
    "entry_workflow": "w",
    "request_id": "r",
    "persona": "p",
    "provider": "github",
    "kind": "push",
    "command_id": "c",
    "action": "pause",
    "actor": "ops",
    "event_id": "e",
    "run_id": "r1",
    "lease_id": "l1",
    "subject_key": "k",
    "received_at_ms": 1,
    "id": "l1",
    "holder": "h",
    "work_key": "k",
    "acquired_at_ms": 1,
    "expires_at_ms": 2,
    "status": "completed",
    "receipt_id": "x",
    "at_ms": 1,
    "attempt": 1,
    "deadline_ms": 5,
    "stream": "persona:p",
    "seq": 1,
    "occurred_at_ms": 1,
    "payload": {},
    "cause": {},
    "queued_at": "2026-01-01T00:00:00Z",
    "reason": "paused",
    "occurred_at": "2026-01-01T00:00:00Z",
    "paid_cost_usd": 0.0,
    "avoided_cost_usd": 0.0,
    "deterministic_steps": 0,
    "llm_steps": 0,
    "source_topic": "t",
    "partition": 0,
    "offset": 0,
    "value_b64": "",
    "error": "bad",
}


def _example(model: type[BaseModel], name: str):
    if name == "envelope":
        return wire.TriggerEnvelope(provider="p", kind="k", subject_key="s", received_at_ms=1)
    if name == "limits":
        return wire.RunLimits()
    if name == "kind" and model is records.PersonaValueReceipt:
        return "run_started"
    if name == "kind" and model is records.RunEvent:
        return "heartbeat"
    return EXAMPLES[name]
