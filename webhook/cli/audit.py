"""Audit commands: `verify`, `records list|export`, `keys public`, `tokens create`."""

from __future__ import annotations

import gc
import heapq
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from kubewrit.webhook import anchor_history, export, keys, recount, standalone
from kubewrit.webhook import verify as verification
from kubewrit.webhook.budget import readable_scope
from kubewrit.webhook.chain import Cut, Record
from kubewrit.webhook.cli.output import (
    LIST_OUTPUT,
    Column,
    age,
    console,
    fail,
    print_json,
    print_list,
)
from kubewrit.webhook.identity import Role, TokenFile
from kubewrit.webhook.store.sqlite import SQLiteStore
from rich.markup import escape

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


def read_export(path: Path) -> export.Export:
    try:
        if str(path) == "-":
            return export.read(sys.stdin)
        with path.open(encoding="utf-8", errors="surrogateescape") as handle:
            return export.read(handle)
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")


def existing_signer(data_dir: Path, why: str) -> keys.Signer:
    """The server's signing key; never creates one."""
    key_file = standalone.Config(data_dir=data_dir).key_file
    if not key_file.exists():
        fail(f"no signing key at {key_file} {why}")
    try:
        return keys.load_or_create(key_file)
    except keys.KeyFileError as exc:
        fail(str(exc))


def load_keys(paths: Iterable[Path]) -> list[keys.Verifier]:
    trusted = []
    for path in paths:
        try:
            trusted.append(keys.load_public(path.read_bytes()))
        except (OSError, keys.KeyFileError) as exc:
            fail(f"{path}: {exc}")
    return trusted


def _problem_json(problem: verification.Problem) -> dict[str, Any]:
    return {
        "line": problem.line,
        "chain": problem.chain or None,
        "seq": problem.seq,
        "kind": problem.kind,
        "detail": problem.detail,
    }


def limits_json(counted: recount.Recount) -> dict[str, Any]:
    return {
        "ok": counted.ok,
        "charges": counted.charges,
        "budgets": [
            {"limit": limit, "scope": scope, "used_now": str(used)}
            for (limit, scope), used in sorted(counted.now_used.items())
        ],
        "overspends": [
            {
                "record": f"{o.chain}/{o.seq}",
                "limit": o.limit,
                "scope": o.scope,
                "counted": str(o.counted),
                "bound": str(o.bound),
            }
            for o in counted.overspends
        ],
        "problems": counted.problems,
    }


def print_limits(counted: recount.Recount) -> None:
    for (limit, scope), used in sorted(counted.now_used.items()):
        console.print(f"limit {limit} ({readable_scope(scope)}): {used} now", highlight=False)
    for o in counted.overspends:
        console.print(
            f"[bold red]overspent:[/] record {o.chain}/{o.seq} took {o.limit} "
            f"({readable_scope(o.scope)}) to {o.counted} of {o.bound}",
            highlight=False,
        )
    for problem in counted.problems:
        console.print(f"[bold red]bad limit entry:[/] {escape(problem)}", highlight=False)
    if counted.ok:
        console.print(
            f"[bold green]recounted[/] {counted.charges} charges in {counted.budgets} "
            "budget(s): none overspent"
        )


