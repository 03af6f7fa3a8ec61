"""``personaflow schema`` writes one JSON Schema per public record."""

from __future__ import annotations

import json

from click.testing import CliRunner

from personaflow.cli import main
from streams.records import PUBLIC_RECORDS


def test_schema_command_writes_one_schema_file_per_record(tmp_path):
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(f"{record.__name__}.schema.json" for record in PUBLIC_RECORDS)
    trigger = json.loads((tmp_path / "TriggerRequest.schema.json").read_text())
    assert set(trigger["required"]) == {"request_id", "persona", "provider", "kind"}
    assert trigger["additionalProperties"] is False
    assert trigger["properties"]["persona"]["pattern"] == "^[A-Za-z0-9_.-]{1,128}$"


def test_schemas_validate_what_the_models_accept(tmp_path):
    import jsonschema

    CliRunner().invoke(main, ["schema", "--out", str(tmp_path)])
    schema = json.loads((tmp_path / "ControlCommand.schema.json").read_text())
    jsonschema.validate({"command_id": "c", "persona": "p", "action": "pause", "actor": "ops"}, schema)
