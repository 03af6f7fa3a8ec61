"""The worker's Ed25519 signing key: capability tokens, signed run bills of materials.

The key is the 32-byte seed in ``PERSONAFLOW_SIGNING_KEY`` (base64, standard or url-safe),
else the file ``signing.key`` in the data dir, created once (mode 0600) on first use. Its id
is a short digest of the public key, so verifiers pick the key by id after a rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from streams.capability import b64encode

ENV = "PERSONAFLOW_SIGNING_KEY"
KEY_FILE = "signing.key"
PUBLIC_FILE = "signing.pub.json"


class SigningKeyError(RuntimeError):
    """No usable signing key: the message says what is wrong and what to do."""


def key_id(public: bytes) -> str:
    """A short, stable id of a raw 32-byte public key (16 hex digits of its SHA-256)."""
    return hashlib.sha256(public).hexdigest()[:16]


def _b64decode(text: str) -> bytes:
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"{ENV} is not base64 ({exc})") from None


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key with its id; ``sign`` is deterministic (same bytes, same signature)."""

    private: Ed25519PrivateKey
    kid: str
    public: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise SigningKeyError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, key_id(public), public)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def public_json(self) -> dict[str, str]:
        return public_entry(self.kid, self.public)


def _from_file(path: Path) -> SigningKey:
    try:
        seed = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {path} ({exc.strerror})") from None
    return SigningKey.from_seed(seed)


def _create(path: Path) -> SigningKey:
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once keep the first key, never a mix of both.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _from_file(path)
    except OSError as exc:
        raise SigningKeyError(f"cannot create the signing key {path} ({exc.strerror}); set {ENV}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(seed)
    return SigningKey.from_seed(seed)


def load(data_dir: Path, *, create: bool = True, environ: dict[str, str] | None = None) -> SigningKey:
    """The signing key: ``PERSONAFLOW_SIGNING_KEY``, else the data dir's (created if ``create``).

    Raises ``SigningKeyError`` when there is none or it is unusable. The public key is also written
    next to it (``signing.pub.json``) so that verifiers sharing the data dir find it."""
    env = os.environ if environ is None else environ
    seed = env.get(ENV)
    if seed:
        key = SigningKey.from_seed(_b64decode(seed))
    else:
        path = data_dir / KEY_FILE
        if path.exists():
            key = _from_file(path)
        elif create:
            key = _create(path)
        else:
            raise SigningKeyError(f"no signing key: {ENV} is unset and {path} does not exist")
    _publish(data_dir, key)
    return key


def _publish(data_dir: Path, key: SigningKey) -> None:
    """Add the key's public half to the data dir's ``signing.pub.json`` (best effort)."""
    import json

    path = data_dir / PUBLIC_FILE
    try:
        known = public_keys_file(path) if path.exists() else {}
        if known.get(key.kid) == key.public:
            return
        known[key.kid] = key.public
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [public_entry(kid, pub) for kid, pub in sorted(known.items())]}, indent=2))
        tmp.replace(path)
    except (OSError, ValueError):
        pass  # verifiers can still be given the key with `personaflow keys`


def public_entry(kid: str, public: bytes) -> dict[str, str]:
    """A public key as ``personaflow keys`` prints it and ``signing.pub.json`` holds it."""
    return {"kid": kid, "alg": "Ed25519", "public_key": b64encode(public)}


def public_keys_file(path: Path) -> dict[str, bytes]:
    """Public keys by id from a JSON file: ``{"keys": [{"kid", "public_key"}]}`` (the output
    of ``personaflow keys``), or a single ``{"kid", "public_key"}`` object."""
    import json

    document = json.loads(path.read_text())
    entries = document.get("keys", [document]) if isinstance(document, dict) else document
    found: dict[str, bytes] = {}
    for entry in entries:
        public = _b64decode(entry["public_key"])
        found[entry.get("kid") or key_id(public)] = public
    return found


def public_keys(data_dir: Path, environ: dict[str, str] | None = None) -> dict[str, bytes]:
    """The public keys known in this environment: the configured key and the data dir's."""
    found: dict[str, bytes] = {}
    path = data_dir / PUBLIC_FILE
    if path.exists():
        try:
            found.update(public_keys_file(path))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        key = load(data_dir, create=False, environ=environ)
    except SigningKeyError:
        return found
    found[key.kid] = key.public
    return found


def verifier(public: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public)
