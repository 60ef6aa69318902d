"""Audit commands: `verify`, `records list|export`, `keys public`, `tokens create`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click
from kubewrit.webhook import keys, standalone
from kubewrit.webhook import verify as verification
from kubewrit.webhook.chain import Anchor
from kubewrit.webhook.cli.output import console, fail, print_json, styled
from kubewrit.webhook.identity import Role, TokenFile
from kubewrit.webhook.kube import records as kube_records
from kubewrit.webhook.store.sqlite import RecordQuery, SQLiteStore
from rich.table import Table

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kubewrit"),
    show_default=True,
    help="The standalone server's data directory.",
)


def open_store(data_dir: Path) -> SQLiteStore:
    database = standalone.Config(data_dir=data_dir).database
    if not database.exists():
        fail(f"no record store at {database} (run `kubewrit serve --data-dir {data_dir}` first)")
    return SQLiteStore(database)


def export_lines(store: SQLiteStore) -> Iterator[dict[str, Any]]:
    yield from store.iter_records()
    for anchor in store.anchors():
        yield {"anchor": anchor.to_dict()}


def read_export(path: Path) -> tuple[list[dict[str, Any]], list[Anchor]]:
    records, anchors = [], []
    handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                fail(f"{path}:{number}: not a JSON line")
            if not isinstance(item, dict):
                fail(f"{path}:{number}: expected a JSON object")
            if "anchor" in item:
                anchors.append(Anchor.from_dict(item["anchor"]))
            elif "keyId" in item:  # an ActionRecord spec, as retention exports them
                records.append(kube_records.from_spec(item))
            else:
                records.append(item)
    return records, anchors


def load_keys(paths: Iterable[Path]) -> list[keys.Verifier]:
    trusted = []
    for path in paths:
        try:
            trusted.append(keys.load_public(path.read_bytes()))
        except (OSError, keys.KeyFileError) as exc:
            fail(f"{path}: {exc}")
    return trusted


def print_report(report: verification.Report, output: str) -> None:
    if output == "json":
        print_json(
            {
                "ok": report.ok,
                "records": report.total,
                "chains": [
                    {
                        "chain": c.chain,
                        "records": c.records,
                        "first_seq": c.first_seq,
                        "last_seq": c.last_seq,
                        "anchored_seq": c.anchored_seq,
                        "problem": None
                        if c.problem is None
                        else {
                            "seq": c.problem.seq,
                            "kind": c.problem.kind,
                            "detail": c.problem.detail,
                        },
                    }
                    for c in report.chains.values()
                ],
            }
        )
        return
    for entry in report.chains.values():
        status = "[green]intact[/]" if entry.problem is None else f"[red]{entry.problem.kind}[/]"
        console.print(
            f"chain {entry.chain}: {entry.records} records, seq {entry.first_seq}..{entry.last_seq}, "
            f"anchored at {entry.anchored_seq}: {status}"
        )
    if not report.chains:
        console.print("[red]no records found[/]")
    for problem in report.problems:
        console.print(f"[bold red]first bad record:[/] {problem}")
    if report.ok:
        console.print(
            f"[bold green]verified[/] {report.total} records in {len(report.chains)} chain(s)"
        )


@click.command()
@click.option(
    "--export",
    "export_file",
    type=click.Path(path_type=Path),
    help="Verify a JSON Lines export (`-` for stdin) instead of a store; with --kubeconfig, "
    "the records retention exported, to verify across the cut.",
)
@click.option(
    "--public-key",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Trusted public key (PEM or base64url); repeatable. Default: the data dir's key.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path),
    help="Verify the ActionRecords and anchors of a cluster instead.",
)
@click.option("--namespace", "-n", help="With --kubeconfig: only this namespace.")
@DATA_DIR
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def verify(
    export_file: Path | None,
    key_files: tuple[Path, ...],
    kubeconfig: Path | None,
    namespace: str | None,
    data_dir: Path,
    output: str,
) -> None:
    """Check every chain: hashes, links, signatures, sequence gaps and anchors. Exit 0 if intact."""
    cuts: dict[str, verification.Cut] = {}
    if kubeconfig is not None:
        from kubewrit.webhook.kube import audit as kube_audit

        records, anchors, cuts, cluster_keys = kube_audit.collect(kubeconfig, namespace)
        trusted = load_keys(key_files) or cluster_keys
        if export_file is not None:
            # What retention exported fills the cut: verify each such chain from its genesis.
            exported, _ = read_export(export_file)
            for chain_id in {str(r.get("chain")) for r in exported}:
                cuts.pop(chain_id, None)
            records = sorted(
                exported + records, key=lambda r: (str(r.get("chain")), int(r.get("seq") or 0))
            )
    elif export_file is not None:
        if not key_files:
            fail("verifying an export needs --public-key (the writer's public key)")
        records, anchors = read_export(export_file)
        trusted = load_keys(key_files)
    else:
        store = open_store(data_dir)
        records, anchors = list(store.iter_records()), store.anchors()
        store.close()
        trusted = load_keys(key_files) or [
            keys.load_or_create(standalone.Config(data_dir=data_dir).key_file).verifier
        ]
    report = verification.verify(records, anchors, trusted, cuts)
    print_report(report, output)
    raise SystemExit(0 if report.ok else 1)


@click.group()
def records() -> None:
    """Read the decision records of a standalone store."""


@records.command("list")
@DATA_DIR
@click.option("--agent")
@click.option("--tool")
@click.option("--decision", type=click.Choice(["PERMIT", "DEFER", "DENY"]))
@click.option("--limit", default=50, show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def list_records(
    data_dir: Path,
    agent: str | None,
    tool: str | None,
    decision: str | None,
    limit: int,
    output: str,
) -> None:
    """The most recent decisions, oldest first."""
    store = open_store(data_dir)
    items = store.query(RecordQuery(agent=agent, tool=tool, decision=decision, limit=100000))[
        -limit:
    ]
    store.close()
    if output == "json":
        print_json([r.to_dict() for r in items])
        return
    table = Table()
    for column in (
        "SEQ",
        "TIME",
        "KIND",
        "AGENT",
        "TOOL",
        "DECISION",
        "REASON",
        "RULE",
        "APPROVER",
    ):
        table.add_column(column)
    for r in items:
        table.add_row(
            str(r.seq),
            r.time,
            r.kind,
            r.agent,
            r.tool,
            styled(r.decision) if r.decision else "",
            r.reason,
            r.rule,
            r.approver or "",
        )
    console.print(table)


@records.command("export")
@DATA_DIR
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), help="File to write (default: stdout)."
)
def export_records(data_dir: Path, out: Path | None) -> None:
    """Write every record and anchor as JSON Lines, for offline `kubewrit verify --export`."""
    store = open_store(data_dir)
    handle = out.open("w", encoding="utf-8") if out else sys.stdout
    count = 0
    for item in export_lines(store):
        handle.write(json.dumps(item, separators=(",", ":"), sort_keys=True) + "\n")
        count += 1
    store.close()
    if out:
        handle.close()
        console.print(f"wrote {count} lines to {out}", style="dim")


@click.group("keys")
def keys_group() -> None:
    """The signing key of a standalone server."""


@keys_group.command("public")
@DATA_DIR
@click.option("--pem", is_flag=True, help="PEM instead of base64url raw bytes.")
def public(data_dir: Path, pem: bool) -> None:
    """Print the public key auditors and executors verify with."""
    key_file = standalone.Config(data_dir=data_dir).key_file
    if not key_file.exists():
        fail(f"no signing key at {key_file} (it is created by the first `kubewrit serve`)")
    try:
        signer = keys.load_or_create(key_file)
    except keys.KeyFileError as exc:
        fail(str(exc))
    click.echo(signer.verifier.pem().strip() if pem else signer.verifier.b64)


@click.group()
def tokens() -> None:
    """Per-agent and approver tokens of a standalone server (only hashes are stored)."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["agent", "approver"]), required=True)
@click.option("--group", "groups", multiple=True, help="Approver group (repeatable).")
@DATA_DIR
def create_token(name: str, role: str, groups: tuple[str, ...], data_dir: Path) -> None:
    """Create or rotate NAME's token; print it once."""
    config = standalone.Config(data_dir=data_dir)
    try:
        token = TokenFile(config.tokens_file).add(name, Role(role), groups)
    except ValueError as exc:
        fail(str(exc))
    standalone.save_credential(config.credentials_file, name, Role(role), token)
    click.echo(token)
