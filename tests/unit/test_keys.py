"""Signing keys: libsodium signs and checks; the bytes are the ones OpenSSL would make."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from kubewrit.webhook import keys


def test_a_signature_is_the_same_bytes_openssl_makes_for_that_key_and_message() -> None:
    signer = keys.generate()
    for size in (0, 1, 71, 300, 4096):
        message = os.urandom(size)
        assert keys.b64url_decode(signer.sign(message)) == signer.private_key.sign(message)


def test_signatures_made_by_openssl_verify_and_ours_verify_under_openssl() -> None:
    signer = keys.generate()
    message = b"sha256:" + b"ab" * 32
    theirs = signer.private_key.sign(message)
    assert signer.verifier.verify_raw(theirs, message)
    signer.private_key.public_key().verify(keys.b64url_decode(signer.sign(message)), message)


def test_a_changed_message_signature_or_key_never_verifies() -> None:
    signer, other = keys.generate(), keys.generate()
    message = b"the record's hash"
    signature = keys.b64url_decode(signer.sign(message))
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert signer.verifier.verify_raw(signature, message)
    assert not signer.verifier.verify_raw(signature, message + b".")
    assert not signer.verifier.verify_raw(flipped, message)
    assert not other.verifier.verify_raw(signature, message)
    with pytest.raises(InvalidSignature):
        signer.private_key.public_key().verify(flipped, message)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 128])
def test_a_signature_of_the_wrong_length_is_refused_not_an_error(signature: bytes) -> None:
    assert not keys.generate().verifier.verify_raw(signature, b"message")


def test_malformed_base64_signatures_are_refused() -> None:
    verifier = keys.generate().verifier
    assert not verifier.verify("not base64 at all!", b"message")
    assert not verifier.verify("", b"message")


def test_a_key_file_written_then_read_again_signs_the_same(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    first = keys.load_or_create(path)
    again = keys.load_or_create(path)
    assert first.sign(b"m") == again.sign(b"m")
    assert again.key_id == keys.load_public(first.verifier.b64).key_id
