"""The compiled form of a policy: plain data, ready to evaluate without parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from kubewrit.webhook.policy.conditions import Condition
from kubewrit.webhook.policy.history import Recent
from kubewrit.webhook.policy.limits import Limit


class Effect(StrEnum):
    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"

    @property
    def strictness(self) -> int:
        return {"allow": 0, "require_approval": 1, "deny": 2}[self.value]


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


OTHER_CACHE_SIZE = 4096  # tools outside the index whose candidate rules are remembered
RISK_LEVELS = ("low", "medium", "high", "critical")
ESCALATING_RISK = frozenset({"high", "critical"})


def risk_rank(level: str) -> int:
    return RISK_LEVELS.index(level)


@dataclass(frozen=True)
class Matcher:
    """Everything a rule's `match` (or a risk rule's `when`) says, compiled."""

    tools: tuple[str, ...] = ()  # exact names or globs; empty means any tool
    operations: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    cel: Any = None  # a compiled CEL program (kubewrit.webhook.policy.cel.Expression)
    after: Recent | None = None  # matches only after one of these tools was permitted

    @property
    def recent(self) -> tuple[Recent, ...]:
        """The history facts this matcher reads."""
        asked = (self.after,) if self.after is not None else ()
        return asked + (self.cel.recent if self.cel is not None else ())

    def admits_tool(self, tool: str) -> bool:
        """Whether `tool` is one of the tools this matcher names (exactly or by glob)."""
        return not self.tools or any(fnmatchcase(tool, pattern) for pattern in self.tools)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "tools": sorted(self.tools),
            "operations": sorted(self.operations),
            "conditions": sorted(
                (c.describe() for c in self.conditions), key=lambda d: repr(sorted(d.items()))
            ),
            "cel": self.cel.source if self.cel is not None else None,
        }
        if self.after is not None:  # only when used: older policies keep their hashes
            described["after"] = self.after.describe()
        return described


@dataclass(frozen=True)
class Rule:
    id: str
    effect: Effect
    matcher: Matcher
    message: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "effect": self.effect.value,
            "match": self.matcher.describe(),
            "message": self.message,
        }


@dataclass(frozen=True)
class RiskRule:
    name: str
    level: str
    matcher: Matcher

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "when": self.matcher.describe()}


@dataclass(frozen=True)
class Approvers:
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def admits(self, user: str, groups: tuple[str, ...] | list[str] = ()) -> bool:
        return user in self.users or any(group in self.groups for group in groups)


@dataclass(frozen=True)
class Policy:
    """One compiled policy. `hash` covers content only, never file names or times."""

    name: str
    source: str
    agents: tuple[str, ...]
    mode: Mode
    rules: tuple[Rule, ...]
    risk_rules: tuple[RiskRule, ...]
    approvers: Approvers
    hash: str
    namespace: str | None = None
    # The rule index (see compiler.index_rules): for every tool a rule names exactly, all
    # the rules that can match it, in policy order; the rules with a tool glob or no tool
    # serve every other tool. Derived from `rules`, so neither is compared or hashed.
    by_tool: dict[str, tuple[Rule, ...]] = field(default_factory=dict, compare=False, repr=False)
    other_rules: tuple[Rule, ...] = field(default=(), compare=False, repr=False)
    _other_cache: dict[str, tuple[Rule, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    limits: tuple[Limit, ...] = ()
    # Every history fact a rule, risk rule or limit of this policy reads.
    recent: tuple[Recent, ...] = ()

    def selects(self, agent: str, namespace: str | None = None) -> bool:
        """A namespaced policy (Kubernetes) selects only agents of its own namespace."""
        if self.namespace != namespace:
            return False
        return any(fnmatchcase(agent, pattern) for pattern in self.agents)

    def candidate_rules(self, tool: str) -> tuple[Rule, ...]:
        """Every rule that can match `tool`, in policy order (first match wins).

        A subset of `rules` that keeps their order and leaves out only rules whose tool
        patterns cannot match `tool`; the evaluator still checks each candidate in full.
        """
        found = self.by_tool.get(tool)
        if found is not None:
            return found
        cached = self._other_cache.get(tool)
        if cached is None:
            cached = tuple(rule for rule in self.other_rules if rule.matcher.admits_tool(tool))
            if len(self._other_cache) >= OTHER_CACHE_SIZE:
                self._other_cache.clear()
            self._other_cache[tool] = cached
        return cached
