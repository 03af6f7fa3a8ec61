"""Signing what the transitions publish, after they ran: a capability token on every
dispatch, a signature on every run's bill of materials.

Transitions hold no key material, so the worker signs their outputs. Both signatures are
functions of the output alone (Ed25519 is deterministic, and a token's times come from
the dispatch), so a redelivered input gives the same bytes. The BOM's signature travels as
the ``signature`` header of its outbox record: the event itself stays what the transition
wrote, which replay and the outbox hash chain cover byte for byte.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import orjson

from streams import capability
from streams.outputs import Output
from streams.wire import Policy, RunDispatch
from tables.policy import Subject, evaluate

log = logging.getLogger(__name__)


class Signer(Protocol):
    """A signing key: its id and a deterministic signature of bytes."""

    @property
    def kid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


_DISPATCH = msgspec.json.Decoder(RunDispatch)
_encode = msgspec.json.Encoder().encode
_canonical = msgspec.json.Encoder(order="sorted").encode
BOM_KIND = b"run.bom"


PolicyOf = Callable[[str], "Policy | None"]


def _tool_subject(dispatch: RunDispatch, tool: str | None) -> Subject:
    envelope = dispatch.envelope
    return Subject(
        boundary="tool",
        provider=envelope.provider,
        kind=envelope.kind,
        workflow=dispatch.entry_workflow,
        metadata=envelope.metadata,
        # The reservation is not on the dispatch: every cost condition counts as met, so the
        # scope is never wider than what the policy decides at the tool step itself.
        estimated_usd=math.inf,
        attempt=dispatch.attempt,
        slo_tier=dispatch.slo.tier if dispatch.slo is not None else None,
        run_kind=dispatch.kind,
        tool=tool,
    )


def scope_of(dispatch: RunDispatch, policy: Policy | None) -> dict[str, Any]:
    """The workflow, and with a policy its pack and its effect (allow, redact, deny) on
    each tool its rules name and on any other tool, for this dispatch's work."""
    scope: dict[str, Any] = {"workflow": dispatch.entry_workflow}
    if policy is None or not policy.rules:
        return scope
    named = sorted({rule.match.tool for rule in policy.rules if rule.match.tool is not None})
    scope["policy"] = {
        "pack": policy.pack or "baseline",
        "tools": {tool: evaluate(policy, _tool_subject(dispatch, tool)).effect for tool in named},
        "other_tools": evaluate(policy, _tool_subject(dispatch, None)).effect,
    }
    return scope


def claims_for(dispatch: RunDispatch, kid: str, policy: Policy | None = None) -> capability.Claims:
    """What a dispatch's token grants: its run and attempt, for tool adapters, within its
    scope, from its issue time until its lease deadline (15 minutes at most)."""
    issued = dispatch.issued_at_ms if dispatch.issued_at_ms is not None else 0
    return capability.Claims(
        kid=kid,
        sub=dispatch.run_id,
        attempt=dispatch.attempt,
        persona=dispatch.persona,
        lease=dispatch.lease_id,
        aud=capability.AUDIENCE,
        scope=scope_of(dispatch, policy),
        iat=issued,
        exp=capability.expiry(issued, dispatch.deadline_ms),
    )


def mint(dispatch: RunDispatch, signer: Signer, policy: Policy | None = None) -> str:
    body = capability.signing_input(claims_for(dispatch, signer.kid, policy))
    return capability.assemble(body, signer.sign(body))


def bom_signature(bom: Any, signer: Signer) -> dict[str, str]:
    """``{kid, alg, sig}``: the signature of the BOM's canonical JSON (sorted keys, compact)."""
    return {"kid": signer.kid, "alg": "Ed25519", "sig": capability.b64encode(signer.sign(_canonical(bom)))}


def _kind(output: Output) -> bytes | None:
    for name, value in output.headers:
        if name == "kind":
            return value if isinstance(value, bytes) else value.encode()
    return None


def sign_outputs(outputs: list[Output], start: int, signer: Signer, policy_of: PolicyOf | None = None) -> None:
    """Sign the outputs from index ``start`` on: dispatches get their token (``policy_of``:
    the policy of a persona, for the token's scope), ``run.bom``
    outbox events a ``signature`` header. A failure to sign one (a bug: the key is in
    memory) leaves it unsigned with a warning rather than losing the pass's work."""
    for index in range(start, len(outputs)):
        output = outputs[index]
        try:
            if output.role == "dispatch" and isinstance(output.value, bytes):
                dispatch = _DISPATCH.decode(output.value)
                policy = policy_of(dispatch.persona) if policy_of is not None else None
                signed = msgspec.structs.replace(dispatch, capability=mint(dispatch, signer, policy))
                outputs[index] = Output(
                    output.role, output.key, _encode(signed), output.headers, output.phase, output.partition
                )
            elif output.role == "outbox" and _kind(output) == BOM_KIND and isinstance(output.value, bytes):
                bom = orjson.loads(output.value)["payload"]
                header = orjson.dumps(bom_signature(bom, signer))
                headers = [(name, v if isinstance(v, bytes) else v.encode()) for name, v in output.headers]
                headers.append(("signature", header))
                outputs[index] = Output(output.role, output.key, output.value, headers, output.phase, output.partition)
        except Exception:
            log.warning("could not sign a %s output; it goes unsigned", output.role, exc_info=True)
