"""Deterministic ids. Every id derives from the input that caused it, never from
``uuid4()`` or the wall clock, so a replayed transition reproduces the same ids."""

from __future__ import annotations

import hashlib
import uuid

#: Namespace of personaflow's name-based (v5) UUIDs.
NAMESPACE = uuid.UUID("6f1c2a8e-5d0b-4c57-9a43-2f3b8e1d7c90")


_NAMESPACE_BYTES = NAMESPACE.bytes


def _uuid(*parts: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))``, without building UUID objects."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def run_id(persona: str, request_id: str, decision: int) -> str:
    """The run started by decision ``decision`` about request ``request_id`` (a UUID)."""
    return _uuid("run", persona, request_id, str(decision))


def lease_id(persona: str, request_id: str, decision: int) -> str:
    return "persona_lease_" + _uuid("lease", persona, request_id, str(decision))


def attempt_lease_id(run_id: str, dispatch: int) -> str:
    """The lease of a run's ``dispatch``-th dispatch (every attempt, and every re-dispatch
    after an expiry, gets a new one: reports carrying an older one are fenced)."""
    return "persona_lease_" + _uuid("lease", run_id, str(dispatch))


def child_run_id(parent_run_id: str, parent_dispatch: int, child_key: str) -> str:
    """A spawned child: one per key within one dispatch of its parent."""
    return _uuid("child", parent_run_id, str(parent_dispatch), child_key)


def compensation_run_id(failed_run_id: str) -> str:
    return _uuid("compensation", failed_run_id)


def budget_receipt_id(persona: str, seq: int) -> str:
    """Id of the budget record/exhaustion written as outbox event ``seq`` of the persona."""
    return "persona_budget_" + _uuid("budget", persona, str(seq))


def receipt_id(persona: str, request_id: str, decision: int) -> str:
    digest = hashlib.sha256("\x1f".join(("receipt", persona, request_id, str(decision))).encode()).hexdigest()
    return "rcpt_" + digest[:32]


def event_id(stream: str, seq: int) -> str:
    """Outbox event id: the stream and its gap-free sequence number."""
    return f"{stream}/{seq}"


def bounded(identifier: str, limit: int = 256) -> str:
    """``identifier`` if it fits the contract's id length, else a stable digest of it."""
    if len(identifier) <= limit:
        return identifier
    return "sha256:" + hashlib.sha256(identifier.encode()).hexdigest()
