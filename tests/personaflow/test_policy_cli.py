"""``personaflow policy test``: the decision about a trigger, printed, nothing run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from personaflow.cli import main

BINDING = """
name: builder
entry_workflow: wf/build
execution: external
estimated_run_usd: 0.5
policy:
  pack: ops
  rules:
    - match: {metadata: {env: prod}}
      effect: deny
      reason: no prod deploys
    - match: {metadata_present: [token]}
      effect: redact
      redact_keys: [token]
      reason: mask tokens
    - match: {boundary: tool, tool: shell}
      effect: deny
"""


def files(tmp_path: Path, metadata: dict[str, str]) -> list[str]:
    binding = tmp_path / "binding.yaml"
    binding.write_text(BINDING)
    trigger = tmp_path / "trigger.json"
    request = {"request_id": "r1", "persona": "builder", "provider": "github", "kind": "push", "metadata": metadata}
    trigger.write_text(json.dumps(request))
    return [str(binding), str(trigger)]


def decide(tmp_path: Path, metadata: dict[str, str], *extra: str) -> dict:
    result = CliRunner().invoke(main, ["policy", "test", *files(tmp_path, metadata), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_policy_test_prints_deny_redact_and_tool_decisions_without_secrets(tmp_path):
    denied = decide(tmp_path, {"env": "prod", "token": "s3cret"})
    assert (denied["effect"], denied["summary"], denied["boundary"]) == ("deny", "no prod deploys", "dispatch")
    assert [d["policy"] for d in denied["decisions"]] == ["ops#0", "ops#1"]
    redacted = decide(tmp_path, {"env": "dev", "token": "s3cret"})
    assert (redacted["effect"], redacted["redact_keys"]) == ("redact", ["token"])
    assert "s3cret" not in json.dumps(redacted)
    tool = decide(tmp_path, {"env": "dev"}, "--tool", "shell")
    assert (tool["effect"], tool["boundary"], tool["summary"]) == ("deny", "tool", "rule 2: deny")
    assert decide(tmp_path, {"env": "dev"})["effect"] == "allow"


def test_policy_test_reports_an_invalid_trigger_or_an_unknown_persona(tmp_path):
    binding, trigger = files(tmp_path, {})
    Path(trigger).write_text('{"request_id": "r1"}')
    result = CliRunner().invoke(main, ["policy", "test", binding, trigger])
    assert result.exit_code == 1 and "trigger schema violation" in result.output
    binding, trigger = files(tmp_path, {})
    result = CliRunner().invoke(main, ["policy", "test", binding, trigger, "--persona", "other"])
    assert result.exit_code == 1 and "no binding named 'other'" in result.output
