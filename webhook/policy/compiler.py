"""Policy documents in, compiled Policy objects out, or an error a person can act on.

This is the one validator: the CLI, the standalone server and the Kubernetes
admission webhook all call `compile_document`, so a policy that `kubewrit check`
accepts is exactly a policy that `kubectl apply` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kubewrit.webhook import canonical
from kubewrit.webhook.policy import cel
from kubewrit.webhook.policy.conditions import Condition, compile_condition, split_shorthand
from kubewrit.webhook.policy.history import Recent, compile_after
from kubewrit.webhook.policy.limits import Limit, compile_limit
from kubewrit.webhook.policy.model import (
    RISK_LEVELS,
    Approvers,
    Effect,
    Matcher,
    Mode,
    Policy,
    RiskRule,
    Rule,
)
from kubewrit.webhook.policy.spelling import unknown_keys

POLICY_KEYS = ("name", "agents", "mode", "rules", "risk", "approvers", "limits")
MANIFEST_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
RULE_KEYS = ("id", "match", "when", "allow", "require_approval", "deny", "description", "reason")
RISK_KEYS = ("rules",)
RISK_RULE_KEYS = ("name", "when", "risk_level")
APPROVER_KEYS = ("users", "groups")
MATCH_RESERVED = ("tool", "operation", "args", "after")
RULE_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$")
GLOB_CHARS = set("*?[")


class PolicyError(ValueError):
    """An invalid policy: where it is, and what is wrong with it."""

    def __init__(self, source: str, location: str, problem: str) -> None:
        self.source = source
        self.location = location
        self.problem = problem
        where = f"{source}: {location}: " if location else f"{source}: "
        super().__init__(where + problem)


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a non-empty string or list of strings")
    return tuple(value)


def compile_matcher(match: Any, when: Any = None) -> Matcher:
    """Compile a `match` mapping (and an optional CEL `when`). Raises ValueError."""
    if match is None:
        match = {}
    if not isinstance(match, Mapping):
        raise ValueError("match must be a mapping of conditions")
    tools: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    conditions: list[Condition] = []
    after: Recent | None = None
    for key, operand in match.items():
        if not isinstance(key, str):
            raise ValueError(f"match key {key!r} must be a string")
        if key == "tool":
            tools = _string_list(operand, "match.tool")
            for tool in tools:
                if not GLOB_CHARS & set(tool):
                    canonical.normalize_tool(tool)
        elif key == "operation":
            operations = _string_list(operand, "match.operation")
        elif key == "after":
            after = compile_after(operand)
        elif key == "args":
            if not isinstance(operand, Mapping):
                raise ValueError("match.args must map argument paths to conditions")
            for path, spec in operand.items():
                if isinstance(spec, Mapping):
                    if not spec:
                        raise ValueError(f"match.args.{path} has no operators")
                    conditions.extend(
                        compile_condition(str(path), str(op), v) for op, v in spec.items()
                    )
                else:
                    conditions.append(compile_condition(str(path), "eq", spec))
        else:
            path, op = split_shorthand(key)
            conditions.append(compile_condition(path, op, operand))
    expression = cel.compile_expression(when) if when is not None else None
    return Matcher(tools, operations, tuple(conditions), expression, after)


def _entry(raw: Any, allowed: tuple[str, ...], shape: str) -> Mapping[str, Any]:
    """A rule or risk rule: a mapping with only the keys it may have."""
    if not isinstance(raw, Mapping):
        raise ValueError(shape)
    problem = unknown_keys(raw, allowed)
    if problem:
        raise ValueError(problem)
    return raw


def _identifier(value: Any, key: str) -> str:
    if not isinstance(value, str) or not RULE_ID.fullmatch(value):
        raise ValueError(f"{key} {value!r} must be 1-64 letters, digits, '-', '_' or '.'")
    return value


def _compile_rule(index: int, raw: Any, seen_ids: set[str]) -> Rule:
    raw = _entry(raw, RULE_KEYS, "a rule must be a mapping with `match` and one effect")
    rule_id = _identifier(raw.get("id", f"rule-{index}"), "id")
    if rule_id in seen_ids:
        raise ValueError(f"id {rule_id!r} is used by an earlier rule")
    seen_ids.add(rule_id)
    effects = [effect for effect in Effect if effect.value in raw]
    if not effects:
        raise ValueError("no effect: set exactly one of allow, require_approval, deny to true")
    if len(effects) > 1:
        names = " and ".join(effect.value for effect in effects)
        raise ValueError(f"two effects in one rule ({names}): set exactly one")
    effect = effects[0]
    if raw[effect.value] is not True:
        raise ValueError(
            f"{effect.value} must be true (to express the opposite, use another effect)"
        )
    for text_key in ("description", "reason"):
        if text_key in raw and not isinstance(raw[text_key], str):
            raise ValueError(f"{text_key} must be a string")
    message = raw.get("reason") or raw.get("description") or ""
    return Rule(rule_id, effect, compile_matcher(raw.get("match"), raw.get("when")), message)


def _compile_risk_rule(index: int, raw: Any) -> RiskRule:
    raw = _entry(
        raw, RISK_RULE_KEYS, "a risk rule must be a mapping with name, when and risk_level"
    )
    name = _identifier(raw.get("name", f"risk-{index}"), "name")
    level = raw.get("risk_level")
    if level not in RISK_LEVELS:
        raise ValueError(f"bad risk level {level!r}: use one of {', '.join(RISK_LEVELS)}")
    when = raw.get("when")
    if isinstance(when, str):
        matcher = compile_matcher(None, when)
    elif isinstance(when, Mapping):
        matcher = compile_matcher(when)
    else:
        raise ValueError("when must be a match mapping or a CEL expression string")
    return RiskRule(name, level, matcher)


def _index_by_tool(rules: tuple[Rule, ...]) -> tuple[dict[str, tuple[Rule, ...]], tuple[Rule, ...]]:
    """The per-tool rule index: (rules for each exactly named tool, rules with globs or no tool).

    Each exactly named tool gets every rule that can match it, the glob and tool-less
    rules included, in policy order, so first-match-wins is unchanged; any other tool
    is served from the glob and tool-less rules alone.
    """
    exact: dict[str, list[int]] = {}
    other: list[int] = []
    for position, rule in enumerate(rules):
        tools = rule.matcher.tools
        if not tools or any(GLOB_CHARS & set(tool) for tool in tools):
            other.append(position)
        for tool in tools:
            if not GLOB_CHARS & set(tool):
                exact.setdefault(tool, []).append(position)
    index = {}
    for tool, positions in exact.items():
        matching = [p for p in other if rules[p].matcher.admits_tool(tool)]
        index[tool] = tuple(rules[p] for p in sorted({*positions, *matching}))
    return index, tuple(rules[p] for p in other)


def split_manifest(document: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None, str | None]:
    """Accept either a bare policy or an `AgentPolicy` manifest; return (spec, name, namespace)."""
    if "kind" in document or "spec" in document:
        problem = unknown_keys(document, MANIFEST_KEYS)
        if problem:
            raise ValueError(problem)
        if document.get("kind") != "AgentPolicy":
            raise ValueError(f"kind {document.get('kind')!r} is not AgentPolicy")
        metadata = document.get("metadata") or {}
        spec = document.get("spec")
        if not isinstance(spec, Mapping):
            raise ValueError("spec must be a mapping")
        return spec, metadata.get("name"), metadata.get("namespace")
    return document, None, None


def compile_document(document: Any, source: str, default_name: str | None = None) -> Policy:
    """Validate and compile one policy document. Raises PolicyError."""
    if not isinstance(document, Mapping):
        raise PolicyError(source, "", "a policy must be a YAML mapping with `rules`")
    try:
        spec, manifest_name, namespace = split_manifest(document)
    except ValueError as exc:
        raise PolicyError(source, "", str(exc)) from None
    problem = unknown_keys(spec, POLICY_KEYS)
    if problem:
        raise PolicyError(source, "", problem)
    name = spec.get("name") or manifest_name or default_name or "policy"
    try:
        agents = _string_list(spec.get("agents", "*"), "agents")
    except ValueError as exc:
        raise PolicyError(source, "agents", str(exc)) from None
    try:
        mode = Mode(spec.get("mode", "enforce"))
    except ValueError:
        raise PolicyError(
            source, "mode", f"mode {spec.get('mode')!r} must be enforce or monitor"
        ) from None

    raw_rules = spec.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(source, "rules", "a policy needs a non-empty list of rules")
    rules = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules, start=1):
        label = f"rule {index}"
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
            label += f" ({raw['id']})"
        try:
            rules.append(_compile_rule(index, raw, seen))
        except ValueError as exc:
            raise PolicyError(source, label, str(exc)) from None

    risk_rules = []
    risk = spec.get("risk") or {}
    if not isinstance(risk, Mapping):
        raise PolicyError(source, "risk", "risk must be a mapping with `rules`")
    problem = unknown_keys(risk, RISK_KEYS)
    if problem:
        raise PolicyError(source, "risk", problem)
    raw_risk_rules = risk.get("rules") or []
    if not isinstance(raw_risk_rules, list):
        raise PolicyError(source, "risk.rules", "must be a list")
    for index, raw in enumerate(raw_risk_rules, start=1):
        label = f"risk rule {index}"
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            label += f" ({raw['name']})"
        try:
            risk_rules.append(_compile_risk_rule(index, raw))
        except ValueError as exc:
            raise PolicyError(source, label, str(exc)) from None

    approvers_raw = spec.get("approvers") or {}
    if not isinstance(approvers_raw, Mapping) or unknown_keys(approvers_raw, APPROVER_KEYS):
        raise PolicyError(source, "approvers", "approvers must be a mapping with users and groups")
    try:
        approvers = Approvers(
            users=_string_list(approvers_raw["users"], "approvers.users")
            if approvers_raw.get("users")
            else (),
            groups=_string_list(approvers_raw["groups"], "approvers.groups")
            if approvers_raw.get("groups")
            else (),
        )
    except ValueError as exc:
        raise PolicyError(source, "approvers", str(exc)) from None

    limits = _compile_limits(source, spec.get("limits"), name, namespace)

    frozen_rules = tuple(rules)
    frozen_risk = tuple(risk_rules)
    content: dict[str, Any] = {
        "agents": sorted(agents),
        "mode": mode.value,
        "rules": [rule.describe() for rule in frozen_rules],
        "risk": [rule.describe() for rule in frozen_risk],
        "approvers": {"users": sorted(approvers.users), "groups": sorted(approvers.groups)},
    }
    if limits:  # only when used: policies without limits keep their hashes
        content["limits"] = [limit.describe() for limit in limits]
    matchers = [r.matcher for r in frozen_rules] + [r.matcher for r in frozen_risk]
    recent = tuple(
        dict.fromkeys(q for m in matchers + [lim.matcher for lim in limits] for q in m.recent)
    )
    by_tool, other_rules = _index_by_tool(frozen_rules)
    return Policy(
        name=name,
        source=source,
        agents=agents,
        mode=mode,
        rules=frozen_rules,
        risk_rules=frozen_risk,
        approvers=approvers,
        hash="sha256:" + canonical.content_hash(content),
        namespace=namespace,
        by_tool=by_tool,
        other_rules=other_rules,
        limits=limits,
        recent=recent,
    )


def _compile_limits(source: str, raw: Any, policy: str, namespace: str | None) -> tuple[Limit, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PolicyError(source, "limits", "limits must be a list")
    limits: list[Limit] = []
    for index, entry in enumerate(raw, start=1):
        label = f"limit {index}"
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']})"
        try:
            if isinstance(entry, Mapping):
                _identifier(entry.get("name"), "name")
            limit = compile_limit(entry, policy, namespace, compile_matcher)
        except ValueError as exc:
            raise PolicyError(source, label, str(exc)) from None
        if any(limit.name == seen.name for seen in limits):
            raise PolicyError(source, label, f"name {limit.name!r} is used by an earlier limit")
        limits.append(limit)
    return tuple(limits)
