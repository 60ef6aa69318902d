"""The TokenReview cache never outlives a token: its `exp` is read to bound the cache."""

from __future__ import annotations

import base64
import json

import pytest
from kubewrit.webhook.kube.identity import token_expiry


def jwt(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_exp_claim_is_read() -> None:
    assert token_expiry(jwt({"exp": 1900000000, "aud": ["kubewrit"]})) == 1900000000.0


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "a.b",
        jwt({"aud": "kubewrit"}),
        jwt({"exp": "1900000000"}),
        jwt({"exp": True}),
        jwt(["exp", 1]),
        "a.!!!.c",
        "a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c",
    ],
)
def test_no_usable_exp_is_none(token: str) -> None:
    assert token_expiry(token) is None