def print_report(
    report: verification.Report, output: str, counted: recount.Recount | None = None
) -> None:
    if output == "json":
        print_json(
            {
                "ok": report.ok and (counted is None or counted.ok),
                "limits": limits_json(counted) if counted is not None else None,
                "complete": report.complete,
                "records": report.total,
                "trailer": report.trailer,
                "input_problems": [_problem_json(p) for p in report.input_problems],
                "chains": [
                    {
                        "chain": c.chain,
                        "signed_by": c.keys,
                        "records": c.records,
                        "first_seq": c.first_seq,
                        "last_seq": c.last_seq,
                        "anchored_seq": c.anchored_seq,
                        "tail_covered_by": c.covered_by,
                        "tail_note": c.tail_note,
                        "problem": None if c.problem is None else _problem_json(c.problem),
                    }
                    for c in report.chains.values()
                ],
            }
        )
        return
    for entry in report.chains.values():
        status = "[green]intact[/]" if entry.problem is None else f"[red]{entry.problem.kind}[/]"
        covered = f", tail signed by the {entry.covered_by}" if entry.covered_by else ""
        signed = f", key {', '.join(entry.keys)}" if entry.keys else ""
        console.print(
            f"chain {entry.chain}: {entry.records} records, seq {entry.first_seq}..{entry.last_seq}"
            f"{signed}, anchored at {entry.anchored_seq}{covered}: {status}",
            highlight=False,
        )
        if entry.tail_note:
            console.print(f"  [yellow]warning:[/] {entry.tail_note}", highlight=False)
    if not report.chains:
        console.print("[red]no records found[/]")
    for problem in report.input_problems:
        console.print(f"[bold red]bad input:[/] {escape(str(problem))}", highlight=False)
    for entry in report.chains.values():
        if entry.problem is not None:
            console.print(
                f"[bold red]first bad record:[/] {escape(str(entry.problem))}", highlight=False
            )
    if report.ok:
        console.print(
            f"[bold green]verified[/] {report.total} records in {len(report.chains)} chain(s)"
            + ("" if report.complete else "; a cut tail cannot be ruled out for some (above)")
        )
    if counted is not None:
        print_limits(counted)


# Stores at least this large get a line on stderr while they are checked.
PROGRESS_FROM = 100_000


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
@click.option(
    "--trust-namespace",
    default="kubewrit-system",
    show_default=True,
    help="With --kubeconfig: kubewrit's own namespace, the only place keys and anchors are "
    "read from (never a tenant's namespace). --public-key overrides its keys.",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Remember each chain's newest verified anchor in this file (kept by the auditor), "
    "and report an anchor that went back or vanished since the last run (rolled_back).",
)
@click.option(
    "--limits",
    "recount_limits",
    is_flag=True,
    help="Also recount every limit from the records and check no budget was overspent.",
)
@DATA_DIR
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def verify(
    export_file: Path | None,
    key_files: tuple[Path, ...],
    kubeconfig: Path | None,
    namespace: str | None,
    trust_namespace: str,
    state_file: Path | None,
    recount_limits: bool,
    data_dir: Path,
    output: str,
) -> None:
    """Check every chain: hashes, links, signatures, sequence gaps and anchors. Exit 0 if intact."""
    # Verification parses millions of small objects that hold no reference cycles; the
    # cycle collector would walk them again and again as they pile up (a tenth of a
    # large store's verification). This process exits once the report is printed.
    gc.disable()
    started = time.monotonic()
    cuts: dict[str, Cut] = {}
    trailer: export.Trailer | None = None
    problems: list[verification.Problem] = []
    lines: list[int] | None = None
    sound: bytes | None = None  # the records found sound while they were read
    namespace_of: dict[str, str] = {}
    try:
        seen = anchor_history.load(state_file) if state_file else {}
    except anchor_history.HistoryError as exc:
        fail(str(exc))
    if kubeconfig is not None:
        from kubewrit.webhook.kube import audit as kube_audit

        cluster = kube_audit.collect(kubeconfig, namespace, trust_namespace)
        records, anchors, cuts = cluster.records, cluster.anchors, cluster.cuts
        problems, namespace_of = cluster.problems, cluster.namespace_of
        trusted = load_keys(key_files) or cluster.trusted
        if export_file is not None:
            # What retention exported fills the cut: verify each such chain from its genesis.
            exported = read_export(export_file)
            problems.extend(exported.problems)
            for chain_id in {verification.chain_order(r)[0] for r in exported.records}:
                cuts.pop(chain_id, None)
            records = exported.records + records
        records.sort(key=verification.chain_order)
    elif export_file is not None:
        if not key_files:
            fail("verifying an export needs --public-key (the writer's public key)")
        exported = read_export(export_file)
        records, anchors, trailer = exported.records, exported.anchors, exported.trailer
        problems, lines = exported.problems, exported.lines
        trusted = load_keys(key_files)
    else:
        store = open_store(data_dir)
        trusted = load_keys(key_files) or [
            keys.load_or_create(standalone.Config(data_dir=data_dir).key_file).verifier
        ]
        # Each record's hash and signature are checked on every core as the store is read.
        records, sound = verification.read_json(store.iter_bodies(), trusted, parallel=True)
        anchors = store.anchors()
        store.close()
    scope = namespace if kubeconfig is not None else None
    problems.extend(anchor_history.rollbacks(seen, anchors, scope))
    if len(records) >= PROGRESS_FROM:
        checker = keys.BATCH_VERIFIER or "libsodium, one at a time"
        done, left = ("", f"hashes, links and signatures ({checker})")
        if sound is not None:
            done, left = (f" and checked their hashes and signatures ({checker})", "links")
        click.echo(
            f"read {len(records):,} records{done} in {time.monotonic() - started:.1f} s; "
            f"checking {left}...",
            err=True,
        )
    report = verification.verify(
        records, anchors, trusted, cuts, trailer, problems, lines, parallel=True, sound=sound
    )
    if state_file is not None:
        anchor_history.advance(state_file, seen, report, anchors, namespace_of)
    counted = None
    if recount_limits:
        stored = (r.to_dict() if isinstance(r, Record) else r for r in records)  # read_json's
        counted = recount.recount(stored, time.time())
    print_report(report, output, counted)
    code = 0 if report.ok and (counted is None or counted.ok) else 1
    if len(records) >= PROGRESS_FROM:
        # Freeing a million parsed records one object at a time takes seconds, and nothing
        # is left to do: everything written is flushed, and the process ends here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


