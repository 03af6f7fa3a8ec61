"""JSON Schema export of the public records, for producers in other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .records import PUBLIC_RECORDS


def schemas() -> dict[str, dict[str, Any]]:
    """Record name -> JSON Schema (draft 2020-12, as pydantic emits it)."""
    result = {}
    for record in PUBLIC_RECORDS:
        schema = record.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://personaflow.dev/schemas/{record.__name__}.schema.json"
        result[record.__name__] = schema
    return result


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
