"""JSON codec for contract records, with errors a person can act on."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from .records import MAX_RECORD_BYTES

M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """A record could not be accepted; ``str(error)`` says why and what to fix."""


def encode(record: BaseModel) -> bytes:
    """Compact UTF-8 JSON with every field present (nulls included)."""
    return record.model_dump_json().encode()


def check_size(key: bytes | None, value: bytes | None, limit: int = MAX_RECORD_BYTES) -> None:
    size = len(key or b"") + len(value or b"")
    if size > limit:
        raise DecodeError(
            f"record is {size} bytes (key + value); the limit is {limit} bytes ({limit // 1024} KiB)."
            " Move large payloads out of band and send a reference."
        )


def describe_validation_error(error: ValidationError, record_name: str) -> str:
    """Turn pydantic's error list into one sentence naming each bad field."""
    problems: list[str] = []
    for item in error.errors(include_url=False):
        if item["type"] == "json_invalid":
            return f"value is not valid JSON ({item['msg'].removeprefix('Invalid JSON: ')})"
        if item["type"] in ("model_type", "dict_type") and not item["loc"]:
            return f"value must be a JSON object ({record_name}), got {type(item['input']).__name__}"
        where = ".".join(str(part) for part in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "field required"
        elif item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling against the contract)"
        problems.append(f"{where}: {message}")
    return f"{record_name} schema violation: " + "; ".join(problems)


def decode(model: type[M], value: bytes | None) -> M:
    """Decode and validate one record value, or raise :class:`DecodeError`."""
    if value is None:
        raise DecodeError(f"record value is null; expected a JSON {model.__name__}")
    check_size(None, value)
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc, model.__name__)) from None


def decode_union(adapter: TypeAdapter[Any], name: str, value: bytes) -> Any:
    """Decode a discriminated union (internal inbox records)."""
    try:
        return adapter.validate_json(value)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc, name)) from None
