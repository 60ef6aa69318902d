"""The per-tool rule index never changes which rule wins: first match in policy order.

Rules naming exact tools are indexed; rules with a tool glob or no tool at all are
merged into every tool's candidates in their policy position. These tests pin the
ordering semantics, and compare the index with a plain scan over many random policies.
"""

from __future__ import annotations

import random
from fnmatch import fnmatchcase

import pytest
from kubewrit.webhook import canonical, policy
from kubewrit.webhook.decision import Decision


def compile_text(text: str) -> policy.Policy:
    (compiled,) = policy.parse_text(text, "p.yaml")
    return compiled


def winner(compiled: policy.Policy, tool: str, **args: object) -> str:
    return policy.evaluate([compiled], canonical.build_action("a", tool, args)).rule_id


GLOB_FIRST = """
agents: ["*"]
rules:
  - {id: refunds-glob, match: {tool: "refund_*"}, deny: true}
  - {id: refund-small, match: {tool: refund_small}, allow: true}
  - {id: any-tool, match: {amount_gt: 5}, deny: true}
  - {id: email, match: {tool: send_email}, allow: true}
  - {id: mixed, match: {tool: [lookup, "db_?"]}, allow: true}
"""


@pytest.mark.parametrize(
    ("tool", "args", "rule"),
    [
        ("refund_small", {}, "p/refunds-glob"),  # a glob rule before an exact rule wins
        ("refund_other", {}, "p/refunds-glob"),  # a tool only a glob names
        ("send_email", {"amount": 9}, "p/any-tool"),  # a tool-less rule before an exact one
        ("send_email", {"amount": 1}, "p/email"),  # ...which does not match: the exact one
        ("lookup", {}, "p/mixed"),  # a rule naming an exact tool and a glob, by either
        ("db_a", {}, "p/mixed"),
        ("db_ab", {}, "default-deny"),  # the glob does not match: nothing does
        ("unknown", {"amount": 6}, "p/any-tool"),  # an unindexed tool still sees tool-less rules
        ("unknown", {}, "default-deny"),
    ],
)
def test_first_match_in_policy_order_with_globs(tool: str, args: dict, rule: str) -> None:
    assert winner(compile_text(GLOB_FIRST), tool, **args) == rule


def test_an_exact_rule_before_a_glob_rule_wins() -> None:
    compiled = compile_text("""
agents: ["*"]
rules:
  - {id: exact, match: {tool: refund_small}, allow: true}
  - {id: glob, match: {tool: "refund_*"}, deny: true}
""")
    assert winner(compiled, "refund_small") == "p/exact"
    assert winner(compiled, "refund_large") == "p/glob"


def test_candidates_keep_policy_order_and_leave_out_only_impossible_rules() -> None:
    compiled = compile_text(GLOB_FIRST)
    ids = [r.id for r in compiled.candidate_rules("refund_small")]
    assert ids == ["refunds-glob", "refund-small", "any-tool"]
    assert [r.id for r in compiled.candidate_rules("db_x")] == ["any-tool", "mixed"]
    assert [r.id for r in compiled.candidate_rules("db_x")] == ["any-tool", "mixed"]  # cached


def test_a_glob_rule_that_denies_is_not_skipped_for_an_indexed_tool() -> None:
    compiled = compile_text("""
agents: ["*"]
rules:
  - {id: block-prod, match: {tool: "*_prod"}, deny: true}
  - {id: deploy, match: {tool: [deploy_prod, deploy_dev]}, allow: true}
""")
    verdict = policy.evaluate([compiled], canonical.build_action("a", "deploy_prod", {}))
    assert (verdict.decision, verdict.rule_id) == (Decision.DENY, "p/block-prod")
    assert winner(compiled, "deploy_dev") == "p/deploy"


TOOLS = ["t0", "t1", "t2", "tx", "ta_1", "tb_2", "other"]
PATTERNS = ["t?", "t*", "ta_*", "*_2", "[ab]*", "o*", "t[0-1]"]


def random_rule(rng: random.Random, index: int) -> str:
    choice = rng.random()
    if choice < 0.5:
        tools = rng.sample(TOOLS, rng.randint(1, 2))
    elif choice < 0.85:
        tools = rng.sample(TOOLS + PATTERNS, rng.randint(1, 2))
    else:
        tools = []
    match = {"amount_gt": rng.randint(0, 10)} if rng.random() < 0.6 else {}
    if tools:
        match["tool"] = tools
    effect = rng.choice(["allow: true", "deny: true"])
    return f"  - {{id: r{index}, match: {match!r}, {effect}}}"


def scan(compiled: policy.Policy, tool: str, amount: int) -> str:
    """The rule a plain scan in policy order finds (what the index must reproduce)."""
    for rule in compiled.rules:
        tools_ok = not rule.matcher.tools or any(fnmatchcase(tool, t) for t in rule.matcher.tools)
        amount_ok = all(c.matches({"amount": amount}) for c in rule.matcher.conditions)
        if tools_ok and amount_ok:
            return f"p/{rule.id}"
    return "default-deny"


@pytest.mark.parametrize("seed", range(40))
def test_index_agrees_with_a_plain_scan(seed: int) -> None:
    rng = random.Random(seed)
    rules = "\n".join(random_rule(rng, i) for i in range(rng.randint(1, 12)))
    compiled = compile_text(f'agents: ["*"]\nrules:\n{rules}\n')
    for tool in [*TOOLS, "zzz", "ta_", "b"]:
        for amount in (0, 5, 11):
            assert winner(compiled, tool, amount=amount) == scan(compiled, tool, amount), rules
