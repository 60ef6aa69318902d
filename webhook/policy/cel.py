"""CEL `when:` expressions, compiled once at policy load.

The activation exposes `args`, `tool`, `operation` and `agent`. An evaluation
error (a missing key, a string compared with a number) is a TypeMismatch: the
decision is DENY, never a quiet non-match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from kubewrit.webhook.policy.conditions import TypeMismatch

_ENVIRONMENT = celpy.Environment()


@dataclass(frozen=True)
class Expression:
    source: str
    program: Any

    def matches(
        self, agent: str, tool: str, operation: str | None, args: Mapping[str, Any]
    ) -> bool:
        activation = {
            "args": celpy.json_to_cel(dict(args)),
            "tool": celpy.celtypes.StringType(tool),
            "operation": celpy.celtypes.StringType(operation or ""),
            "agent": celpy.celtypes.StringType(agent),
        }
        try:
            result = self.program.evaluate(activation)
        except celpy.CELEvalError as exc:
            raise TypeMismatch(
                f"when: {self.source}", "an expression that evaluates", exc.args[0]
            ) from None
        if not isinstance(result, celpy.celtypes.BoolType):
            raise TypeMismatch(f"when: {self.source}", "a boolean result", result)
        return bool(result)


def compile_expression(source: str) -> Expression:
    """Parse a CEL expression. Raises ValueError naming the syntax problem."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError("when: must be a non-empty CEL expression string")
    try:
        ast = _ENVIRONMENT.compile(source)
        program = _ENVIRONMENT.program(ast)
    except celpy.CELParseError as exc:
        lines = str(exc).splitlines()
        column = lines[1].find("^") + 1 if len(lines) > 1 else 0
        where = f" at column {column}" if column > 0 else ""
        raise ValueError(f"bad CEL expression {source!r}: syntax error{where}") from None
    return Expression(source, program)
