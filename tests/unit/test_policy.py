from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from kubewrit.webhook import canonical, policy
from kubewrit.webhook.decision import Decision, Reason

REPO = Path(__file__).resolve().parents[2]
WALKTHROUGH = REPO / "examples" / "policies" / "support-agent.yaml"


def compile_text(text: str, name: str = "p.yaml") -> list[policy.Policy]:
    return policy.parse_text(text, name)


def decide(policies, tool="process_refund", agent="support-agent", **args):
    return policy.evaluate(policies, canonical.build_action(agent, tool, args))


@pytest.fixture(scope="module")
def walkthrough() -> list[policy.Policy]:
    return policy.load_paths([WALKTHROUGH])


@pytest.mark.parametrize(
    ("amount", "decision", "rule"),
    [
        (45, Decision.PERMIT, "small-refunds"),
        (150, Decision.PERMIT, "small-refunds"),
        (340, Decision.DEFER, "mid-range-refunds"),
        (600, Decision.DEFER, "mid-range-refunds"),
        (1000, Decision.DEFER, "mid-range-refunds"),
        (1200, Decision.DENY, "large-refunds"),
    ],
)
def test_walkthrough(walkthrough, amount, decision, rule) -> None:
    verdict = decide(walkthrough, amount=amount)
    assert verdict.decision is decision
    assert verdict.rule_id == f"support-agent/{rule}"


def test_policy_for_another_agent_does_not_apply(walkthrough) -> None:
    assert decide(walkthrough, agent="other", amount=45).reason is Reason.DEFAULT_DENY


def test_high_risk_upgrades_allow_but_never_weakens_deny() -> None:
    policies = compile_text("""
rules:
  - {match: {tool: pay, amount_lt: 10000}, allow: true}
  - {match: {tool: pay}, deny: true}
risk:
  rules:
    - {name: big, when: {tool: pay, amount_gt: 500}, risk_level: high}
    - {name: huge, when: "args.amount > 20000", risk_level: critical}
""")
    assert decide(policies, "pay", amount=100).decision is Decision.PERMIT
    upgraded = decide(policies, "pay", amount=600)
    assert (upgraded.decision, upgraded.reason, upgraded.risk) == (
        Decision.DEFER,
        Reason.RISK_ESCALATION,
        "high",
    )
    denied = decide(policies, "pay", amount=30000)
    assert (denied.decision, denied.risk) == (Decision.DENY, "critical")


def test_strictest_effect_wins_across_policies() -> None:
    allow = compile_text("rules: [{match: {tool: send_email}, allow: true}]", "a.yaml")
    deny = compile_text(
        "rules: [{match: {tool: send_email, to_glob: '*@rival.com'}, deny: true}]", "b.yaml"
    )
    policies = allow + deny
    assert decide(policies, "send_email", to="x@ok.com").decision is Decision.PERMIT
    assert decide(policies, "send_email", to="x@rival.com").rule_id == "b/rule-1"


def test_first_match_wins_within_a_policy() -> None:
    policies = compile_text("""
rules:
  - {id: first, match: {tool: t}, deny: true}
  - {id: second, match: {tool: t}, allow: true}
""")
    assert decide(policies, "t").rule_id == "p/first"


@pytest.mark.parametrize(
    "value", ["5,000", "1e3", "", " 5", "45\n", {"value": 5000}, [1], True, False]
)
def test_wrong_types_deny_the_whole_decision(walkthrough, value) -> None:
    verdict = decide(walkthrough, amount=value)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.TYPE_MISMATCH)


def test_type_mismatch_is_not_hidden_by_an_earlier_failing_condition() -> None:
    policies = compile_text("""
rules:
  - {match: {tool: pay, currency: EUR, amount_gt: 1000}, deny: true}
  - {match: {tool: pay}, allow: true}
""")
    verdict = decide(policies, "pay", currency="USD", amount="5,000")
    assert verdict.reason is Reason.TYPE_MISMATCH


def test_nested_paths_sets_prefix_glob_regex() -> None:
    policies = compile_text("""
rules:
  - match:
      tool: send_email
      args:
        to: {glob: "*@example.com"}
        customer.tier: {in: [gold, platinum]}
        subject: {regex: "^(Re|Fwd): "}
        template: {prefix: "support/"}
        region: {not_in: [embargoed]}
    allow: true
""")
    good = {
        "to": "a@example.com",
        "customer": {"tier": "gold"},
        "subject": "Re: refund",
        "template": "support/refund",
        "region": "eu",
    }
    assert decide(policies, "send_email", **good).decision is Decision.PERMIT
    for key, bad in [
        ("to", "a@evil.com"),
        ("customer", {"tier": "free"}),
        ("subject", "hello"),
        ("template", "marketing/x"),
        ("region", "embargoed"),
    ]:
        assert decide(policies, "send_email", **{**good, key: bad}).reason is Reason.DEFAULT_DENY
    assert (
        decide(policies, "send_email", **{**good, "customer": "gold"}).reason
        is Reason.TYPE_MISMATCH
    )


