"""Contract records validate strictly and carry the exact field names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.records import (
    ControlCommand,
    PersonaBinding,
    PersonaStatus,
    Receipt,
    RunCost,
    RunEvent,
    TriggerRequest,
)


def trigger(**fields):
    base = {"request_id": "r1", "persona": "merge_captain", "provider": "github", "kind": "pull_request"}
    return TriggerRequest.model_validate({**base, **fields})


@pytest.mark.parametrize("name", ["a", "merge_captain", "Team.Bot-1", "x" * 128])
def test_persona_names_of_1_to_128_allowed_characters_are_accepted(name):
    assert trigger(persona=name).persona == name


@pytest.mark.parametrize("name", ["", "x" * 129, "has space", "slash/no", "ümlaut", "a:b"])
def test_persona_names_outside_the_pattern_are_rejected(name):
    with pytest.raises(ValidationError):
        trigger(persona=name)


def test_metadata_is_limited_to_64_entries_of_bounded_keys_and_values():
    trigger(metadata={f"k{i}": "v" for i in range(64)})
    with pytest.raises(ValidationError, match="at most 64 entries"):
        trigger(metadata={f"k{i}": "v" for i in range(65)})
    with pytest.raises(ValidationError, match="at most 128 allowed"):
        trigger(metadata={"k" * 129: "v"})
    with pytest.raises(ValidationError, match="at most 4096 allowed"):
        trigger(metadata={"k": "v" * 4097})


def test_strict_types_reject_strings_for_numbers_and_unknown_fields():
    with pytest.raises(ValidationError):
        TriggerRequest.model_validate_json(b'{"request_id":"r","persona":"p","provider":"x","kind":"k","priority":"5"}')
    with pytest.raises(ValidationError, match="Extra inputs"):
        trigger(persona_name="oops")


def test_costs_must_be_finite_and_not_negative():
    with pytest.raises(ValidationError):
        TriggerRequest.model_validate_json(
            b'{"request_id":"r","persona":"p","provider":"x","kind":"k","cost":{"cost_usd":NaN,"tokens":1}}'
        )
    with pytest.raises(ValidationError):
        trigger(cost={"cost_usd": -0.01, "tokens": 1})
    assert trigger(cost={"cost_usd": 0.01, "tokens": 3}).cost.tokens == 3


def test_binding_defaults_follow_the_contract():
    binding = PersonaBinding.model_validate({"name": "merge_captain", "entry_workflow": "workflows/merge.harn#run"})
    assert binding.execution == "inline"
    assert binding.lease_ttl_ms == 300000
    assert binding.retry.model_dump() == {
        "max_attempts": 3,
        "backoff_ms": 1000,
        "factor": 2.0,
        "max_backoff_ms": 300000,
    }
    assert binding.run_limits.warn_ratio == 0.8
    assert binding.schedule_catchup == "latest"
    assert binding.budget.model_dump() == {"daily_usd": None, "hourly_usd": None, "run_usd": None, "max_tokens": None}


def test_binding_cron_expressions_are_validated_when_bound():
    PersonaBinding.model_validate(
        {"name": "p", "entry_workflow": "w", "schedules": ["*/30 * * * *", "0 9 * * MON-FRI"]}
    )
    with pytest.raises(ValidationError, match=r"schedules\.1|not a valid 5-field cron"):
        PersonaBinding.model_validate({"name": "p", "entry_workflow": "w", "schedules": ["*/30 * * * *", "every day"]})
    with pytest.raises(ValidationError, match="5-field"):
        PersonaBinding.model_validate({"name": "p", "entry_workflow": "w", "schedules": ["0 */30 * * * *"]})


def test_record_spend_needs_a_cost_and_other_actions_refuse_one():
    ControlCommand.model_validate(
        {
            "command_id": "c",
            "persona": "p",
            "action": "record_spend",
            "actor": "ops",
            "cost": {"cost_usd": 0.1, "tokens": 0},
        }
    )
    with pytest.raises(ValidationError, match="needs a 'cost'"):
        ControlCommand.model_validate({"command_id": "c", "persona": "p", "action": "record_spend", "actor": "ops"})
    with pytest.raises(ValidationError, match="only valid with action 'record_spend'"):
        ControlCommand.model_validate(
            {
                "command_id": "c",
                "persona": "p",
                "action": "pause",
                "actor": "ops",
                "cost": {"cost_usd": 0.1, "tokens": 0},
            }
        )


def test_run_events_need_their_kind_specific_fields():
    base = {"event_id": "e", "run_id": "r", "lease_id": "l"}
    RunEvent.model_validate({**base, "kind": "heartbeat"})
    with pytest.raises(ValidationError, match="needs 'step_id'"):
        RunEvent.model_validate({**base, "kind": "step_started"})
    with pytest.raises(ValidationError, match="target_persona"):
        RunEvent.model_validate({**base, "kind": "handoff", "task": "review"})
    with pytest.raises(ValidationError, match="needs 'error'"):
        RunEvent.model_validate({**base, "kind": "failed"})


def test_receipt_and_status_field_names_are_exact():
    assert list(Receipt.model_fields) == [
        "status",
        "persona",
        "run_id",
        "work_key",
        "lease",
        "queued",
        "error",
        "budget_receipt_id",
        "request_id",
        "receipt_id",
        "at_ms",
        "attempt",
        "not_before_ms",
        "event_id",
        "trace",
    ]
    assert list(PersonaStatus.model_fields) == [
        "name",
        "template_ref",
        "state",
        "entry_workflow",
        "role",
        "current_assignment",
        "last_run",
        "next_scheduled_run",
        "active_lease",
        "budget",
        "last_error",
        "queued_events",
        "queued_work",
        "handoff_inbox",
        "value_receipts",
        "disabled_events",
        "paused_event_policy",
        "diagnostics",
    ]


def test_amounts_are_bounded_so_that_no_sum_the_pipeline_keeps_can_overflow():
    # Two 1.7e308 costs would add up to infinity, which JSON cannot carry: such a
    # persona's state could never be stored again.
    with pytest.raises(ValidationError, match="cost_usd\n  Input should be less than or equal to 1000000000000"):
        RunCost.model_validate({"cost_usd": 1.7e308, "tokens": 0})
    with pytest.raises(ValidationError, match="tokens\n  Input should be less than or equal to"):
        RunCost.model_validate({"cost_usd": 0.0, "tokens": 2**63})
    RunCost.model_validate({"cost_usd": 1e12, "tokens": 2**40, "avoided_cost_usd": -1e12})
