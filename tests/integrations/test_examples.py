"""The walkthrough example runs end to end: PERMIT, DEFER then approval, DENY."""

from __future__ import annotations

import subprocess
import sys

from integration_harness import REPO


def test_support_agent_walkthrough() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples/agents/support_agent.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "process_refund ran: $45.00" in out and "process_refund ran: $400.00" in out
    assert "process_refund ran: $5,000.00" not in out
    assert "finance team" in out and "large-refunds" in out
    for line in (
        "PERMIT (rule_allow)",
        "DEFER (approval_required)",
        "PERMIT (approved)",
        "DENY (rule_deny)",
    ):
        assert line in out
