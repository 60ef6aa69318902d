"""The console's pure parts: attacker text made visible, rule explanations, sessions."""

from __future__ import annotations

import time

import pytest
from kubewrit.webhook import canonical, policy
from kubewrit.webhook.approval import Approval
from kubewrit.webhook.console import display, explain
from kubewrit.webhook.console.backend import Viewer
from kubewrit.webhook.console.routes import final_reason
from kubewrit.webhook.console.sessions import Sessions, token_matches
from kubewrit.webhook.decision import Phase


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ('" onmouseover="x', "&#34; onmouseover=&#34;x"),
        ("café 中文 😀", "café 中文 😀"),
    ],
)
def test_text_is_escaped_never_markup(raw: str, shown: str) -> None:
    assert str(display.visible(raw)) == shown


@pytest.mark.parametrize(
    "char",
    [
        "\u202e",
        "\u202d",
        "\u2066",
        "\u200b",
        "\u200d",
        "\u2060",
        "\ufeff",
        "\u00a0",
        "\x07",
        "\u2028",
    ],
)
def test_invisible_and_reordering_characters_are_named(char: str) -> None:
    html = str(display.visible(f"a{char}b"))
    assert char not in html
    assert f"U+{ord(char):04X}" in html and 'class="hidden-char"' in html


def test_a_line_feed_in_a_value_is_marked_but_json_layout_is_not() -> None:
    assert "U+000A" in str(display.visible("line\nbreak"))
    assert "U+000A" not in str(display.folded({"a": "x" * 200}))
    assert "\\n" in str(display.folded({"a": "1\n2" * 80}))  # JSON spells the value's own \n


def test_long_values_fold_behind_a_summary_short_ones_do_not() -> None:
    assert "<details" not in str(display.folded("short"))
    long = str(display.folded("x" * 500))
    assert "<details" in long and "500 characters" in long and "x" * 500 in long
    assert str(display.folded({"id": 7})) == '<span class="value">{&#34;id&#34;: 7}</span>'


def test_hidden_characters_lists_code_points() -> None:
    assert display.hidden_characters("pay\u200bpal\u202e") == ["U+200B", "U+202E"]


POLICY = """
agents: [support-agent]
rules:
  - id: small
    match: {tool: process_refund, amount_lte: 150}
    allow: true
  - id: gold
    match: {tool: process_refund, customer.tier_in: [gold]}
    allow: true
  - id: mid
    match: {tool: process_refund, amount_gt: 150, amount_lte: 1000}
    require_approval: true
risk:
  rules:
    - name: big
      when: {tool: process_refund, amount_gt: 500}
      risk_level: high
"""


def traces(args: object, tool: str = "process_refund") -> explain.Explanation:
    policies = [policy.parse_text(POLICY, "p.yaml")[0]]
    action = canonical.build_action("support-agent", tool, args)  # type: ignore[arg-type]
    return explain.explain(policies, action)


def test_explanation_follows_the_engine_to_the_first_match() -> None:
    result = traces({"amount": 340})
    rules = result.selecting[0].rules
    assert [r.label for r in rules] == ["small", "gold", "mid"]
    assert [c.outcome for c in rules[0].checks] == ["matched", "failed"]
    assert rules[0].checks[1].text == "amount ≤ 150"
    assert rules[1].checks[1].outcome == "absent"
    assert rules[2].matched and not rules[0].matched
    assert result.selecting[0].risk_rules[0].matched is False


def test_explanation_names_a_type_mismatch_and_skips_other_tools() -> None:
    rules = traces({"amount": "5,000"}).selecting[0].rules
    assert rules[0].checks[1].outcome == "type_mismatch"
    assert "5,000" in rules[0].checks[1].detail
    other = traces({"amount": 1}, tool="send_email").selecting[0].rules
    assert [c.outcome for c in other[0].checks] == ["failed", "skipped"]


def test_explanation_ignores_policies_for_other_agents() -> None:
    policies = [policy.parse_text(POLICY, "p.yaml")[0]]
    action = canonical.build_action("billing-agent", "process_refund", {"amount": 1})
    result = explain.explain(policies, action)
    assert result.selecting == [] and result.ignored == [policies[0].name]


def test_sessions_expire_and_compare_tokens_safely() -> None:
    sessions = Sessions(lifetime=0.05)
    opened = sessions.open(Viewer("approver", (), "secret"))
    assert sessions.get(opened.id) is opened
    assert token_matches(opened.csrf, opened.csrf)
    assert not token_matches(opened.csrf, None) and not token_matches("", "")
    time.sleep(0.06)
    assert sessions.get(opened.id) is None
    assert sessions.get(None) is None


def _held(phase: Phase, decided_by: str | None = None) -> Approval:
    return Approval(
        "apr-1", "support-agent", "process_refund", "h", {}, "r", "low", "rule_defer", "m",
        "p", created_at=0.0, expires_at=100.0, phase=phase, decided_by=decided_by,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("approval", "now", "words"),
    [
        (_held(Phase.PENDING), 100.0, "expired: nobody decided in time"),
        (_held(Phase.EXPIRED), 50.0, "expired: nobody decided in time"),
        (_held(Phase.DECIDING, "ann"), 50.0, "being decided by ann: the decision is being recorded"),
        (_held(Phase.APPROVED, "ann"), 50.0, "already approved by ann: an approval is decided only once"),
        (_held(Phase.CONSUMED, "ann"), 50.0, "already consumed by ann"),
    ],
)  # fmt: skip
def test_why_an_approval_can_no_longer_be_decided_is_said_in_words(
    approval: Approval, now: float, words: str
) -> None:
    assert final_reason(approval, now).startswith(words)
