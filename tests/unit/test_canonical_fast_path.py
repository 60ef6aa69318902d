"""The fast canonical encoder must write exactly the bytes of the RFC 8785 reference.

Records and actions are canonicalized by the standard library's encoder when every
value is one it writes exactly as RFC 8785 does; anything else goes to `rfc8785`.
A hash that changed with the encoder would break every chain, so: byte equality with
the reference over many random values, with the characters where encoders differ.
"""

from __future__ import annotations

import random

import pytest
import rfc8785
from kubewrit.webhook import canonical

CHARACTERS = [chr(c) for c in range(0x80)] + [
    chr(c) for c in (0x85, 0xA0, 0xE9, 0x2028, 0x2029, 0xE000, 0xFEFF, 0xFFFF, 0x10000, 0x1F600)
]


def text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 8)))


def value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return text(rng)
    if roll < 0.4:
        return rng.choice([True, False, None])
    if roll < 0.55:
        return rng.choice([0, -1, 2**53 - 1, -(2**53) + 1, 2**53, rng.randint(-(2**60), 2**60)])
    if roll < 0.6:
        return rng.choice([0.5, 1e21, 1e-7, -0.0, 123.456, 5e-324])
    if roll < 0.8:
        keys = [text(rng) if rng.random() < 0.5 else rng.choice(["b", "a", "B", "_", "aa"])]
        keys += [text(rng) for _ in range(rng.randint(0, 3))]
        return {key: value(rng, depth + 1) for key in keys}
    return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def reference(item: object) -> bytes | None:
    try:
        return rfc8785.dumps(item)
    except Exception:
        return None


def ours(item: object) -> bytes | None:
    try:
        return canonical.canonical_bytes(item)
    except canonical.CanonicalError:
        return None


@pytest.mark.parametrize("seed", range(8))
def test_same_bytes_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    fast = 0
    for _ in range(2000):
        item = value(rng)
        assert ours(item) == reference(item), repr(item)
        fast += canonical._plain(item)
    assert fast > 500  # the fast path was actually exercised


@pytest.mark.parametrize(
    "item",
    [
        {"a\u00e9": 1, "a": 2},  # non-ASCII keys: the reference sorts them
        {"emoji": "\U0001f600", "ctl": "\x00\x1f\x7f\u2028"},
        {"n": 2**53},  # beyond the safe range: refused by both
        {"x": "\ud800"},  # a lone surrogate: refused by both
        [1.5, {"f": 1e21}],
    ],
)
def test_edge_values_agree_with_the_reference(item: object) -> None:
    assert ours(item) == reference(item)
