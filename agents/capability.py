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
from typing import Any

import msgspec
import orjson

from streams import canonical, capability
from streams.capability import Signer
from streams.outputs import Output
from streams.wire import RunDispatch

log = logging.getLogger(__name__)


_DISPATCH = msgspec.json.Decoder(RunDispatch)
_encode = msgspec.json.Encoder().encode
BOM_KIND = b"run.bom"


def scope_of(dispatch: RunDispatch) -> dict[str, Any]:
    """The workflow, and with a policy the scope its transition decided (``policy_scope``)."""
    scope: dict[str, Any] = {"workflow": dispatch.entry_workflow}
    if dispatch.policy_scope is not None:
        scope["policy"] = msgspec.to_builtins(dispatch.policy_scope)
    return scope


def claims_for(dispatch: RunDispatch, kid: str) -> capability.Claims:
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
        scope=scope_of(dispatch),
        iat=issued,
        exp=capability.expiry(issued, dispatch.deadline_ms),
    )


def mint(dispatch: RunDispatch, signer: Signer) -> str:
    body = capability.signing_input(claims_for(dispatch, signer.kid))
    return capability.assemble(body, signer.sign(body))


def bom_signature(bom: Any, signer: Signer) -> dict[str, str]:
    """``{kid, alg, sig}``: the signature of the BOM's canonical JSON (sorted keys, compact)."""
    return {"kid": signer.kid, "alg": "Ed25519", "sig": capability.b64encode(signer.sign(canonical.encode(bom)))}


def _kind(output: Output) -> bytes | None:
    for name, value in output.headers:
        if name == "kind":
            return value if isinstance(value, bytes) else value.encode()
    return None


def sign_outputs(outputs: list[Output], start: int, signer: Signer) -> None:
    """Sign the outputs from index ``start`` on: dispatches get their token, ``run.bom``
    outbox events a ``signature`` header. A failure to sign one (a bug: the key is in
    memory) leaves it unsigned with a warning rather than losing the pass's work."""
    for index in range(start, len(outputs)):
        output = outputs[index]
        try:
            if output.role == "dispatch" and isinstance(output.value, bytes):
                dispatch = _DISPATCH.decode(output.value)
                signed = msgspec.structs.replace(dispatch, capability=mint(dispatch, signer))
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
