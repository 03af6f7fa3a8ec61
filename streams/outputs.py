"""What a transition asks to publish: a record for a topic role, with key and headers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from pydantic import BaseModel

from .codec import encode

_encode = msgspec.json.Encoder().encode

Header = tuple[str, "str | bytes"]


class Output:
    """One record to publish. ``value`` is a contract model (pydantic), its fast twin or an
    inbox record (msgspec), or JSON already encoded; None is a tombstone (compacted topics).
    Headers are a tuple of (name, text or bytes), or a list of (name, bytes) that is
    passed to the producer as it is (the hot paths build that: nothing to convert).

    Outputs of a lower ``phase`` are acknowledged before any of a higher phase is sent:
    a run's registration in the run inbox must land before executors can see its dispatch.
    ``partition`` overrides the key's partition (None: by key, as Kafka's default).
    """

    __slots__ = ("role", "key", "value", "headers", "phase", "partition")

    def __init__(
        self,
        role: str,
        key: str | bytes | None,
        value: Any,
        headers: Sequence[Header] = (),
        phase: int = 0,
        partition: int | None = None,
    ) -> None:
        self.role = role
        self.key = key
        self.value = value
        self.headers = headers
        self.phase = phase
        self.partition = partition

    def __repr__(self) -> str:
        return f"Output({self.role!r}, {self.key!r}, {self.value!r}, {self.headers!r}, phase={self.phase})"

    def key_bytes(self) -> bytes | None:
        key = self.key
        if key is None or isinstance(key, bytes):
            return key
        return key.encode()

    def value_bytes(self) -> bytes | None:
        value = self.value
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, BaseModel):
            return encode(value)
        return _encode(value)

    def header_list(self) -> list[tuple[str, bytes]]:
        """Headers as the producer takes them. A list is taken to hold bytes already (the hot
        paths build it so); a tuple may hold text."""
        headers = self.headers
        if type(headers) is list:
            return headers
        return [(name, item if isinstance(item, bytes) else item.encode()) for name, item in headers]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode() if isinstance(value, bytes) else value
        return None
