"""Redaction of trigger metadata in what personaflow publishes.

A binding's ``redact_metadata_keys`` names metadata keys whose values must not leave the
pipeline: in the outbox, receipts, status, dead letters and the HTTP views, the value of
such a key in any ``metadata`` mapping is replaced by ``"[redacted]"``. Only the
``RunDispatch`` to executors carries the real values (the executor needs them).
"""

from __future__ import annotations

from typing import Any

import msgspec

REDACTED = "[redacted]"


def redact(value: Any, keys: frozenset[str] | set[str]) -> Any:
    """``value`` (plain data or structs) with every ``metadata`` mapping's values at
    ``keys`` replaced; ``value`` itself when there is nothing to redact."""
    if not keys:
        return value
    return _walk(msgspec.to_builtins(value), keys)


def _walk(value: Any, keys: frozenset[str] | set[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if name == "metadata" and isinstance(item, dict):
                out[name] = {k: (REDACTED if k in keys else _walk(v, keys)) for k, v in item.items()}
            else:
                out[name] = _walk(item, keys)
        return out
    if isinstance(value, list):
        return [_walk(item, keys) for item in value]
    return value


def redact_metadata(metadata: dict[str, str], keys: frozenset[str] | set[str]) -> dict[str, str]:
    """One metadata mapping, redacted."""
    if not keys or keys.isdisjoint(metadata):
        return metadata
    return {k: (REDACTED if k in keys else v) for k, v in metadata.items()}
