"""`kubewrit approvals list|approve|deny`: the human side of DEFER."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from kubewrit.webhook.cli.output import (
    LIST_OUTPUT,
    Column,
    age,
    console,
    duration,
    fail,
    print_list,
    styled,
)
from kubewrit.webhook.cli.remote import remote_options
from kubewrit.webhook.client import Client, KubewritError


@click.group()
def approvals() -> None:
    """List and decide approvals held for a human."""


def _expires_in(item: dict[str, Any]) -> str:
    remaining = item["expires_at"] - time.time()
    return duration(remaining) if remaining >= 0 else "expired"


def _args(item: dict[str, Any]) -> str:
    """The arguments the approver is asked to approve, whole (compact canonical JSON)."""
    return json.dumps(
        (item.get("action") or {}).get("args") or {}, sort_keys=True, separators=(",", ":")
    )


COLUMNS = (
    Column("ID", lambda a: a["id"]),
    Column("AGENT", lambda a: a["agent"]),
    Column("TOOL", lambda a: a["tool"]),
    Column("RISK", lambda a: a["risk"]),
    Column("PHASE", lambda a: a["phase"], coloured=True),
    Column("EXPIRES IN", _expires_in),
    Column("AGE", lambda a: age(a.get("created_at"))),
    Column("DECIDED BY", lambda a: a.get("decided_by"), wide=True),
    Column("RULE", lambda a: a.get("rule"), wide=True),
    Column("ACTION HASH", lambda a: a.get("action_hash"), wide=True),
    Column("ARGS", _args),
)


@approvals.command("list")
@click.option(
    "--phase",
    default="Pending",
    show_default=True,
    help="Pending, Approved, Denied, Expired, Consumed or all.",
)
@LIST_OUTPUT
@remote_options(role="approver")
def list_cmd(client: Client, phase: str, output: str | None) -> None:
    """Approvals in a phase (Pending by default), like `kubectl get`: IDs are never cut."""
    try:
        items = client.list_approvals(None if phase == "all" else phase)
    except KubewritError as exc:
        fail(exc.message)
    print_list(items, COLUMNS, output, lambda item: item)


def _decide(client: Client, approval_id: str, approve: bool, reason: str | None) -> None:
    try:
        result = (
            client.approve(approval_id, reason) if approve else client.deny(approval_id, reason)
        )
    except KubewritError as exc:
        fail(f"{exc.code}: {exc.message}")
    console.print(f"approval {approval_id} {styled(result['phase'])} by {result.get('decided_by')}")
    outcome = result.get("outcome") or {}
    if outcome:
        console.print(
            f"  final decision {styled(outcome['decision'])} ({outcome['reason']}), "
            f"record {outcome['record']['chain']}/{outcome['record']['seq']}"
            if outcome.get("record")
            else f"  final decision {outcome['decision']}"
        )


def _decision_command(approve: bool, summary: str) -> None:
    @approvals.command("approve" if approve else "deny", help=summary)
    @click.argument("approval_id")
    @click.option("--reason", help="Why; kept in the record.")
    @remote_options(role="approver")
    def command(client: Client, approval_id: str, reason: str | None) -> None:
        _decide(client, approval_id, approve, reason)


_decision_command(True, "Approve APPROVAL_ID (policy is evaluated again first).")
_decision_command(False, "Deny APPROVAL_ID.")
