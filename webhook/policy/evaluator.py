"""Evaluation: first match within a policy, strictest across policies, default deny.

Risk is computed separately and can only make an answer stricter: high or
critical risk turns allow into require_approval, and never touches a deny.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from kubewrit.webhook import canonical
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.decision import DEFAULT_DENY_RULE, Decision, Reason, Verdict
from kubewrit.webhook.policy.conditions import TypeMismatch
from kubewrit.webhook.policy.history import NO_HISTORY, Facts, Recent
from kubewrit.webhook.policy.model import (
    ESCALATING_RISK,
    Effect,
    Matcher,
    Mode,
    Policy,
    Rule,
    risk_rank,
)

EFFECT_DECISION = {
    Effect.ALLOW: (Decision.PERMIT, Reason.RULE_ALLOW),
    Effect.REQUIRE_APPROVAL: (Decision.DEFER, Reason.APPROVAL_REQUIRED),
    Effect.DENY: (Decision.DENY, Reason.RULE_DENY),
}


class RuleTypeMismatch(Exception):
    def __init__(self, rule_id: str, policy: Policy, cause: TypeMismatch) -> None:
        super().__init__(str(cause))
        self.rule_id = rule_id
        self.policy = policy


@dataclass(frozen=True)
class Match:
    policy: Policy
    rule: Rule


def matcher_matches(matcher: Matcher, action: Action, facts: Facts = NO_HISTORY) -> bool:
    """All conditions are evaluated (no short-circuit) so a wrong type is never hidden."""
    if matcher.tools and not any(fnmatchcase(action.tool, tool) for tool in matcher.tools):
        return False
    if matcher.operations and action.operation not in matcher.operations:
        return False
    results = [condition.matches(action.args) for condition in matcher.conditions]
    if matcher.cel is not None:
        results.append(
            matcher.cel.matches(action.agent, action.tool, action.operation, action.args, facts)
        )
    if matcher.after is not None:
        try:
            results.append(facts.count(matcher.after) > 0)
        except LookupError as exc:
            raise TypeMismatch("after", "history", str(exc)) from None
    return all(results)


def history_needed(policies: Sequence[Policy], action: Action) -> tuple[Recent, ...]:
    """The history facts evaluating `action` reads: look these up, then evaluate."""
    return tuple(
        dict.fromkeys(
            question
            for p in policies
            if p.recent and p.selects(action.agent, action.namespace)
            for question in p.recent
        )
    )


def first_match(policy: Policy, action: Action, facts: Facts = NO_HISTORY) -> Rule | None:
    for rule in policy.candidate_rules(action.tool):
        try:
            if matcher_matches(rule.matcher, action, facts):
                return rule
        except TypeMismatch as exc:
            raise RuleTypeMismatch(f"{policy.name}/{rule.id}", policy, exc) from None
    return None


def risk_level(
    policies: Sequence[Policy], action: Action, facts: Facts = NO_HISTORY
) -> tuple[str, str | None]:
    """Highest matching risk level across policies, and the risk rule that set it."""
    level, source = "low", None
    for policy in policies:
        for risk_rule in policy.risk_rules:
            try:
                matched = matcher_matches(risk_rule.matcher, action, facts)
            except TypeMismatch as exc:
                raise RuleTypeMismatch(f"{policy.name}/{risk_rule.name}", policy, exc) from None
            if matched and risk_rank(risk_rule.level) > risk_rank(level):
                level, source = risk_rule.level, f"{policy.name}/{risk_rule.name}"
    return level, source


def set_hash(policies: Sequence[Policy]) -> str:
    """Identifies the exact set of policies consulted (for default-deny records)."""
    if len(policies) == 1:
        return policies[0].hash
    return "sha256:" + canonical.content_hash(sorted(policy.hash for policy in policies))


def _combine(policies: Sequence[Policy], action: Action, facts: Facts) -> Verdict:
    try:
        matches = [
            Match(policy, rule)
            for policy in policies
            if (rule := first_match(policy, action, facts))
        ]
        risk, risk_source = risk_level(policies, action, facts)
    except RuleTypeMismatch as exc:
        return Verdict(
            Decision.DENY,
            Reason.TYPE_MISMATCH,
            exc.rule_id,
            "low",
            f"{exc}: a value of the wrong type is denied, never skipped",
            exc.policy.name,
            exc.policy.hash,
        )
    if not matches:
        return Verdict(
            Decision.DENY,
            Reason.DEFAULT_DENY,
            DEFAULT_DENY_RULE,
            risk,
            f"no rule matches tool {action.tool!r} for agent {action.agent!r}",
            None,
            set_hash(policies),
            risk_rule=risk_source,
        )
    strictest = max(matches, key=lambda m: m.rule.effect.strictness)
    decision, reason = EFFECT_DECISION[strictest.rule.effect]
    message = strictest.rule.message
    if decision is Decision.PERMIT and risk in ESCALATING_RISK:
        decision, reason = Decision.DEFER, Reason.RISK_ESCALATION
        message = f"risk {risk} ({risk_source}) requires approval" + (
            f"; {message}" if message else ""
        )
    return Verdict(
        decision,
        reason,
        f"{strictest.policy.name}/{strictest.rule.id}",
        risk,
        message,
        strictest.policy.name,
        strictest.policy.hash,
        risk_rule=risk_source,
        holders=tuple(sorted({m.policy.name for m in matches})),
    )


def evaluate(policies: Sequence[Policy], action: Action, facts: Facts = NO_HISTORY) -> Verdict:
    """Decide one action against every policy that selects its agent.

    Only enforcing policies decide. Monitor-mode policies are evaluated beside them and
    their verdict is attached (`monitored`) and recorded, but never changes the
    decision: a monitor policy cannot turn enforcement's DENY (a default deny included)
    into a PERMIT, so anyone able to create one cannot weaken enforcement.
    """
    selecting = sorted(
        (p for p in policies if p.selects(action.agent, action.namespace)), key=lambda p: p.name
    )
    enforcing = [p for p in selecting if p.mode is Mode.ENFORCE]
    monitoring = [p for p in selecting if p.mode is Mode.MONITOR]
    verdict = _combine(enforcing, action, facts)
    if monitoring:
        verdict = verdict.but(monitored=_combine(monitoring, action, facts))
    return verdict
