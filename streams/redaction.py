"""Redaction of trigger metadata in what personaflow publishes.

A binding's ``redact_metadata_keys`` names metadata keys whose values must not leave the
pipeline: in the outbox, receipts, status, dead letters and the HTTP views, the value of
such a key in any ``metadata`` mapping is replaced by ``"[redacted]"``. Only the
``RunDispatch`` to executors carries the real values (the executor needs them).

Keys derived from a redacted value (a trigger's work key, its ``source_event_id``) use
:func:`digest` of the value instead: stable, so dedupe still works, and not the value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

REDACTED = "[redacted]"
#: Hex digits of the SHA-256 kept in a digest (128 bits: no two work keys collide).
DIGEST_HEX = 32


def digest(value: str) -> str:
    """``sha256:<first 32 hex digits>`` of ``value``: what derived keys show instead of it."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:DIGEST_HEX]


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


def digested(metadata: Mapping[str, str], keys: frozenset[str] | set[str]) -> Mapping[str, str]:
    """``metadata`` with the values at ``keys`` replaced by their :func:`digest`: what keys
    derived from the metadata are computed from."""
    if not keys or keys.isdisjoint(metadata):
        return metadata
    return {k: (digest(v) if k in keys else v) for k, v in metadata.items()}
