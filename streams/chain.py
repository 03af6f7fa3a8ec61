"""The hash chain of outbox streams: every event names its predecessor's digest.

An event's ``digest`` is ``sha256(prev_digest + canonical(event))`` as lowercase hex, where
``prev_digest`` is the digest of the previous event of the same ``stream`` (:data:`GENESIS`
for a stream's first event) as 64 ASCII characters, and ``canonical(event)`` is the event
without ``prev_digest`` and ``digest`` as compact JSON (no whitespace), UTF-8 (nothing
escaped that JSON does not require), object keys sorted by code point at every level,
absent optional fields as ``null``, integers as written, floats in their shortest
round-trip form (``0.1``, ``1e-05``, ``1.5e16``) — exactly what
``msgspec.json.encode(value, order="sorted")`` writes.

The transition writes the canonical body once and appends the two digest fields to those
bytes (:func:`seal`), so the published event costs one encoding and one hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .canonical import encode as canonical_json
from .wire import OutboxEvent

#: The ``prev_digest`` of a stream's first event.
GENESIS = "0" * 64
#: The fields the digest does not cover.
DIGEST_FIELDS = ("prev_digest", "digest")

#: The outbox event's optional fields (``null`` when absent) that the digest covers.
NULLABLE = tuple(
    f.name for f in msgspec.structs.fields(OutboxEvent) if f.default is None and f.name not in DIGEST_FIELDS
)
#: The canonical encoding of a struct or dict that has no digest fields.
encode_canonical = canonical_json
_sha256 = hashlib.sha256


def canonical(event: Any) -> bytes:
    """The canonical JSON of ``event`` (a struct or a decoded dict) without its digest
    fields; a dict's absent optional fields count as ``null``, as a struct writes them (so a
    recorder and a verifier that rebuilt the event from columns compute the same digest)."""
    if isinstance(event, dict):
        absent = [name for name in NULLABLE if name not in event]
        if absent or "prev_digest" in event or "digest" in event:
            event = {name: None for name in absent} | {
                key: value for key, value in event.items() if key not in DIGEST_FIELDS
            }
    return encode_canonical(event)


def link(prev_digest: str, body: bytes) -> str:
    """The digest of an event with canonical ``body`` after an event with ``prev_digest``."""
    return _sha256(prev_digest.encode("ascii") + body).hexdigest()


def seal(prev_digest: str, body: bytes) -> tuple[bytes, str]:
    """The published event (``body`` with the two digest fields appended) and its digest."""
    prev = prev_digest.encode("ascii")
    digest = _sha256(prev + body).hexdigest()  # one call: cheaper than update() on a small input
    # One join, no re-encoding: the body's closing brace gives way to the two fields.
    value = b"".join((body[:-1], b',"prev_digest":"', prev, b'","digest":"', digest.encode("ascii"), b'"}'))
    return value, digest


def recompute(event: dict[str, Any]) -> str:
    """The digest a decoded event should carry, from its own ``prev_digest``."""
    return link(event.get("prev_digest") or GENESIS, canonical(event))
