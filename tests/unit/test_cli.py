"""The offline CLI, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import EXAMPLE_POLICIES, REPO, run_cli


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_check_prints_the_decision_and_exits_by_outcome(tmp_path: Path) -> None:
    action = write(
        tmp_path / "a.json",
        '{"agent": "support-agent", "tool": "process_refund", "args": {"amount": 1200}}',
    )
    result = run_cli("check", str(action), "-p", str(EXAMPLE_POLICIES), "-o", "json", check=False)
    assert result.returncode == 3
    assert json.loads(result.stdout)["rule_id"] == "support-agent/large-refunds"
    small = write(
        tmp_path / "b.yaml", "agent: support-agent\ntool: process_refund\nargs: {amount: 45}\n"
    )
    ok = run_cli("check", str(small), "-p", str(EXAMPLE_POLICIES))
    assert "PERMIT" in ok.stdout and "small-refunds" in ok.stdout


def test_check_reports_an_invalid_policy_and_fails(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml", "rules:\n  - match: {tool: t}\n    allow: true\n    deny: true\n"
    )
    action = write(tmp_path / "a.json", '{"agent": "x", "tool": "t"}')
    result = run_cli("check", str(action), "-p", str(bad), check=False)
    assert result.returncode == 1
    assert "bad.yaml: rule 1: two effects in one rule" in result.stderr


def test_policy_test_suites() -> None:
    result = run_cli("test", str(REPO / "examples" / "tests"))
    assert " 0 failed" in result.stdout


def test_policy_test_suite_failure_exits_non_zero(tmp_path: Path) -> None:
    suite = write(
        tmp_path / "suite.yaml",
        f"""
policies: [{EXAMPLE_POLICIES / "support-agent.yaml"}]
tests:
  - name: wrong expectation
    action: {{agent: support-agent, tool: process_refund, args: {{amount: 45}}}}
    expect: {{decision: DENY}}
""",
    )
    result = run_cli("test", str(suite), check=False)
    assert result.returncode == 1 and "1 failed" in result.stdout


def test_canonical_prints_bytes_and_hash(tmp_path: Path) -> None:
    action = write(tmp_path / "a.json", '{"tool": "process_refund", "args": {"b": 2, "a": 1.0}}')
    lines = run_cli("canonical", str(action), "--agent", "x").stdout.splitlines()
    assert lines[0] == '{"agent":"x","args":{"a":1,"b":2},"operation":null,"tool":"process_refund"}'
    assert lines[1].startswith("sha256:")


def test_canonical_refuses_duplicate_keys(tmp_path: Path) -> None:
    action = write(tmp_path / "a.json", '{"tool": "t", "tool": "u"}')
    result = run_cli("canonical", str(action), check=False)
    assert result.returncode == 1 and "duplicate key" in result.stderr


def test_verify_without_a_store_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("verify", "--data-dir", str(tmp_path / "none"), check=False)
    assert result.returncode == 1 and "no record store" in result.stderr


def test_a_sequence_step_that_decides_otherwise_fails_the_suite(tmp_path: Path) -> None:
    suite = write(
        tmp_path / "suite.yaml",
        f"""
policies: [{REPO / "examples" / "limits" / "refund-budget.yaml"}]
tests:
  - name: budget
    agent: support-agent
    sequence:
      - action: {{tool: process_refund, args: {{amount: 100, customer_id: c}}}}
        expect: {{decision: PERMIT}}
        repeat: 3
      - action: {{tool: process_refund, args: {{amount: 100, customer_id: c}}}}
        expect: {{decision: PERMIT}}
""",
    )
    result = run_cli("test", str(suite), "-o", "json", check=False)
    assert result.returncode == 1
    steps = json.loads(result.stdout)
    assert [s["passed"] for s in steps] == [True, False]
    assert "reason=" not in steps[1]["got"] and steps[1]["got"] == "decision=DENY"


def test_check_with_history_counts_the_past_as_permitted(tmp_path: Path) -> None:
    policies = str(REPO / "examples" / "limits" / "refund-budget.yaml")
    action = write(tmp_path / "a.yaml", "{tool: send_email, args: {to: x@elsewhere.example}}")
    history = write(tmp_path / "h.yaml", "- {action: {tool: read_inbox}, ago: 2m}\n")
    old = write(tmp_path / "old.yaml", "- {action: {tool: read_inbox}, ago: 20m}\n")
    common = ["check", str(action), "-p", policies, "--agent", "support-agent", "-o", "json"]
    held = run_cli(*common, "--history", str(history), check=False)
    assert held.returncode == 2 and json.loads(held.stdout)["decision"] == "DEFER"
    free = run_cli(*common, "--history", str(old), check=False)
    assert free.returncode == 0 and json.loads(free.stdout)["decision"] == "PERMIT"
