"""Capability tokens: their format and claims, without any key material.

A token is ``base64url(claims JSON) + "." + base64url(Ed25519 signature of those JSON
bytes)``, unpadded. The claims are written with sorted keys, so the same claims give the
same bytes (and, Ed25519 being deterministic, the same token). Times are epoch milliseconds.

The pipeline only reads the claims (a report presenting a token for another run or attempt
is fenced); tool adapters check the signature (``personaflow.capability.verify``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Protocol

import msgspec

from . import canonical

#: Who a dispatch's token is for.
AUDIENCE = "runtime-tool-adapter"
#: The longest a token lives (it also ends with the dispatch's lease deadline).
TTL_MS = 15 * 60_000


class Claims(msgspec.Struct, kw_only=True, frozen=True):
    kid: str  # the signing key's id
    sub: str  # the run id
    attempt: int
    persona: str
    lease: str  # the dispatch's lease id
    aud: str
    scope: dict[str, Any]
    iat: int  # issued (the dispatch's transition time)
    exp: int  # expires: the lease deadline or iat + TTL_MS, whichever is earlier


class Signer(Protocol):
    """An Ed25519 signing key: its id and a deterministic signature of bytes (the worker
    signs tokens and bills of materials with it, the audit consumer its checkpoints)."""

    @property
    def kid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class TokenFormatError(ValueError):
    """Not a capability token: the message says which part is wrong."""


_claims = msgspec.json.Decoder(Claims)


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenFormatError(f"not base64url ({exc})") from None


def signing_input(claims: Claims) -> bytes:
    """The bytes that are signed: the claims' canonical JSON."""
    return canonical.encode(claims)


def assemble(body: bytes, signature: bytes) -> str:
    return f"{b64encode(body)}.{b64encode(signature)}"


def split(token: str) -> tuple[bytes, bytes, Claims]:
    """The signed bytes, the signature and the claims of ``token`` (signature NOT checked)."""
    if not isinstance(token, str) or token.count(".") != 1:
        raise TokenFormatError("a capability token is two base64url parts joined by '.'")
    head, tail = token.split(".")
    body, signature = b64decode(head), b64decode(tail)
    try:
        claims = _claims.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TokenFormatError(f"unreadable claims ({exc})") from None
    return body, signature, claims


def claims(token: str) -> Claims:
    """The claims of ``token``, read without checking its signature."""
    return split(token)[2]


def expiry(issued_at_ms: int, deadline_ms: int) -> int:
    """When a token issued at ``issued_at_ms`` for a dispatch whose lease ends at
    ``deadline_ms`` expires: the earlier of the two bounds (a lease deadline of 0 or less
    does not count)."""
    end = issued_at_ms + TTL_MS
    return min(end, deadline_ms) if deadline_ms > 0 else end
