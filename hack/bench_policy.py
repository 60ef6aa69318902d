#!/usr/bin/env python3
"""Micro-benchmark of policy evaluation (no I/O): µs per `policy.evaluate`, as JSON.

    hack/bench_policy.py [--rules 10000] [--tools 1000] [--globs 100] [--seconds 1]

Two policies: the walkthrough (examples/policies) and a generated one with `--rules`
rules over `--tools` tools, `--globs` of them naming their tools by glob (e.g. `tool_1*`)
spread through the policy, and a tool-less rule near the end. Each case is the median
of several timed batches; `scan_us` is the same evaluation without the per-tool index
(every rule checked in order), for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from kubewrit.webhook import canonical, policy

REPO = Path(__file__).resolve().parent.parent


def timed(call: Callable[[], object], seconds: float) -> float:
    """Median µs per call over batches that together take about `seconds`."""
    call()
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 0.05:
        call()
        count += 1
    batch = max(1, count)
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        began = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - began) / batch)
    return round(1e6 * statistics.median(samples), 2)


def generated(rules: int, tools: int, globs: int) -> str:
    lines = ['agents: ["*"]', "rules:"]
    glob_every = rules // globs if globs else 0
    for index in range(rules):
        tool = f"tool_{index % tools}"
        if glob_every and index % glob_every == glob_every // 2:
            lines.append(
                f'  - {{id: g{index}, match: {{tool: "tool_{index % tools}9*", amount_gt: 10000}},'
                " deny: true}"
            )
            continue
        if index == rules - 2:
            lines.append(f"  - {{id: any{index}, match: {{amount_gt: 1000000}}, deny: true}}")
            continue
        lines.append(
            f"  - {{id: r{index}, match: {{tool: {tool}, amount_gt: {index % 7}, "
            f"amount_lte: {1000 + index}}}, allow: true}}"
        )
    lines += [
        "risk:",
        "  rules:",
        "    - name: big",
        "      when: {amount_gt: 500000}",
        "      risk_level: high",
    ]
    return "\n".join(lines) + "\n"


def unindexed(compiled: policy.Policy) -> policy.Policy:
    """The same policy with every rule treated as a glob rule: a plain scan."""
    scan = replace(compiled)
    object.__setattr__(scan, "candidate_rules", lambda tool: compiled.rules)
    return scan


def case(policies: list[policy.Policy], agent: str, tool: str, args: dict, seconds: float) -> dict:
    action = canonical.build_action(agent, tool, args)
    verdict = policy.evaluate(policies, action)
    scan = [unindexed(p) for p in policies]
    assert policy.evaluate(scan, action) == verdict
    return {
        "tool": tool,
        "decision": verdict.decision.value,
        "rule": verdict.rule_id,
        "us": timed(lambda: policy.evaluate(policies, action), seconds),
        "scan_us": timed(lambda: policy.evaluate(scan, action), seconds / 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=10000)
    parser.add_argument("--tools", type=int, default=1000)
    parser.add_argument("--globs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    walkthrough = policy.load_paths([REPO / "examples" / "policies" / "support-agent.yaml"])
    started = time.perf_counter()
    big = policy.parse_text(generated(args.rules, args.tools, args.globs), "generated.yaml")
    compile_seconds = time.perf_counter() - started
    last = args.tools - 1
    report = {
        "benchmark": "policy_evaluation",
        "python": sys.version.split()[0],
        "walkthrough": [
            case(walkthrough, "support-agent", "process_refund", {"amount": 45}, args.seconds),
            case(walkthrough, "support-agent", "process_refund", {"amount": 600}, args.seconds),
            case(walkthrough, "support-agent", "send_email", {"to": "x@y"}, args.seconds),
        ],
        "generated": {
            "rules": args.rules,
            "tools": args.tools,
            "glob_rules": args.globs,
            "compile_seconds": round(compile_seconds, 2),
            "cases": [
                case(big, "a", f"tool_{last}", {"amount": 10999}, args.seconds),  # its last rule
                case(big, "a", "tool_19", {"amount": 50}, args.seconds),
                case(big, "a", "tool_19x", {"amount": 50}, args.seconds),  # only globs name it
                case(big, "a", "unknown_tool", {"amount": 50}, args.seconds),  # default deny
            ],
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
