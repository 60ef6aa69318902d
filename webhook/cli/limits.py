"""`kubewrit limits`: each limit's current count, per scope (standalone server)."""

from __future__ import annotations

from typing import Any

import click
from kubewrit.webhook.budget import readable_scope
from kubewrit.webhook.cli.output import LIST_OUTPUT, Column, fail, print_list
from kubewrit.webhook.cli.remote import remote_options
from kubewrit.webhook.client import Client, KubewritError
from kubewrit.webhook.policy.history import format_window


def _fill(item: dict[str, Any]) -> str:
    bound = float(item["bound"])
    return f"{100 * float(item['used']) / bound:.0f}%" if bound else "-"


COLUMNS = (
    Column("LIMIT", lambda u: u["limit"]),
    Column("SCOPE", lambda u: readable_scope(u["scope"])),
    Column("USED", lambda u: u["used"]),
    Column("BOUND", lambda u: u["bound"]),
    Column("FULL", _fill),
    Column("WINDOW", lambda u: format_window(u["window"])),
    Column("BEYOND", lambda u: u["effect"]),
)


@click.command()
@LIST_OUTPUT
@remote_options(role="approver")
def limits(client: Client, output: str | None) -> None:
    """Each limit's count within its window, per scope (what the server counts now).

    In Kubernetes the same is in each budget's ConfigMap:
    kubectl get configmaps -n kubewrit-system -l kubewrit.io/budget -L kubewrit.io/budget
    """
    try:
        items = client.limits()
    except KubewritError as exc:
        fail(exc.message)
    print_list(items, COLUMNS, output, lambda item: item)
