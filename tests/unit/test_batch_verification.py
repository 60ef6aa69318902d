"""`Verifier.verify_all`: many signatures at once, in batches where the batch verifier is
built, with the answers libsodium gives one signature at a time."""

from __future__ import annotations

import pytest
from kubewrit.webhook import keys

# The order of Ed25519's prime-order group: s + L is the same scalar, spelled non-canonically.
L = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture(scope="module")
def signed() -> tuple[keys.Signer, list[str], list[bytes]]:
    signer = keys.generate()
    messages = [f"sha256:{n:064x}".encode() for n in range(40)]
    return signer, [signer.sign(m) for m in messages], messages


@pytest.fixture(params=["batches", "one_at_a_time"])
def checker(request, monkeypatch) -> str:
    if request.param == "one_at_a_time":
        monkeypatch.setattr(keys, "_verify_batch", None)
    return str(request.param)


def flip(signature: str, byte: int) -> str:
    raw = bytearray(keys.b64url_decode(signature))
    raw[byte] ^= 0x01
    return keys.b64url_encode(bytes(raw))


def non_canonical(signature: str) -> str:
    """The same signature with s + L for s: libsodium refuses it, and so must a batch."""
    raw = keys.b64url_decode(signature)
    s = int.from_bytes(raw[32:], "little") + L
    return keys.b64url_encode(raw[:32] + s.to_bytes(32, "little"))


def test_the_batch_verifier_is_built_where_the_tests_run() -> None:
    # hack/test installs native/batchverify; without it every other test here would
    # check the one-at-a-time path twice and the batches never.
    assert keys.BATCH_VERIFIER is not None


def test_genuine_signatures_all_verify(signed, checker) -> None:
    signer, signatures, messages = signed
    assert signer.verifier.verify_all(signatures, messages)
    assert signer.verifier.verify_all([], [])


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda s: flip(s, 3), id="nonce_point_changed"),
        pytest.param(lambda s: flip(s, 40), id="scalar_changed"),
        pytest.param(non_canonical, id="scalar_not_canonical"),
        pytest.param(lambda s: s[:-4], id="too_short"),
        pytest.param(lambda s: "!" + s[1:], id="not_base64url"),
    ],
)
@pytest.mark.parametrize("at", [0, 17, 39])
def test_one_bad_signature_fails_the_whole_batch(signed, checker, spoil, at: int) -> None:
    signer, signatures, messages = signed
    spoilt = list(signatures)
    spoilt[at] = spoil(spoilt[at])
    assert not signer.verifier.verify(spoilt[at], messages[at])  # libsodium, alone
    assert not signer.verifier.verify_all(spoilt, messages)


def test_a_signature_over_another_message_fails(signed, checker) -> None:
    signer, signatures, messages = signed
    swapped = [messages[1], messages[0], *messages[2:]]
    assert not signer.verifier.verify_all(signatures, swapped)


def test_another_keys_signatures_fail(signed, checker) -> None:
    _, signatures, messages = signed
    assert not keys.generate().verifier.verify_all(signatures, messages)


def test_a_signature_per_message_or_a_clear_error(signed, checker) -> None:
    signer, signatures, messages = signed
    with pytest.raises(ValueError, match="one message per signature"):
        signer.verifier.verify_all(signatures, messages[:-1])
