"""`kubewrit approvals list|approve|deny`: the human side of DEFER."""

from __future__ import annotations

import time

import click
from kubewrit.webhook.cli.output import console, fail, print_json, styled
from kubewrit.webhook.cli.remote import remote_options
from kubewrit.webhook.client import Client, KubewritError
from rich.table import Table


@click.group()
def approvals() -> None:
    """List and decide approvals held for a human."""


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "expired"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@approvals.command("list")
@click.option(
    "--phase",
    default="Pending",
    show_default=True,
    help="Pending, Approved, Denied, Expired, Consumed or all.",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@remote_options(role="approver")
def list_cmd(client: Client, phase: str, output: str) -> None:
    """Approvals in a phase (Pending by default)."""
    try:
        items = client.list_approvals(None if phase == "all" else phase)
    except KubewritError as exc:
        fail(exc.message)
    if output == "json":
        print_json(items)
        return
    table = Table()
    for column in ("ID", "AGENT", "TOOL", "ARGS", "RISK", "PHASE", "DECIDED BY", "EXPIRES IN"):
        table.add_column(column)
    now = time.time()
    for item in items:
        args = ", ".join(f"{k}={v}" for k, v in (item["action"].get("args") or {}).items())
        table.add_row(
            item["id"],
            item["agent"],
            item["tool"],
            args[:40],
            item["risk"],
            styled(item["phase"]),
            item.get("decided_by") or "",
            _age(item["expires_at"] - now),
        )
    console.print(table)


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


@approvals.command()
@click.argument("approval_id")
@click.option("--reason", help="Why; kept in the record.")
@remote_options(role="approver")
def approve(client: Client, approval_id: str, reason: str | None) -> None:
    """Approve APPROVAL_ID (policy is evaluated again first)."""
    _decide(client, approval_id, True, reason)


@approvals.command()
@click.argument("approval_id")
@click.option("--reason", help="Why; kept in the record.")
@remote_options(role="approver")
def deny(client: Client, approval_id: str, reason: str | None) -> None:
    """Deny APPROVAL_ID."""
    _decide(client, approval_id, False, reason)
