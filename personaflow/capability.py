"""Checking capability tokens and signed bills of materials (what a tool adapter does).

``verify`` says what is wrong with a token as a typed error: its format, its key, its
signature, its audience, its time window, in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature

from streams import canonical, capability
from streams.capability import AUDIENCE, Claims, TokenFormatError

from .keys import verifier

__all__ = ["AUDIENCE", "Claims", "verify", "verify_bom"]


class CapabilityError(ValueError):
    """A token that does not grant anything; ``reason`` is a short code."""

    reason = "invalid"


class BadFormat(CapabilityError):
    reason = "bad_format"


class UnknownKey(CapabilityError):
    reason = "unknown_key"


class BadSignature(CapabilityError):
    reason = "bad_signature"


class WrongAudience(CapabilityError):
    reason = "wrong_audience"


class Expired(CapabilityError):
    reason = "expired"


class NotYetValid(CapabilityError):
    reason = "not_yet_valid"


def _check(public_keys: Mapping[str, bytes], kid: str, body: bytes, signature: bytes) -> None:
    public = public_keys.get(kid)
    if public is None:
        raise UnknownKey(f"signed with key {kid!r}, which is not among the {len(public_keys)} known")
    try:
        verifier(public).verify(signature, body)
    except InvalidSignature:
        raise BadSignature(f"the signature does not match the claims (key {kid})") from None


def verify(token: str, public_keys: Mapping[str, bytes], audience: str = AUDIENCE, now_ms: int = 0) -> Claims:
    """The claims of ``token`` if it is well formed, signed by one of ``public_keys`` (by
    key id), for ``audience`` and valid at ``now_ms`` (``iat <= now_ms < exp``)."""
    try:
        body, signature, claims = capability.split(token)
    except TokenFormatError as exc:
        raise BadFormat(str(exc)) from None
    _check(public_keys, claims.kid, body, signature)
    if claims.aud != audience:
        raise WrongAudience(f"the token is for {claims.aud!r}, not {audience!r}")
    if now_ms >= claims.exp:
        raise Expired(f"expired at {claims.exp} (now {now_ms})")
    if now_ms < claims.iat:
        raise NotYetValid(f"valid from {claims.iat} (now {now_ms})")
    return claims


def verify_bom(bom: Any, signature: Mapping[str, str], public_keys: Mapping[str, bytes]) -> None:
    """Check a BOM's ``{kid, alg, sig}`` signature over its canonical JSON; raise if wrong."""
    try:
        kid, sig = signature["kid"], capability.b64decode(signature["sig"])
    except (KeyError, TypeError, TokenFormatError) as exc:
        raise BadFormat(f"not a BOM signature ({exc})") from None
    _check(public_keys, kid, canonical.encode(bom), sig)