def test_cel_when() -> None:
    policies = compile_text("""
rules:
  - match: {tool: process_refund}
    when: "args.amount > 150 && args.currency == 'USD'"
    require_approval: true
  - {match: {tool: process_refund}, allow: true}
""")
    assert decide(policies, amount=200, currency="USD").decision is Decision.DEFER
    assert decide(policies, amount=200, currency="EUR").decision is Decision.PERMIT
    assert decide(policies, amount="200", currency="USD").reason is Reason.TYPE_MISMATCH


def test_monitor_mode_is_recorded_beside_enforcement_and_never_decides() -> None:
    shadow = compile_text("mode: monitor\nrules: [{match: {tool: t}, deny: true}]")
    allow = compile_text("rules: [{match: {tool: t}, allow: true}]", "allow.yaml")
    verdict = decide(shadow + allow, "t")
    assert (verdict.decision, verdict.reason) == (Decision.PERMIT, Reason.RULE_ALLOW)
    assert verdict.monitored is not None and verdict.monitored.decision is Decision.DENY


def test_a_monitor_policy_never_permits_what_enforcement_would_not() -> None:
    lenient = compile_text("mode: monitor\nrules: [{match: {tool: t}, allow: true}]")
    alone = decide(lenient, "t")
    assert (alone.decision, alone.reason) == (Decision.DENY, Reason.DEFAULT_DENY)
    assert alone.monitored is not None and alone.monitored.decision is Decision.PERMIT
    strict = compile_text("rules: [{match: {tool: t}, deny: true}]", "strict.yaml")
    assert decide(lenient + strict, "t").decision is Decision.DENY


def test_no_policies_means_default_deny() -> None:
    assert decide([], "anything").reason is Reason.DEFAULT_DENY


def test_hash_covers_content_not_file_names_or_times(tmp_path: Path) -> None:
    text = WALKTHROUGH.read_text()
    first = tmp_path / "a.yaml"
    first.write_text(text)
    original = policy.load_paths([first])[0].hash
    renamed = first.rename(tmp_path / "renamed.yaml")
    os.utime(renamed, (1, 1))
    assert policy.load_paths([renamed])[0].hash == original
    reformatted = text.replace("{tool: send_email}", "\n      tool: send_email")
    renamed.write_text("# a comment\n" + reformatted)
    assert policy.load_paths([renamed])[0].hash == original
    renamed.write_text(text.replace("amount_lte: 150", "amount_lte: 151"))
    assert policy.load_paths([renamed])[0].hash != original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rules: [{match: {tool: t}, alow: true}]",
            "rule 1: unknown key 'alow' (did you mean 'allow'?)",
        ),
        (
            "rules: [{id: r, match: {tool: t}, allow: true, deny: true}]",
            "rule 1 (r): two effects in one rule (allow and deny)",
        ),
        ("rules: [{match: {tool: t}}]", "rule 1: no effect"),
        ("rules: [{match: {tool: t, note_regex: '(['}, allow: true}]", "rule 1: bad regex"),
        (
            "rules: [{match: {tool: t}, when: 'args.x >', allow: true}]",
            "rule 1: bad CEL expression",
        ),
        (
            "rules: [{match: {tool: t}, allow: true}]\n"
            "risk: {rules: [{name: x, when: {tool: t}, risk_level: severe}]}",
            "risk rule 1 (x): bad risk level 'severe'",
        ),
        ("rules: [{match: {tool: t}, allow: true}]\nextra: 1", "unknown key 'extra'"),
        ("rules: [{match: {tool: prоcess}, allow: true}]", "not a plain ASCII identifier"),
        ("rules: [{match: {tool: t}, allow: true, allow: true}]", "duplicate key 'allow'"),
        ("rules: [{match: {tool: t, amount_gt: '5'}, allow: true}]", "amount_gt needs a number"),
        ("rules: []", "non-empty list of rules"),
    ],
)
def test_invalid_policies_name_file_rule_and_problem(text: str, message: str) -> None:
    with pytest.raises(policy.PolicyError) as caught:
        compile_text(text, "policies/bad.yaml")
    assert str(caught.value).startswith("policies/bad.yaml")
    assert message in str(caught.value)


