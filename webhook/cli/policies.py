"""Offline policy work: `check` one action, `test` suites of them, `canonical` forms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from kubewrit.webhook import authority, canonical, policy
from kubewrit.webhook.cli.output import console, fail, print_json, read_document, styled
from kubewrit.webhook.decision import Decision, Verdict
from kubewrit.webhook.policy.model import Policy
from rich.table import Table

ACTION_KEYS = {"agent", "tool", "args", "operation", "context"}


def load_policies(paths: Sequence[Path]) -> list[Policy]:
    try:
        return policy.load_paths(paths)
    except policy.PolicyError as exc:
        fail(str(exc))


def evaluate_document(
    document: Any, policies: Sequence[Policy], default_agent: str | None
) -> tuple[Verdict, str]:
    """Decide an action document offline, exactly as the server would (minus recording)."""
    if not isinstance(document, dict):
        raise ValueError("an action must be a mapping with tool and args")
    unknown = set(document) - ACTION_KEYS
    if unknown:
        raise ValueError(f"unknown action keys {sorted(unknown)}; allowed: {sorted(ACTION_KEYS)}")
    agent = document.get("agent") or default_agent
    if not agent:
        raise ValueError("no agent: put `agent:` in the action or pass --agent")
    action, refusal = authority.admit(
        agent,
        document.get("tool", ""),
        document.get("args"),
        document.get("operation"),
        document.get("context"),
    )
    return refusal or policy.evaluate(policies, action), canonical.action_hash(action)


def verdict_json(verdict: Verdict, action_hash: str) -> dict[str, Any]:
    return {
        "decision": verdict.decision.value,
        "reason": verdict.reason.value,
        "rule_id": verdict.rule_id,
        "risk": verdict.risk,
        "risk_rule": verdict.risk_rule,
        "message": verdict.message,
        "policy": verdict.policy,
        "policy_hash": verdict.policy_hash,
        "action_hash": action_hash,
    }


@click.command()
@click.argument("action_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-p",
    "--policies",
    "policy_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Policy file or directory (repeatable).",
)
@click.option("--agent", help="Agent identity, if the action file does not name one.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def check(
    action_file: Path, policy_paths: tuple[Path, ...], agent: str | None, output: str
) -> None:
    """Decide the action in ACTION_FILE (JSON or YAML) offline. Exit 0 on PERMIT, 2 on DEFER, 3 on DENY."""
    policies = load_policies(policy_paths)
    try:
        verdict, action_hash = evaluate_document(read_document(action_file), policies, agent)
    except (ValueError, canonical.CanonicalError) as exc:
        fail(f"{action_file}: {exc}")
    if output == "json":
        print_json(verdict_json(verdict, action_hash))
    else:
        console.print(
            f"{styled(verdict.decision.value)}  reason={verdict.reason.value}  "
            f"rule={verdict.rule_id}  risk={verdict.risk}"
        )
        if verdict.message:
            console.print(f"  {verdict.message}")
        console.print(f"  action {action_hash}", style="dim")
        console.print(f"  policy {verdict.policy_hash}", style="dim")
    raise SystemExit({Decision.PERMIT: 0, Decision.DEFER: 2, Decision.DENY: 3}[verdict.decision])


@dataclass
class CaseResult:
    name: str
    passed: bool
    expected: str
    got: str


def run_suite(path: Path) -> list[CaseResult]:
    suite = read_document(path)
    if not isinstance(suite, dict) or not isinstance(suite.get("tests"), list):
        raise ValueError(f"{path}: a test suite needs `policies:` and a list of `tests:`")
    unknown = set(suite) - {"name", "policies", "tests"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    paths = [(path.parent / p) for p in suite.get("policies") or []]
    policies = load_policies(paths)
    results = []
    for index, case in enumerate(suite["tests"], start=1):
        if not isinstance(case, dict) or "action" not in case or "expect" not in case:
            raise ValueError(f"{path}: test {index} needs `action` and `expect`")
        name = str(case.get("name", f"test {index}"))
        expect = case["expect"]
        if not isinstance(expect, dict) or "decision" not in expect:
            raise ValueError(f"{path}: test {name!r}: expect needs at least `decision`")
        bad = set(expect) - {"decision", "reason", "rule", "risk"}
        if bad:
            raise ValueError(f"{path}: test {name!r}: unknown expect keys {sorted(bad)}")
        verdict, _ = evaluate_document(case["action"], policies, case.get("agent"))
        got = {
            "decision": verdict.decision.value,
            "reason": verdict.reason.value,
            "rule": verdict.rule_id,
            "risk": verdict.risk,
        }
        passed = all(str(got[key]) == str(value) for key, value in expect.items())
        shown = " ".join(f"{k}={got[k]}" for k in expect)
        results.append(
            CaseResult(name, passed, " ".join(f"{k}={v}" for k, v in expect.items()), shown)
        )
    return results


@click.command()
@click.argument("suites", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def test(suites: tuple[Path, ...], output: str) -> None:
    """Run policy test suites (YAML: policies + actions + expected decisions), like `kyverno test`."""
    files = [f for s in suites for f in (sorted(s.glob("*.y*ml")) if s.is_dir() else [s])]
    all_results: list[tuple[Path, CaseResult]] = []
    for file in files:
        try:
            all_results.extend((file, r) for r in run_suite(file))
        except (ValueError, canonical.CanonicalError) as exc:
            fail(str(exc))
    failed = [r for _, r in all_results if not r.passed]
    if output == "json":
        print_json(
            [
                {
                    "suite": str(f),
                    "name": r.name,
                    "passed": r.passed,
                    "expected": r.expected,
                    "got": r.got,
                }
                for f, r in all_results
            ]
        )
    else:
        table = Table(title="policy tests", show_lines=False)
        for column in ("suite", "test", "result", "expected", "got"):
            table.add_column(column)
        for file, r in all_results:
            table.add_row(
                file.name,
                r.name,
                "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                r.expected,
                r.got,
            )
        console.print(table)
        console.print(f"{len(all_results) - len(failed)} passed, {len(failed)} failed")
    raise SystemExit(1 if failed else 0)


@click.command("canonical")
@click.argument("action_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--agent", help="Agent identity, if the action file does not name one.")
def canonical_cmd(action_file: Path, agent: str | None) -> None:
    """Print an action's canonical JSON (RFC 8785) and its SHA-256 action hash."""
    document = read_document(action_file)
    if not isinstance(document, dict):
        fail(f"{action_file}: an action must be a mapping")
    try:
        action = canonical.build_action(
            document.get("agent") or agent or "",
            document.get("tool", ""),
            document.get("args"),
            document.get("operation"),
        )
    except canonical.CanonicalError as exc:
        fail(f"{action_file}: {exc.message}")
    click.echo(canonical.canonical_bytes(action.car()).decode())
    click.echo(canonical.action_hash(action))
