"""Limits: how much of something an agent may be permitted within a sliding window.

A limit counts actions (`count`) or sums an argument (`sum: amount`) over the actions
it matches, per agent and optionally per tool, per session or per argument value
(`per: [args.customer_id]`), and says what happens to the action that would take it
past `max`: `require_approval` or `deny`. This module is pure: it says which limits an
action draws on and how much (`demands`); `budget.Budgets` keeps the counts.

Only authorized actions count (a PERMIT, or the PERMIT recorded when an approval is
granted). An amount is read with the same strict typing as `amount_*` conditions: a
value that cannot be read is a TypeMismatch (the decision is DENY `type_mismatch`),
never 0; so is an absent `per` argument, which would otherwise pool every such action
into one bucket an attacker could steer around.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kubewrit.webhook.canonical import Action
from kubewrit.webhook.policy.conditions import ABSENT, TypeMismatch, as_number, lookup
from kubewrit.webhook.policy.history import format_window, parse_window
from kubewrit.webhook.policy.spelling import unknown_keys

if TYPE_CHECKING:
    from kubewrit.webhook.policy.model import Matcher, Policy

LIMIT_KEYS = (
    "name",
    "match",
    "when",
    "count",
    "sum",
    "max",
    "window",
    "per",
    "exceeded",
    "message",
)
EXCEEDED_EFFECTS = ("require_approval", "deny")


@dataclass(frozen=True)
class Limit:
    policy: str
    name: str
    matcher: Matcher
    bound: Decimal
    window: int  # seconds
    measure: tuple[str, ...] = ()  # the summed argument's path; empty counts actions
    per: tuple[str, ...] = ()  # "tool", "session", "args.<path>" (the agent always)
    exceeded: str = "deny"  # require_approval | deny
    message: str = ""
    namespace: str | None = None

    @property
    def id(self) -> str:
        """Unique across policies (a policy's name is unique in its namespace)."""
        return "/".join(p for p in (self.namespace, self.policy, self.name) if p)

    @property
    def denies(self) -> bool:
        return self.exceeded == "deny"

    @property
    def unit(self) -> str:
        return "sum:" + ".".join(self.measure) if self.measure else "count"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "match": self.matcher.describe(),
            "measure": self.unit,
            "max": str(self.bound),
            "window": format_window(self.window),
            "per": sorted(self.per),
            "exceeded": self.exceeded,
            "message": self.message,
        }

    def amount(self, action: Action) -> Decimal:
        if not self.measure:
            return Decimal(1)
        dotted = ".".join(self.measure)
        value = lookup(action.args, self.measure, dotted)
        if value is ABSENT:
            raise TypeMismatch(dotted, f"a number (limit {self.id} sums it)", None)
        amount = as_number(value, dotted)
        if amount < 0:
            raise TypeMismatch(dotted, f"a non-negative number (limit {self.id} sums it)", value)
        return amount

    def scope(self, action: Action) -> str:
        """The bucket this action counts in: canonical JSON, so no value can forge another."""
        agent = f"{action.namespace}/{action.agent}" if action.namespace else action.agent
        parts: list[list[str]] = [["agent", agent]]
        for dimension in self.per:  # sorted when compiled
            parts.append([dimension, _scope_value(dimension, action, self.id)])
        return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


def _scope_value(dimension: str, action: Action, limit_id: str) -> str:
    if dimension == "tool":
        return action.tool
    if dimension == "session":
        session = action.context.get("session")
        if session is None:
            return ""
        if not isinstance(session, str):
            raise TypeMismatch("context.session", f"a string (limit {limit_id})", session)
        return session
    path = tuple(dimension.split(".")[1:])
    value = lookup(action.args, path, ".".join(path))
    if value is ABSENT or value is None:
        raise TypeMismatch(".".join(path), f"a value to count per (limit {limit_id})", None)
    if isinstance(value, str):
        return value
    return str(as_number(value, ".".join(path)).normalize())


@dataclass(frozen=True)
class Demand:
    """What deciding one action would draw from one limit."""

    limit: Limit
    scope: str
    amount: Decimal


def demands(policies: Sequence[Policy], action: Action, matches: Any) -> list[Demand]:
    """Every enforcing policy's limits that this action draws on, in a stable order.

    `matches(matcher, action)` is the evaluator's matcher (passed in to keep this module
    below the evaluator). Raises TypeMismatch when an amount or scope cannot be read.
    """
    from kubewrit.webhook.policy.model import Mode

    found: list[Demand] = []
    if not any(policy.limits for policy in policies):
        return found
    for policy in sorted(policies, key=lambda p: p.name):
        if policy.mode is not Mode.ENFORCE or not policy.selects(action.agent, action.namespace):
            continue
        for limit in policy.limits:
            if matches(limit.matcher, action):
                found.append(Demand(limit, limit.scope(action), limit.amount(action)))
    return found


def compile_limit(raw: Any, policy: str, namespace: str | None, compile_matcher: Any) -> Limit:
    """One entry of `limits:`. Raises ValueError naming what is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError("a limit must be a mapping with name, max and window")
    problem = unknown_keys(raw, LIMIT_KEYS)
    if problem:
        raise ValueError(problem)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a limit needs a name")
    if "count" in raw and "sum" in raw:
        raise ValueError("a limit either counts actions (count: true) or sums an argument (sum)")
    if "count" in raw and raw["count"] is not True:
        raise ValueError("count must be true (or omitted); to sum an argument use sum: <path>")
    measure: tuple[str, ...] = ()
    if "sum" in raw:
        path = raw["sum"]
        if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
            raise ValueError(f"sum {path!r} must be an argument path like amount or order.total")
        measure = tuple(path.removeprefix("args.").split("."))
    bound = raw.get("max")
    if isinstance(bound, bool) or not isinstance(bound, int | float) or bound < 0:
        raise ValueError(f"max {bound!r} must be a non-negative number")
    window = parse_window(raw.get("window"))
    per_raw = raw.get("per", [])
    if isinstance(per_raw, str):
        per_raw = [per_raw]
    if not isinstance(per_raw, list):
        raise ValueError("per must be a list of tool, session or args.<path>")
    per: list[str] = []
    for item in per_raw:
        if item == "agent":
            continue  # always
        argument = isinstance(item, str) and item.startswith("args.")
        if item in ("tool", "session") or (argument and all(item.split(".")[1:])):
            per.append(item)
        else:
            raise ValueError(f"per {item!r}: use tool, session or args.<path>")
    exceeded = raw.get("exceeded", "deny")
    if exceeded not in EXCEEDED_EFFECTS:
        raise ValueError(f"exceeded {exceeded!r} must be require_approval or deny")
    message = raw.get("message", "")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    return Limit(
        policy=policy,
        name=name,
        matcher=compile_matcher(raw.get("match"), raw.get("when")),
        bound=Decimal(repr(bound)) if isinstance(bound, float) else Decimal(bound),
        window=window,
        measure=measure,
        per=tuple(sorted(set(per))),
        exceeded=exceeded,
        message=message,
        namespace=namespace,
    )