def test_kubernetes_manifest_compiles_to_the_same_policy(walkthrough) -> None:
    import yaml

    spec = yaml.safe_load(WALKTHROUGH.read_text())
    manifest = {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": "support-agent", "namespace": "shop"},
        "spec": spec,
    }
    compiled = policy.compile_document(manifest, "manifest")
    assert compiled.hash == walkthrough[0].hash and compiled.namespace == "shop"


def test_rules_are_indexed_by_tool(walkthrough) -> None:
    assert [r.id for r in walkthrough[0].candidate_rules("send_email")] == ["email"]
    assert walkthrough[0].candidate_rules("unknown") == ()


# -- case-insensitive string comparisons ----------------------------------------------

DOMAINS = """
rules:
  - {id: evil, match: {tool: send_email, to_iglob: "*@EVIL.com"}, deny: true}
  - {id: staff, match: {tool: send_email, to_iprefix: "Staff-", cc_inot_in: [BOSS@shop.example]}, allow: true}
  - {id: known, match: {tool: send_email, to_iin: [A@Shop.Example, "Straße@shop.example"]}, allow: true}
  - {id: ops, match: {tool: send_email, args: {team: {ieq: OPS}, to: {ine: root@shop.example}}}, allow: true}
"""


@pytest.mark.parametrize(
    ("args", "decision", "rule"),
    [
        ({"to": "x@evil.com"}, Decision.DENY, "evil"),
        ({"to": "x@EVIL.COM"}, Decision.DENY, "evil"),
        ({"to": "X@Evil.Com"}, Decision.DENY, "evil"),
        ({"to": "STAFF-bob@shop.example", "cc": "x@shop.example"}, Decision.PERMIT, "staff"),
        ({"to": "staff-bob@shop.example", "cc": "boss@SHOP.example"}, Decision.DENY, None),
        ({"to": "a@shop.example"}, Decision.PERMIT, "known"),
        ({"to": "STRASSE@SHOP.EXAMPLE"}, Decision.PERMIT, "known"),  # Unicode case folding
        ({"to": "b@shop.example", "team": "ops"}, Decision.PERMIT, "ops"),
        ({"to": "ROOT@shop.example", "team": "ops"}, Decision.DENY, None),
    ],
)
def test_case_insensitive_comparisons(args, decision, rule) -> None:
    verdict = decide(compile_text(DOMAINS), "send_email", **args)
    assert verdict.decision is decision
    assert verdict.rule_id == (f"p/{rule}" if rule else "default-deny")


def test_string_comparisons_are_case_sensitive_by_default() -> None:
    policies = compile_text("""
rules:
  - {match: {tool: send_email, to_glob: "*@evil.com"}, deny: true}
  - {match: {tool: send_email}, allow: true}
""")
    assert decide(policies, "send_email", to="x@evil.com").decision is Decision.DENY
    assert decide(policies, "send_email", to="x@EVIL.COM").decision is Decision.PERMIT


def test_case_insensitive_comparison_of_a_non_string_denies() -> None:
    verdict = decide(compile_text(DOMAINS), "send_email", to=["x@evil.com"])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.TYPE_MISMATCH)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("to_iglob: 5", "to_iglob compares strings: it needs a string, got 5"),
        ("to_iin: [1, 2]", "to_iin compares strings: it needs a non-empty list of strings"),
        ("to_iin: []", "to_iin compares strings: it needs a non-empty list of strings"),
        ("to_iin: a@b", "to_iin needs a non-empty list, got 'a@b'"),
        ("to_ieq: true", "to_ieq compares strings: it needs a string, got True"),
    ],
)
def test_case_insensitive_operands_must_be_strings(condition: str, message: str) -> None:
    with pytest.raises(policy.PolicyError, match=re.escape(message)):
        compile_text(f"rules:\n  - {{match: {{tool: t, {condition}}}, allow: true}}\n")


def test_folded_operands_hash_alike_and_unlike_the_case_sensitive_operator() -> None:
    def digest(condition: str) -> str:
        return compile_text(f"rules:\n  - {{match: {{tool: t, {condition}}}, deny: true}}\n")[
            0
        ].hash

    assert digest('to_iglob: "*@EVIL.com"') == digest('to_iglob: "*@evil.COM"')
    assert digest('to_iglob: "*@evil.com"') != digest('to_glob: "*@evil.com"')


@pytest.mark.parametrize("amount", [-500, -0.01, 0, "-45"])
def test_the_example_policy_permits_no_negative_or_zero_refund(walkthrough, amount) -> None:
    verdict = decide(walkthrough, amount=amount)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.DEFAULT_DENY)
