"""CEL `when:` expressions, compiled once at policy load.

The activation exposes `args`, `tool`, `operation`, `agent` and `history`. An
evaluation error (a missing key, a string compared with a number) is a
TypeMismatch: the decision is DENY, never a quiet non-match.

`history.count('read_inbox', '10m')` is how many `read_inbox` actions this agent was
permitted in the last ten minutes (`history.session_count` the same within the
action's session). Both arguments must be literal strings, so every history fact an
expression can read is known at compile time (`Expression.recent`) and looked up
before evaluation; any other use of `history` is a compile error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from kubewrit.webhook import canonical
from kubewrit.webhook.policy.conditions import TypeMismatch
from kubewrit.webhook.policy.history import NO_HISTORY, Facts, Recent, parse_window

_ENVIRONMENT = celpy.Environment()
HISTORY_CALLS = {"count": False, "session_count": True}  # method -> per session
STRING_LITERAL = re.compile(r"""^(?:'([^'\\]*)'|"([^"\\]*)")$""")


def _key(tool: str, window: int, per_session: bool) -> str:
    return json.dumps([tool, window, per_session])


def _history_function(per_session: bool) -> Any:
    def lookup(history: Any, tool: Any, window: Any) -> Any:
        seconds = parse_window(str(window))
        return history[celpy.celtypes.StringType(_key(str(tool), seconds, per_session))]

    return lookup


_FUNCTIONS = {method: _history_function(session) for method, session in HISTORY_CALLS.items()}


@dataclass(frozen=True)
class Expression:
    source: str
    program: Any
    recent: tuple[Recent, ...] = ()

    def matches(
        self,
        agent: str,
        tool: str,
        operation: str | None,
        args: Mapping[str, Any],
        facts: Facts = NO_HISTORY,
    ) -> bool:
        activation = {
            "args": celpy.json_to_cel(dict(args)),
            "tool": celpy.celtypes.StringType(tool),
            "operation": celpy.celtypes.StringType(operation or ""),
            "agent": celpy.celtypes.StringType(agent),
        }
        if self.recent:
            try:
                history = {
                    celpy.celtypes.StringType(
                        _key(q.tools[0], q.window, q.per_session)
                    ): celpy.celtypes.IntType(facts.count(q))
                    for q in self.recent
                }
            except LookupError as exc:
                raise TypeMismatch(f"when: {self.source}", "history", str(exc)) from None
            activation["history"] = celpy.celtypes.MapType(history)
        try:
            result = self.program.evaluate(activation)
        except celpy.CELEvalError as exc:
            raise TypeMismatch(
                f"when: {self.source}", "an expression that evaluates", exc.args[0]
            ) from None
        if not isinstance(result, celpy.celtypes.BoolType):
            raise TypeMismatch(f"when: {self.source}", "a boolean result", result)
        return bool(result)


def _history_questions(ast: Any) -> tuple[Recent, ...]:
    """Every `history.<method>('tool', 'window')` call, or ValueError for any other use."""
    found: list[Recent] = []
    calls = 0
    for node in ast.iter_subtrees():
        if node.data != "member_dot_arg":
            continue
        receiver, method = node.children[0], node.children[1]
        if [str(t) for t in receiver.scan_values(lambda _: True)] != ["history"]:
            continue
        calls += 1
        if str(method) not in HISTORY_CALLS:
            raise ValueError(
                f"history.{method} is unknown: use {', '.join(f'history.{m}' for m in HISTORY_CALLS)}"
            )
        arguments = node.children[2].children if len(node.children) > 2 else []
        literals = []
        for argument in arguments:
            tokens = [str(t) for t in argument.scan_values(lambda _: True)]
            matched = STRING_LITERAL.fullmatch(tokens[0]) if len(tokens) == 1 else None
            if matched is None:
                raise ValueError(f"history.{method} takes two literal strings: a tool and a window")
            literals.append(matched.group(1) if matched.group(1) is not None else matched.group(2))
        if len(literals) != 2:
            raise ValueError(f"history.{method} takes two literal strings: a tool and a window")
        tool, window = literals
        canonical.normalize_tool(tool)
        found.append(Recent((tool,), parse_window(window), HISTORY_CALLS[str(method)]))
    mentions = sum(
        1 for t in ast.scan_values(lambda t: getattr(t, "type", "") == "IDENT") if t == "history"
    )
    if mentions != calls:
        raise ValueError(
            "`history` can only be used as history.count(...) or history.session_count(...)"
        )
    return tuple(dict.fromkeys(found))


def compile_expression(source: str) -> Expression:
    """Parse a CEL expression. Raises ValueError naming the syntax problem."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError("when: must be a non-empty CEL expression string")
    try:
        ast = _ENVIRONMENT.compile(source)
        program = _ENVIRONMENT.program(ast, functions=_FUNCTIONS)
    except celpy.CELParseError as exc:
        lines = str(exc).splitlines()
        column = lines[1].find("^") + 1 if len(lines) > 1 else 0
        where = f" at column {column}" if column > 0 else ""
        raise ValueError(f"bad CEL expression {source!r}: syntax error{where}") from None
    return Expression(source, program, _history_questions(ast))
