"""Capability tokens: minted by the worker for a dispatch, checked as a tool adapter would;
signing keys; BOM signatures; the worker refuses to start without a key."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from agents.capability import bom_signature, mint, scope_of, sign_outputs
from personaflow import capability as cap
from personaflow import keys
from personaflow.cli import main
from streams import capability as fmt
from streams.outputs import Output
from streams.wire import PolicyScope, RunDispatch, RunLimits, TriggerEnvelope

T0 = 1_800_000_000_000
KEY = keys.SigningKey.from_seed(bytes(range(32)))
KNOWN = {KEY.kid: KEY.public}


def dispatch(run_id: str = "run-1", attempt: int = 2, *, deadline_ms: int = T0 + 60_000) -> RunDispatch:
    return RunDispatch(
        run_id=run_id,
        persona="builder",
        lease_id="lease-1",
        attempt=attempt,
        entry_workflow="wf/build",
        envelope=TriggerEnvelope(provider="github", kind="push", subject_key="r", received_at_ms=T0),
        deadline_ms=deadline_ms,
        limits=RunLimits(),
        issued_at_ms=T0,
    )


def test_a_token_verifies_for_its_run_and_attempt() -> None:
    token = mint(dispatch(), KEY)
    assert token == mint(dispatch(), KEY)  # deterministic: a redelivered dispatch, the same token
    claims = cap.verify(token, KNOWN, cap.AUDIENCE, T0 + 1)
    assert (claims.sub, claims.attempt, claims.persona, claims.kid) == ("run-1", 2, "builder", KEY.kid)
    assert claims.scope == {"workflow": "wf/build"} and claims.iat == T0


def test_a_token_lives_until_the_lease_deadline_or_15_minutes() -> None:
    assert cap.verify(mint(dispatch(), KEY), KNOWN, now_ms=T0).exp == T0 + 60_000
    long = dispatch(deadline_ms=T0 + 3_600_000)
    assert cap.verify(mint(long, KEY), KNOWN, now_ms=T0).exp == T0 + fmt.TTL_MS


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda t: (t, KNOWN, cap.AUDIENCE, T0 + 60_000), cap.Expired),
        (lambda t: (t, KNOWN, cap.AUDIENCE, T0 - 1), cap.NotYetValid),
        (lambda t: (t, KNOWN, "another-service", T0), cap.WrongAudience),
        (lambda t: (t, {"other": KEY.public}, cap.AUDIENCE, T0), cap.UnknownKey),
        (lambda t: ("no-dot", KNOWN, cap.AUDIENCE, T0), cap.BadFormat),
        (lambda t: (_altered(t), KNOWN, cap.AUDIENCE, T0), cap.BadSignature),
    ],
)
def test_a_token_fails_with_what_is_wrong(change, error) -> None:
    token = mint(dispatch(), KEY)
    with pytest.raises(error):
        cap.verify(*change(token))


def _altered(token: str) -> str:
    """The same signature over claims for another run."""
    body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "run-2"
    return fmt.b64encode(json.dumps(claims).encode()) + "." + signature


def test_the_worker_signs_dispatches_and_boms_after_the_transition() -> None:
    bom = {"run_id": "run-1", "attempts": [{"lease_id": "lease-1", "cost_usd": 0.5}]}
    outputs = [
        Output("dispatch", "run-1", msgspec.json.encode(dispatch())),
        Output("outbox", b"builder", msgspec.json.encode({"kind": "run.bom", "payload": bom}), [("kind", b"run.bom")]),
    ]
    sign_outputs(outputs, 0, KEY)
    signed = msgspec.json.decode(outputs[0].value, type=RunDispatch)
    assert cap.verify(signed.capability or "", KNOWN, now_ms=T0).sub == "run-1"
    header = dict(outputs[1].headers)["signature"]
    assert json.loads(header) == bom_signature(bom, KEY)
    cap.verify_bom(bom, json.loads(header), KNOWN)
    with pytest.raises(cap.BadSignature):
        cap.verify_bom({**bom, "run_id": "run-2"}, json.loads(header), KNOWN)


def test_a_failure_to_sign_leaves_the_dispatch_without_a_token() -> None:
    class Broken:
        kid = "broken"

        def sign(self, data: bytes) -> bytes:
            raise RuntimeError("no key")

    outputs = [Output("dispatch", "run-1", msgspec.json.encode(dispatch()))]
    sign_outputs(outputs, 0, Broken())
    assert msgspec.json.decode(outputs[0].value, type=RunDispatch).capability is None


def test_a_key_is_created_once_in_the_data_dir(tmp_path: Path) -> None:
    first = keys.load(tmp_path, environ={})
    assert stat.S_IMODE(os.stat(tmp_path / keys.KEY_FILE).st_mode) == 0o600
    assert keys.load(tmp_path, environ={}).kid == first.kid
    assert keys.public_keys(tmp_path, environ={}) == {first.kid: first.public}
    seed = base64.b64encode(bytes(range(32))).decode()
    assert keys.load(tmp_path, environ={keys.ENV: seed}).kid == KEY.kid


def test_the_cli_verifies_a_token_and_the_worker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [KEY.public_json()]}))
    runner = CliRunner()
    token = mint(dispatch(), KEY)
    ok = runner.invoke(main, ["capability", "verify", token, "--keys", str(keys_file), "--now-ms", str(T0)])
    assert ok.exit_code == 0 and json.loads(ok.output)["sub"] == "run-1"
    late = runner.invoke(main, ["capability", "verify", token, "--keys", str(keys_file), "--now-ms", str(T0 + 10**9)])
    assert late.exit_code == 1 and "expired" in late.output
    env = {"PERSONAFLOW_DATA_DIR": str(tmp_path), keys.ENV: "c2hvcnQ="}  # 5 bytes: not a seed
    refused = runner.invoke(main, ["worker"], env=env)
    assert refused.exit_code == 1 and "no signing key" in refused.output


def test_signing_outputs_gives_each_dispatch_its_token_and_leaves_other_outputs_alone() -> None:
    other = Output("outbox", "run-1", b"{}", [("kind", b"run.started")])
    outputs = [Output("dispatch", "run-1", msgspec.json.encode(dispatch())), other]
    sign_outputs(outputs, 0, KEY)
    signed = msgspec.json.decode(outputs[0].value, type=RunDispatch)
    assert signed.capability == mint(dispatch(), KEY) and outputs[1] is other
    assert cap.verify(signed.capability, KNOWN, now_ms=T0).sub == "run-1"


def test_a_tokens_scope_is_the_workflow_and_the_policy_scope_its_dispatch_carries() -> None:
    scoped = msgspec.structs.replace(
        dispatch(), policy_scope=PolicyScope(pack="tools", tools={"shell": "deny"}, other_tools="allow")
    )
    claims = cap.verify(mint(scoped, KEY), KNOWN, now_ms=T0)
    assert claims.scope == {
        "workflow": "wf/build",
        "policy": {"pack": "tools", "tools": {"shell": "deny"}, "other_tools": "allow"},
    }
    assert scope_of(dispatch()) == {"workflow": "wf/build"}
