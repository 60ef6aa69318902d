"""Argument conditions: how one `match` entry compares one argument.

Comparison is strict by design. A numeric condition accepts numbers and clean
decimal strings ("600"); anything else that is present ("5,000", an object, a
list, a boolean) raises TypeMismatch, which the evaluator turns into a DENY for
the whole decision, so a mistyped value can never slide past a deny rule and
reach a later allow.

String comparisons are case-sensitive by default (an exact match, as a tool name
or an ID needs). Each string comparison has a case-insensitive twin spelled with
an `i` (`ieq`, `ine`, `iprefix`, `iglob`, `iin`, `inot_in`): both sides are
Unicode case-folded, so `x@EVIL.COM` and `x@evil.com` are the same e-mail address
to `to_iglob: "*@evil.com"`. (For a regex, use the inline flag `(?i)`.)
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

CLEAN_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")

NUMERIC_OPS = ("gt", "gte", "lt", "lte")
STRING_OPS = ("prefix", "glob", "regex")
SET_OPS = ("in", "not_in")
# Case-insensitive twins of the string comparisons: `i` + the operator.
FOLDING_OPS = {f"i{op}": op for op in ("eq", "ne", "prefix", "glob", "in", "not_in")}
ALL_OPS = (*NUMERIC_OPS, *STRING_OPS, *SET_OPS, "eq", "ne", *FOLDING_OPS)
# Longest suffixes first so `_not_in` is not read as `_in`, `_gte` not as `_gt`.
SHORTHAND_SUFFIXES = sorted((f"_{op}" for op in ALL_OPS if op != "eq"), key=len, reverse=True)


class Absent:
    """Marker for an argument path that does not exist in the call."""


ABSENT = Absent()


class TypeMismatch(Exception):
    def __init__(self, path: str, expected: str, value: Any) -> None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"argument {path!r} is {shown}, expected {expected}")
        self.path = path


def lookup(args: Mapping[str, Any], path: tuple[str, ...], dotted: str) -> Any:
    """Follow a dotted argument path. Missing keys are ABSENT; walking into a non-object is a mismatch."""
    value: Any = args
    for part in path:
        if not isinstance(value, Mapping):
            raise TypeMismatch(dotted, "an object on the way to a nested field", value)
        if part not in value:
            return ABSENT
        value = value[part]
    return value


def as_number(value: Any, path: str) -> Decimal:
    if isinstance(value, bool):
        raise TypeMismatch(path, "a number", value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and CLEAN_DECIMAL.fullmatch(value):
        try:
            return Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            pass
    raise TypeMismatch(path, "a number", value)


def as_string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TypeMismatch(path, "a string", value)
    return value


def kind_of(literal: Any) -> str:
    """The comparison kind a policy literal asks for."""
    if isinstance(literal, bool):
        return "bool"
    if isinstance(literal, int | float):
        return "number"
    if isinstance(literal, str):
        return "string"
    if literal is None:
        return "null"
    raise ValueError(f"unsupported literal {literal!r}: use a number, string, boolean or null")


def coerce(value: Any, kind: str, path: str) -> Any:
    if kind == "number":
        return as_number(value, path)
    if kind == "string":
        return as_string(value, path)
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeMismatch(path, "a boolean", value)
        return value
    if value is not None:
        raise TypeMismatch(path, "null", value)
    return None


def literal_value(literal: Any, kind: str) -> Any:
    if kind != "number":
        return literal
    return Decimal(repr(literal)) if isinstance(literal, float) else Decimal(literal)


@dataclass(frozen=True)
class Condition:
    """One compiled comparison: `<path> <op> <operand>`."""

    path: tuple[str, ...]
    op: str  # the comparison, without the case-insensitive `i`
    operand: Any  # case-folded when `fold`
    kind: str
    pattern: re.Pattern[str] | None = None
    fold: bool = False  # compare strings case-insensitively (Unicode case folding)

    @cached_property
    def dotted(self) -> str:
        return ".".join(self.path)

    def matches(self, args: Mapping[str, Any]) -> bool:
        value = lookup(args, self.path, self.dotted)
        if value is ABSENT:
            return False
        path = self.dotted
        if self.fold:
            value = as_string(value, path).casefold()
        if self.op in NUMERIC_OPS:
            # An int compares exactly with a Decimal operand; everything else is converted.
            number = value if type(value) is int else as_number(value, path)
            if self.op == "gt":
                return bool(number > self.operand)
            if self.op == "gte":
                return bool(number >= self.operand)
            if self.op == "lt":
                return bool(number < self.operand)
            return bool(number <= self.operand)
        if self.op in STRING_OPS:
            text = as_string(value, path)
            if self.op == "prefix":
                return text.startswith(self.operand)
            if self.op == "glob":
                return fnmatch.fnmatchcase(text, self.operand)
            assert self.pattern is not None
            return self.pattern.search(text) is not None
        if self.op in SET_OPS:
            member = coerce(value, self.kind, path) in self.operand
            return member if self.op == "in" else not member
        equal = coerce(value, self.kind, path) == self.operand
        return equal if self.op == "eq" else not equal

    def describe(self) -> Any:
        """A JSON-able form for the policy hash (order and spelling independent)."""
        operand: Any = self.operand
        if isinstance(operand, Decimal):
            operand = str(operand)
        elif isinstance(operand, frozenset):
            operand = sorted(str(item) for item in operand)
        op = f"i{self.op}" if self.fold else self.op
        return {"path": list(self.path), "op": op, "kind": self.kind, "operand": operand}


def compile_condition(dotted: str, op: str, operand: Any) -> Condition:
    """Build a condition from policy text. Raises ValueError with a readable message."""
    if not dotted or any(not part for part in dotted.split(".")):
        raise ValueError(f"invalid argument path {dotted!r}")
    path = tuple(dotted.split("."))
    if op not in ALL_OPS:
        raise ValueError(f"unknown operator {op!r}; use one of {', '.join(ALL_OPS)}")
    if op in FOLDING_OPS:
        return _folding(dotted, path, op, operand)
    if op in NUMERIC_OPS:
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise ValueError(f"{dotted}_{op} needs a number, got {operand!r}")
        return Condition(path, op, literal_value(operand, "number"), "number")
    if op in STRING_OPS:
        if not isinstance(operand, str):
            raise ValueError(f"{dotted}_{op} needs a string, got {operand!r}")
        pattern = None
        if op == "regex":
            try:
                pattern = re.compile(operand)
            except re.error as exc:
                raise ValueError(f"bad regex {operand!r} for {dotted}: {exc}") from None
        return Condition(path, op, operand, "string", pattern)
    if op in SET_OPS:
        if not isinstance(operand, list) or not operand:
            raise ValueError(f"{dotted}_{op} needs a non-empty list, got {operand!r}")
        kinds = {kind_of(item) for item in operand}
        if len(kinds) != 1:
            raise ValueError(f"{dotted}_{op}: list mixes types {sorted(kinds)}")
        kind = kinds.pop()
        return Condition(path, op, frozenset(literal_value(i, kind) for i in operand), kind)
    kind = kind_of(operand)
    return Condition(path, op, literal_value(operand, kind), kind)


def _folding(dotted: str, path: tuple[str, ...], op: str, operand: Any) -> Condition:
    """A case-insensitive comparison: string operands only, folded once here."""
    base = FOLDING_OPS[op]
    items = operand if base in SET_OPS and isinstance(operand, list) else [operand]
    if not items or not all(isinstance(item, str) for item in items):
        wanted = "a non-empty list of strings" if base in SET_OPS else "a string"
        raise ValueError(f"{dotted}_{op} compares strings: it needs {wanted}, got {operand!r}")
    if base in SET_OPS and not isinstance(operand, list):
        raise ValueError(f"{dotted}_{op} needs a non-empty list, got {operand!r}")
    folded = [item.casefold() for item in items]
    value: Any = frozenset(folded) if base in SET_OPS else folded[0]
    return Condition(path, base, value, "string", fold=True)


def split_shorthand(key: str) -> tuple[str, str]:
    """`amount_lte` -> ("amount", "lte"); `currency` -> ("currency", "eq")."""
    for suffix in SHORTHAND_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix[1:]
    return key, "eq"
