from __future__ import annotations

import pytest
from kubewrit.webhook import canonical


def hash_of(tool: str, args: dict) -> str:
    return canonical.action_hash(canonical.build_action("a", tool, args))


def test_key_order_and_number_spelling_do_not_change_the_hash() -> None:
    one = canonical.parse_json(b'{"amount": 45.0, "order": {"b": 1, "a": [1, 2]}}')
    two = canonical.parse_json(b'{"order": {"a": [1, 2], "b": 1}, "amount": 45}')
    assert hash_of("process_refund", one) == hash_of("process_refund", two)


def test_context_does_not_change_the_hash_but_arguments_do() -> None:
    a = canonical.build_action("a", "t", {"x": 1}, context={"framework": "langchain"})
    b = canonical.build_action("a", "t", {"x": 1}, context={"framework": "mcp"})
    assert canonical.action_hash(a) == canonical.action_hash(b)
    assert hash_of("t", {"x": 1}) != hash_of("t", {"x": "1"})


@pytest.mark.parametrize(
    "tool", ["prоcess_refund", "process\u200brefund", "ｐrocess", "a b", "", "1tool", "tool\n"]
)
def test_unsafe_tool_names_are_rejected(tool: str) -> None:
    with pytest.raises(canonical.InvalidToolName):
        canonical.normalize_tool(tool)


def test_error_names_the_invisible_character() -> None:
    with pytest.raises(canonical.InvalidToolName, match="U\\+200B"):
        canonical.normalize_tool("process\u200b_refund")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"a": NaN}', "invalid_number"),
        (b'{"a": -Infinity}', "invalid_number"),
        (b'{"a": 9007199254740993}', "number_out_of_range"),
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b'{"a": ' * 40 + b"1" + b"}" * 40, "too_deep"),
        (b"{", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
    ],
)
def test_strict_json(raw: bytes, code: str) -> None:
    with pytest.raises(canonical.CanonicalError) as caught:
        canonical.parse_json(raw)
    assert caught.value.code == code


def test_size_limit() -> None:
    with pytest.raises(canonical.CanonicalError) as caught:
        canonical.parse_json(b'"' + b"x" * 100 + b'"', max_bytes=50)
    assert caught.value.code == "payload_too_large"


def test_canonical_bytes_are_rfc8785() -> None:
    assert (
        canonical.canonical_bytes({"b": 1e21, "a": "é", "c": 0.1})
        == '{"a":"é","b":1e+21,"c":0.1}'.encode()
    )
