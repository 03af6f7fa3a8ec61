"""``personaflow policy test``: a binding's policy decision about a trigger, computed the
way the worker computes it, without running or publishing anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from streams import wire
from streams.codec import describe_validation_error
from streams.records import PersonaBinding, PolicyBoundary, TriggerRequest
from tables import money, policy, rules
from tables.envelope import normalize_trigger_envelope

from .ops import OpsError, load_bindings


def load_trigger(path: Path) -> TriggerRequest:
    """One TriggerRequest from a JSON file."""
    try:
        return TriggerRequest.model_validate_json(path.read_text())
    except OSError as exc:
        raise OpsError(f"{path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise OpsError(f"{path}: {describe_validation_error(exc, 'trigger')}") from None


def pick(bindings: list[PersonaBinding], request: TriggerRequest, name: str | None) -> PersonaBinding:
    """The binding the trigger is for: ``name``, else the trigger's persona, else the only one."""
    wanted = name or request.persona
    for binding in bindings:
        if binding.name == wanted:
            return binding
    if name is None and len(bindings) == 1:
        return bindings[0]
    raise OpsError(f"no binding named {wanted!r} (found: {', '.join(b.name for b in bindings)})")


def decide(binding: PersonaBinding, request: TriggerRequest, tool: str | None = None, attempt: int = 1) -> Any:
    """The decision record about the trigger's first dispatch (``tool``: about a step of its
    run that calls it), as the worker would publish it."""
    bound = cast(wire.PersonaBinding, wire.from_model(binding))
    given = cast(wire.TriggerRequest, wire.from_model(request))
    envelope = normalize_trigger_envelope(
        given.provider,
        given.kind,
        given.metadata,
        0,
        given.request_id,
        given.raw,
        frozenset(bound.redact_metadata_keys),
    )
    external = given.cost is None and bound.execution == "external"
    usd = money.reservation(bound)[0] if external else (given.cost.cost_usd if given.cost is not None else 0.0)
    slo = given.slo if given.slo is not None else bound.slo
    tier = slo.tier if slo is not None else None
    boundary: PolicyBoundary = "dispatch" if tool is None else "tool"
    subject = rules.of_work(envelope, bound.entry_workflow, usd, tier, attempt=attempt, boundary=boundary, tool=tool)
    decision = rules.evaluate(bound.policy or wire.Policy(), subject)
    record = policy.record(decision, subject, 0, bound.name)
    del record["timestamp"]  # nothing happened: no time to tell
    record.update(persona=bound.name, policy=bound.policy is not None, redact_keys=decision.redact_keys)
    return record


def run(binding_file: Path, trigger_file: Path, persona: str | None, tool: str | None, attempt: int) -> str:
    request = load_trigger(trigger_file)
    binding = pick(load_bindings(binding_file), request, persona)
    return json.dumps(decide(binding, request, tool, attempt), indent=2)