@click.group()
def records() -> None:
    """Read the decision records of a standalone store."""


RECORD_COLUMNS = (
    Column("SEQ", lambda r: r["seq"]),
    Column("AGE", lambda r: age(r["time"])),
    Column("KIND", lambda r: r["kind"]),
    Column("AGENT", lambda r: r["agent"]),
    Column("TOOL", lambda r: r["tool"]),
    Column("DECISION", lambda r: r["decision"], coloured=True),
    Column("REASON", lambda r: r["reason"]),
    Column("RULE", lambda r: r["rule"]),
    Column("APPROVER", lambda r: r["approver"]),
    Column("TIME", lambda r: r["time"], wide=True),
    Column("RISK", lambda r: r["risk"], wide=True),
    Column("APPROVAL", lambda r: r["approval"], wide=True),
    Column("REQUEST ID", lambda r: r["request_id"], wide=True),
    Column("CHAIN", lambda r: r["chain"], wide=True),
    Column("ACTION HASH", lambda r: r["action_hash"], wide=True),
)


def newest_records(store: SQLiteStore, limit: int, **wanted: str | None) -> list[dict[str, Any]]:
    """The `limit` newest records (by time) matching `wanted`, oldest first; reads the store once."""
    matching = (
        r
        for r in store.iter_records()
        if all(value is None or r.get(name) == value for name, value in wanted.items())
    )
    newest = heapq.nlargest(
        max(limit, 0), matching, key=lambda r: (str(r["time"]), str(r["chain"]), r["seq"])
    )
    return newest[::-1]


@records.command("list")
@DATA_DIR
@click.option("--agent")
@click.option("--tool")
@click.option("--decision", type=click.Choice(["PERMIT", "DEFER", "DENY"]))
@click.option("--limit", default=50, show_default=True, help="How many of the newest.")
@LIST_OUTPUT
def list_records(
    data_dir: Path,
    agent: str | None,
    tool: str | None,
    decision: str | None,
    limit: int,
    output: str | None,
) -> None:
    """The most recent records, oldest first, like `kubectl get` (`-o wide` for more)."""
    store = open_store(data_dir)
    try:
        items = newest_records(store, limit, agent=agent, tool=tool, decision=decision)
    finally:
        store.close()
    print_list(items, RECORD_COLUMNS, output, lambda record: record)


@records.command("export")
@DATA_DIR
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), help="File to write (default: stdout)."
)
def export_records(data_dir: Path, out: Path | None) -> None:
    """Write every record and anchor as JSON Lines, for offline `kubewrit verify --export`.

    The last line is a trailer signed with the server's key naming each chain's head,
    so a verifier can tell when the file was cut.
    """
    signer = existing_signer(data_dir, "to sign the export's trailer with")
    store = open_store(data_dir)
    handle = out.open("w", encoding="utf-8") if out else sys.stdout
    count = 0
    for item in export.lines(store.iter_records(), store.anchors(), signer):
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
    signer = existing_signer(data_dir, "(it is created by the first `kubewrit serve`)")
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
