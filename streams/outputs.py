"""What a transition asks to publish: a record for a topic role, with key and headers."""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Any

import msgspec
from pydantic import BaseModel

from .codec import encode


@dataclass(frozen=True, slots=True)
class Output:
    """One record to publish. ``value`` is a contract model (pydantic), its fast twin or an
    inbox record (msgspec), or JSON already encoded; None is a tombstone (compacted topics).

    Outputs of a lower ``phase`` are acknowledged before any of a higher phase is sent:
    a run's registration in the run inbox must land before executors can see its dispatch.
    ``partition`` overrides the key's partition (None: by key, as Kafka's default).
    """

    role: str
    key: str | bytes | None
    value: BaseModel | msgspec.Struct | bytes | Any
    headers: tuple[tuple[str, str], ...] = field(default=())
    phase: int = 0
    partition: int | None = None

    def key_bytes(self) -> bytes | None:
        if self.key is None or isinstance(self.key, bytes):
            return self.key
        return self.key.encode()

    def value_bytes(self) -> bytes | None:
        value = self.value
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, BaseModel):
            return encode(value)
        return _encode(value)

    def header_list(self) -> list[tuple[str, bytes]]:
        return [(name, value.encode()) for name, value in self.headers]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


_encode = msgspec.json.Encoder().encode
