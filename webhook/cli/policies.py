"""Offline policy work: `check` one action, `test` suites of them, `canonical` forms."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from kubewrit.webhook import canonical, policy
from kubewrit.webhook.cli.output import console, fail, print_json, read_document, styled
from kubewrit.webhook.decision import Decision, Verdict
from kubewrit.webhook.outcome import Outcome
from kubewrit.webhook.policy.history import parse_window
from kubewrit.webhook.policy.model import Policy
from kubewrit.webhook.simulation import Simulation
from rich.table import Table


def load_policies(paths: Sequence[Path]) -> list[Policy]:
    try:
        return policy.load_paths(paths)
    except policy.PolicyError as exc:
        fail(str(exc))


async def remember_history(
    sim: Simulation, entries: Any, where: str, agent: str | None = None
) -> None:
    """`history:` entries: `{action: {...}, ago: 5m}`, oldest first or not."""
    if not isinstance(entries, list):
        raise ValueError(f"{where}: history must be a list of {{action, ago}}")
    timed = []
    for index, item in enumerate(entries, start=1):
        if not isinstance(item, dict) or set(item) - {"action", "ago"} or "action" not in item:
            raise ValueError(f"{where}: history entry {index} needs `action` (and `ago`)")
        timed.append((parse_window(item.get("ago", 1), f"history entry {index} ago"), item))
    for ago, item in sorted(timed, key=lambda pair: -pair[0]):
        await sim.remember(item["action"], ago, agent)


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
@click.option(
    "--history",
    "history_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Past actions that count as permitted (YAML list of {action, ago}).",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def check(
    action_file: Path,
    policy_paths: tuple[Path, ...],
    agent: str | None,
    history_file: Path | None,
    output: str,
) -> None:
    """Decide the action in ACTION_FILE (JSON or YAML) offline. Exit 0 on PERMIT, 2 on DEFER, 3 on DENY.

    With --history, the actions in that file (`- {action: {...}, ago: 10m}`) count as
    permitted that long ago: limits and sequence rules see them as the server would.
    """
    sim = Simulation(load_policies(policy_paths))

    async def decide() -> Outcome:
        if history_file is not None:
            await remember_history(sim, read_document(history_file), str(history_file), agent)
        return await sim.decide(read_document(action_file), agent)

    try:
        outcome = asyncio.run(decide())
    except (ValueError, canonical.CanonicalError) as exc:
        fail(f"{action_file}: {exc}")
    verdict, action_hash = outcome.verdict, outcome.action_hash
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


EXPECT_KEYS = {"decision", "reason", "rule", "risk"}
CASE_KEYS = {"name", "agent", "action", "expect", "history", "sequence"}
STEP_KEYS = {"action", "expect", "repeat", "advance", "name"}


def _expected(expect: Any, where: str) -> dict[str, Any]:
    if not isinstance(expect, dict) or "decision" not in expect:
        raise ValueError(f"{where}: expect needs at least `decision`")
    bad = set(expect) - EXPECT_KEYS
    if bad:
        raise ValueError(f"{where}: unknown expect keys {sorted(bad)}")
    return expect


def _result(name: str, expect: dict[str, Any], verdict: Verdict) -> CaseResult:
    got = {
        "decision": verdict.decision.value,
        "reason": verdict.reason.value,
        "rule": verdict.rule_id,
        "risk": verdict.risk,
    }
    passed = all(str(got[key]) == str(value) for key, value in expect.items())
    return CaseResult(
        name,
        passed,
        " ".join(f"{k}={v}" for k, v in expect.items()),
        " ".join(f"{k}={got[k]}" for k in expect),
    )


async def run_case(
    case: dict[str, Any], policies: Sequence[Policy], where: str
) -> list[CaseResult]:
    """One test: a single action, or a `sequence` of steps on one clock and one history."""
    name = str(case.get("name", where))
    agent = case.get("agent")
    sim = Simulation(policies)
    if "history" in case:
        await remember_history(sim, case["history"], where, agent)
    if "sequence" not in case:
        if "action" not in case or "expect" not in case:
            raise ValueError(f"{where}: a test needs `action` and `expect` (or a `sequence`)")
        outcome = await sim.decide(case["action"], agent)
        return [_result(name, _expected(case["expect"], where), outcome.verdict)]
    steps = case["sequence"]
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{where}: sequence must be a non-empty list of steps")
    results = []
    for number, step in enumerate(steps, start=1):
        at = f"{where} step {number}"
        if not isinstance(step, dict) or set(step) - STEP_KEYS:
            raise ValueError(f"{at}: a step is {{action, expect, repeat}} or {{advance: 10m}}")
        if "advance" in step:
            sim.advance(parse_window(step["advance"], f"{at} advance"))
            if "action" not in step:
                continue
        repeat = step.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 10000:
            raise ValueError(f"{at}: repeat must be a whole number from 1 to 10000")
        expect = _expected(step.get("expect"), at)
        label = f"{name} / " + str(step.get("name", f"step {number}"))
        outcomes = [await sim.decide(step["action"], agent) for _ in range(repeat)]
        failing = next(
            (o for o in outcomes if not _result(label, expect, o.verdict).passed), outcomes[-1]
        )
        result = _result(label + (f" (x{repeat})" if repeat > 1 else ""), expect, failing.verdict)
        results.append(result)
    return results


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
        where = f"{path}: test {index}"
        if not isinstance(case, dict) or set(case) - CASE_KEYS:
            raise ValueError(f"{where}: a test has {sorted(CASE_KEYS)}")
        results.extend(asyncio.run(run_case(case, policies, where)))
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
