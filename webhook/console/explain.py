"""Why the playground's action got its decision: every rule's conditions, matched or not.

The decision itself always comes from `policy.evaluate` (the engine the server uses);
this module only walks the same compiled rules once more to show a person which
condition held and which failed, and writes nothing anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from kubewrit.webhook.canonical import Action
from kubewrit.webhook.policy.conditions import ABSENT, Condition, TypeMismatch, lookup
from kubewrit.webhook.policy.history import no_history_for
from kubewrit.webhook.policy.model import Matcher, Policy

OPERATORS = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": "in",
    "not_in": "not in",
    "prefix": "starts with",
    "glob": "matches glob",
    "regex": "matches regex",
}


@dataclass(frozen=True)
class Check:
    """One condition of a rule and how it came out for this action."""

    text: str
    outcome: str  # matched | failed | absent | type_mismatch | skipped
    detail: str = ""


@dataclass(frozen=True)
class RuleTrace:
    label: str  # the rule id, or the risk rule's name and level
    effect: str
    checks: tuple[Check, ...]
    matched: bool


@dataclass(frozen=True)
class PolicyTrace:
    name: str
    hash: str
    mode: str
    rules: tuple[RuleTrace, ...]
    risk_rules: tuple[RuleTrace, ...]


@dataclass
class Explanation:
    selecting: list[PolicyTrace] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # policies that do not select this agent


def operand_text(condition: Condition) -> str:
    operand: Any = condition.describe()["operand"]
    if isinstance(operand, list):
        return "[" + ", ".join(str(item) for item in operand) + "]"
    return str(operand)


def condition_text(condition: Condition) -> str:
    return (
        f"{condition.dotted} {OPERATORS.get(condition.op, condition.op)} {operand_text(condition)}"
    )


def check_condition(condition: Condition, action: Action) -> Check:
    text = condition_text(condition)
    try:
        if lookup(action.args, condition.path, condition.dotted) is ABSENT:
            return Check(text, "absent", f"argument {condition.dotted!r} is not in the call")
        matched = condition.matches(action.args)
    except TypeMismatch as exc:
        return Check(text, "type_mismatch", str(exc))
    return Check(text, "matched" if matched else "failed")


def trace_matcher(matcher: Matcher, action: Action) -> tuple[tuple[Check, ...], bool]:
    checks: list[Check] = []
    if matcher.tools:
        tool_ok = any(fnmatchcase(action.tool, tool) for tool in matcher.tools)
        checks.append(
            Check(f"tool is {' or '.join(matcher.tools)}", "matched" if tool_ok else "failed")
        )
    if matcher.operations:
        op_ok = action.operation in matcher.operations
        checks.append(
            Check(
                f"operation is {' or '.join(matcher.operations)}",
                "matched" if op_ok else "failed",
            )
        )
    if any(c.outcome == "failed" for c in checks):
        # The engine stops at a tool or operation that differs: nothing else is evaluated.
        skipped = [Check(condition_text(c), "skipped") for c in matcher.conditions]
        if matcher.cel is not None:
            skipped.append(Check(f"when: {matcher.cel.source}", "skipped"))
        return (*checks, *skipped), False
    checks.extend(check_condition(c, action) for c in matcher.conditions)
    if matcher.cel is not None:
        try:
            result = matcher.cel.matches(
                action.agent,
                action.tool,
                action.operation,
                action.args,
                no_history_for(matcher.recent),
            )
            checks.append(Check(f"when: {matcher.cel.source}", "matched" if result else "failed"))
        except TypeMismatch as exc:
            checks.append(Check(f"when: {matcher.cel.source}", "type_mismatch", str(exc)))
    if matcher.after is not None:
        after = matcher.after.describe()
        checks.append(
            Check(
                f"after {' or '.join(after['tools'])} within {after['within']}",
                "failed",
                "a preview knows no history: on the server this depends on what the agent "
                "was permitted recently",
            )
        )
    return tuple(checks), all(c.outcome == "matched" for c in checks)


def explain(policies: Sequence[Policy], action: Action) -> Explanation:
    """Each selecting policy's rules in order, up to and including the first match."""
    explanation = Explanation()
    for policy in sorted(policies, key=lambda p: p.name):
        if not policy.selects(action.agent, action.namespace):
            explanation.ignored.append(policy.name)
            continue
        rules: list[RuleTrace] = []
        for rule in policy.rules:
            checks, matched = trace_matcher(rule.matcher, action)
            rules.append(RuleTrace(rule.id, rule.effect.value, checks, matched))
            if matched:
                break  # the first matching rule of a policy decides for it
        risk_rules = []
        for risk_rule in policy.risk_rules:
            checks, matched = trace_matcher(risk_rule.matcher, action)
            risk_rules.append(
                RuleTrace(f"{risk_rule.name}", f"risk {risk_rule.level}", checks, matched)
            )
        explanation.selecting.append(
            PolicyTrace(
                policy.name, policy.hash, policy.mode.value, tuple(rules), tuple(risk_rules)
            )
        )
    return explanation
