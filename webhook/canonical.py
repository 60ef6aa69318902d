"""Canonical Action Representation (CAR): one action, one byte string, one hash.

Every framework spells a tool call differently; the hash must not care. The CAR
keeps arguments exactly as the tool will receive them, normalizes only the tool
name (NFKC, then a strict ASCII pattern, so a look-alike never matches a rule),
and serializes with RFC 8785 so the same action always hashes the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import rfc8785
from kubewrit.webhook import errors

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53
DEFAULT_MAX_BYTES = 64 * 1024

TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$")


class CanonicalError(errors.InvalidRequest, ValueError):
    """The input cannot become a canonical action. `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class PayloadTooLarge(CanonicalError, errors.PayloadTooLarge):
    """More bytes than the limit: refused before they are parsed."""

    def __init__(self, size: int | str, limit: int) -> None:
        super().__init__(
            "payload_too_large", f"body of {size} bytes exceeds the {limit}-byte limit"
        )


class InvalidToolName(CanonicalError):
    """A tool name that is not plain ASCII after NFKC: decided DENY, never matched."""

    def __init__(self, raw: str, message: str) -> None:
        super().__init__("invalid_tool_name", message)
        self.raw = raw


@dataclass(frozen=True)
class Action:
    """One tool call, as the policy engine sees it."""

    agent: str
    tool: str
    args: Mapping[str, Any]
    operation: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    namespace: str | None = None

    def car(self) -> dict[str, Any]:
        """The canonical representation: what is hashed, stored and shown to approvers.

        Context is descriptive (session, framework) and deliberately excluded, so
        the same call from LangChain and from MCP has the same hash. The namespace
        is part of the agent's identity in Kubernetes and absent in standalone mode.
        """
        car = {
            "agent": self.agent,
            "tool": self.tool,
            "operation": self.operation,
            "args": dict(self.args),
        }
        if self.namespace is not None:
            car["namespace"] = self.namespace
        return car


def normalize_tool(raw: str) -> str:
    """NFKC-normalize a tool name and insist on a safe ASCII spelling."""
    if not isinstance(raw, str):
        raise CanonicalError("invalid_action", "tool must be a string")
    normalized = unicodedata.normalize("NFKC", raw)
    if normalized != raw or not TOOL_NAME.fullmatch(normalized):
        offending = [f"U+{ord(ch):04X}" for ch in raw if not (ch.isascii() and ch.isprintable())]
        detail = (
            f" (non-ASCII or invisible characters: {', '.join(offending)})" if offending else ""
        )
        raise InvalidToolName(
            raw,
            f"tool name {raw!r} is not a plain ASCII identifier{detail}; "
            f"allowed pattern: {TOOL_NAME.pattern}",
        )
    return normalized


def check_value(value: Any, depth: int = 0, path: str = "args") -> None:
    """Reject what RFC 8785 cannot represent exactly, and over-deep nesting."""
    if depth > MAX_DEPTH:
        raise CanonicalError("too_deep", f"{path}: nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(
                "number_out_of_range",
                f"{path}: integer {value} is beyond 2^53 and cannot be represented exactly; "
                "send it as a string",
            )
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise CanonicalError("invalid_number", f"{path}: NaN and Infinity are not JSON numbers")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError("invalid_action", f"{path}: object keys must be strings")
            check_value(item, depth + 1, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_value(item, depth + 1, f"{path}[{index}]")
        return
    raise CanonicalError("invalid_action", f"{path}: {type(value).__name__} is not a JSON value")


def _reject_constant(token: str) -> Any:
    raise CanonicalError("invalid_number", f"{token} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise CanonicalError("duplicate_key", f"duplicate key {key!r} in JSON object")
        result[key] = value
    return result


def parse_json(raw: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity, bounded size and depth."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(len(raw), max_bytes)
    try:
        value = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except CanonicalError:
        raise
    except RecursionError:
        raise CanonicalError("too_deep", f"nesting deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CanonicalError("malformed_json", f"malformed JSON: {exc}") from None
    check_value(value, path="$")
    return value


RFC8785_MAX_INTEGER = 2**53 - 1  # what rfc8785 writes exactly (it refuses 2^53)


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether orjson (keys sorted) already writes RFC 8785 bytes for `value`.

    It does for objects with ASCII keys (sorted by code point = by UTF-16 unit), arrays,
    strings, booleans, null and safe integers, with no spaces: the same escapes
    (backslash, quote, the five short control escapes, other control characters as
    lowercase u00xx escapes) and everything else as UTF-8 (tested byte for byte against
    `rfc8785`). Not for floats (ES6 number formatting differs) or any other type: those
    take the reference implementation.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -RFC8785_MAX_INTEGER <= value <= RFC8785_MAX_INTEGER
    if depth > MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():  # a loop, strings settled inline: records are flat
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is not str and not _plain(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_plain(item, depth + 1) for item in value)
    return False


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value (records and actions take a fast, exact path)."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a lone surrogate: let the reference implementation say so
            pass
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalError("invalid_action", f"cannot canonicalize: {exc}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """SHA-256 over the RFC 8785 bytes of any JSON value."""
    return sha256_hex(canonical_bytes(value))


def action_hash(action: Action) -> str:
    return "sha256:" + content_hash(action.car())


def build_action(
    agent: str,
    tool: str,
    args: Mapping[str, Any] | None,
    operation: str | None = None,
    context: Mapping[str, Any] | None = None,
    namespace: str | None = None,
) -> Action:
    """Validate and normalize the parts of an action. Raises CanonicalError."""
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise CanonicalError("invalid_action", "args must be a JSON object")
    check_value(args)
    if context is not None:
        check_value(context, path="context")
    if operation is not None and not isinstance(operation, str):
        raise CanonicalError("invalid_action", "operation must be a string")
    return Action(
        agent=agent,
        tool=normalize_tool(tool),
        args=args,
        operation=operation,
        context=dict(context or {}),
        namespace=namespace,
    )
