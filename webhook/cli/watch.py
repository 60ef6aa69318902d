"""`kubewrit watch`: a live, coloured stream of decisions; pending approvals stand out."""

from __future__ import annotations

import time

import click
from kubewrit.webhook.cli.output import console, fail, styled
from kubewrit.webhook.cli.remote import remote_options
from kubewrit.webhook.client import Client, KubewritError


def line(record: dict[str, object]) -> str:
    approver = f" by {record['approver']}" if record.get("approver") else ""
    return (
        f"{record['time']}  {styled(str(record['decision'])):<8} {record['agent']} → {record['tool']}"
        f"  [dim]{record['reason']} · {record['rule']} · risk {record['risk']} · "
        f"#{record['seq']}[/]{approver}"
    )


@click.command()
@click.option("--interval", default=0.5, show_default=True, help="Seconds between polls.")
@click.option("--count", type=int, help="Stop after this many records (default: run until Ctrl-C).")
@remote_options(role="approver")
def watch(client: Client, interval: float, count: int | None) -> None:
    """Follow decisions as they are recorded."""
    after: dict[str, int] = {}
    seen_pending: set[str] = set()
    shown = 0
    try:
        while count is None or shown < count:
            try:
                page = client.records(limit=1000)["items"]
                pending = client.list_approvals("Pending")
            except KubewritError as exc:
                fail(exc.message)
            for record in page:
                if record["kind"] == "genesis" or record["seq"] <= after.get(record["chain"], -1):
                    continue
                after[record["chain"]] = record["seq"]
                console.print(line(record))
                shown += 1
            for approval in pending:
                if approval["id"] not in seen_pending:
                    seen_pending.add(approval["id"])
                    console.print(
                        f"[black on yellow] PENDING [/] {approval['id']}  {approval['agent']} → "
                        f"{approval['tool']} {approval['action'].get('args')}  "
                        f"approve: kubewrit approvals approve {approval['id']}"
                    )
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
