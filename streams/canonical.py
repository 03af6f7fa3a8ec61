"""Canonical JSON: the bytes every digest and signature in personaflow covers.

Compact (no whitespace), UTF-8 with only what JSON requires escaped, object keys sorted by
code point at every level, floats in shortest round-trip form: what
``msgspec.json.encode(value, order="sorted")`` writes. The outbox hash chain
(:mod:`streams.chain`), capability tokens' claims (:mod:`streams.capability`), the run BOM's
digests and signature, and the audit checkpoints' signatures all use this one encoder, so a
verifier re-encodes once, the same way, whatever it checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

encode: Callable[[Any], bytes] = msgspec.json.Encoder(order="sorted").encode
