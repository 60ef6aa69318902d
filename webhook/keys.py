"""Ed25519 signing keys: one per writer, generated on first start or supplied.

Keys are generated, stored and read as PEM by `cryptography`; signatures are made and
checked by libsodium (PyNaCl), which is faster at both. Ed25519 is deterministic
(RFC 8032), so either library gives the same signature for the same key and message:
records and writs are the same bytes whichever made them.

`Verifier.verify_all` checks many signatures at once. Where the optional batch verifier
is built (`native/batchverify`: ed25519-consensus, by `pip install ./native/batchverify`)
one batch equation over random multiples of all their terms costs a fraction of checking
each; elsewhere each is checked in turn. A batch equation is cofactored (ZIP 215) where
libsodium's check of one signature is not: the two differ only on a signature whose
nonce point has a small-order part, which only the holder of the key can make, so no
one without the key gets past either. A batch that fails says only that one of its
signatures is bad: callers check each to learn which, with libsodium.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import nacl.bindings as sodium
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError

_verify_batch: Callable[[bytes, list[bytes], list[bytes]], bool] | None
try:
    from kubewrit_batchverify import verify_all as _verify_batch
except ImportError:  # not built here: each signature is checked on its own
    _verify_batch = None

SIGNATURE_BYTES = 64
# What `Verifier.verify_all` checks signatures with, for whoever reports on a verification.
BATCH_VERIFIER: str | None = (
    None if _verify_batch is None else "ed25519-consensus batches, kubewrit-batchverify"
)


class KeyFileError(ValueError):
    """A key file that cannot be used."""


@dataclass(frozen=True)
class Verifier:
    public_key: Ed25519PublicKey

    @cached_property
    def raw(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @cached_property
    def key_id(self) -> str:
        """Short fingerprint, stored in every record so verifiers pick the right key."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    @property
    def b64(self) -> str:
        """The raw key, base64url: what `kubewrit keys public` prints and genesis records name."""
        return b64url_encode(self.raw)

    def pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify(self, signature_b64: str, message: bytes) -> bool:
        try:
            return self.verify_raw(b64url_decode(signature_b64), message)
        except ValueError:
            return False

    def verify_raw(self, signature: bytes, message: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            sodium.crypto_sign_open(signature + message, self.raw)
        except BadSignatureError:
            return False
        return True

    def verify_all(self, signatures: Sequence[str], messages: Sequence[bytes]) -> bool:
        """Does every signature (base64url) verify its message? False if any does not.

        In one batch where the batch verifier is built (see the module's docstring).
        """
        if len(signatures) != len(messages):
            raise ValueError("one message per signature")
        try:
            raw = [b64url_decode(signature) for signature in signatures]
        except ValueError:
            return False
        if _verify_batch is not None:
            return bool(_verify_batch(self.raw, raw, list(messages)))
        return all(map(self.verify_raw, raw, messages))


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @cached_property
    def verifier(self) -> Verifier:
        return Verifier(self.private_key.public_key())

    @property
    def key_id(self) -> str:
        return self.verifier.key_id

    @cached_property
    def _secret(self) -> bytes:
        """libsodium's form of the key: the 32-byte seed, then the public key."""
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return seed + self.verifier.raw

    def sign(self, message: bytes) -> str:
        return b64url_encode(sodium.crypto_sign(message, self._secret)[:SIGNATURE_BYTES])


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as JWS and the records spell signatures and keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def load_or_create(path: Path) -> Signer:
    """Load the PEM key at `path`, or create it with mode 0600 if it does not exist."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(
                f"signing key {path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise KeyFileError(f"signing key {path} is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"signing key {path} is not an Ed25519 key")
        return Signer(key)
    signer = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return signer


def load_public(text: str | bytes) -> Verifier:
    """A public key as PEM, or as the base64url raw 32 bytes `kubewrit keys public` prints."""
    data = text.encode() if isinstance(text, str) else text
    if b"BEGIN PUBLIC KEY" in data:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError("public key is not Ed25519")
        return Verifier(key)
    try:
        raw = b64url_decode(data.decode().strip())
        return Verifier(Ed25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        raise KeyFileError(f"not an Ed25519 public key: {exc}") from None
