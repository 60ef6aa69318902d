"""Shared terminal output: one console, colours for decisions, errors that exit non-zero,
and kubectl-style lists (plain aligned columns, `-o wide|json|yaml`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

DECISION_STYLE = {"PERMIT": "bold green", "DEFER": "bold yellow", "DENY": "bold red"}
PHASE_STYLE = {
    "Pending": "bold yellow",
    "Approved": "green",
    "Consumed": "dim green",
    "Denied": "red",
    "Expired": "dim red",
}
# The same colours for click.style, which (unlike rich markup) survives exact padding.
CLICK_STYLE: dict[str, dict[str, Any]] = {
    "PERMIT": {"fg": "green", "bold": True},
    "DEFER": {"fg": "yellow", "bold": True},
    "DENY": {"fg": "red", "bold": True},
    "Pending": {"fg": "yellow", "bold": True},
    "Approved": {"fg": "green"},
    "Consumed": {"fg": "green", "dim": True},
    "Denied": {"fg": "red"},
    "Expired": {"fg": "red", "dim": True},
}

LIST_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["wide", "json", "yaml"]),
    help="wide: more columns; json or yaml: every field. Default: the main columns.",
)


@dataclass(frozen=True)
class Column:
    """One column of a list: its header, how a row shows in it, and whether only `-o wide`."""

    header: str
    cell: Callable[[Any], object]
    wide: bool = False
    coloured: bool = False  # a decision or phase: coloured on a terminal


def print_list(
    rows: Sequence[Any], columns: Sequence[Column], output: str | None, data: Callable[[Any], Any]
) -> None:
    """Print rows as kubectl does: `-o json|yaml` every field (`data(row)`), else columns.

    Columns are plain text, two spaces apart, padded to the widest cell and never
    truncated, whatever the terminal width or a pipe: an ID must be copyable whole.
    Colour is added only on a terminal (click strips it otherwise).
    """
    if output == "json":
        print_json([data(row) for row in rows])
        return
    if output == "yaml":
        click.echo(yaml.safe_dump([data(row) for row in rows], sort_keys=True), nl=False)
        return
    shown = [c for c in columns if output == "wide" or not c.wide]
    cells = [[_cell(c.cell(row)) for c in shown] for row in rows]
    widths = [max([len(c.header)] + [len(line[i]) for line in cells]) for i, c in enumerate(shown)]
    click.echo(_line([c.header for c in shown], widths, shown, header=True))
    for line in cells:
        click.echo(_line(line, widths, shown))


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.split()) or "<none>"


def _line(
    cells: Iterable[str], widths: list[int], columns: list[Column], header: bool = False
) -> str:
    parts = []
    for text, width, column in zip(cells, widths, columns, strict=True):
        padded = text.ljust(width)
        if column.coloured and not header and text in CLICK_STYLE:
            padded = click.style(text, **CLICK_STYLE[text]) + " " * (width - len(text))
        parts.append(padded)
    return "   ".join(parts).rstrip()


def age(moment: float | str | None, now: float | None = None) -> str:
    """kubectl's AGE: 45s, 3m12s, 5h4m, 2d3h (from epoch seconds or an RFC 3339 time)."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return "<unknown>"
    if moment is None:
        return "<unknown>"
    return duration((now if now is not None else time.time()) - moment)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m{seconds % 60}s" if minutes < 10 else f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 10 else f"{hours}h"
    return f"{hours // 24}d{hours % 24}h" if hours < 24 * 8 else f"{hours // 24}d"


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}")
    sys.exit(code)


def styled(decision: str) -> str:
    style = DECISION_STYLE.get(decision) or PHASE_STYLE.get(decision, "")
    return f"[{style}]{decision}[/]" if style else decision


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def read_document(path: Path) -> Any:
    """A JSON or YAML file; JSON goes through the strict parser (duplicate keys, NaN...)."""
    from kubewrit.webhook import canonical

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    if path.suffix == ".json":
        try:
            return canonical.parse_json(text, max_bytes=10 * 1024 * 1024)
        except canonical.CanonicalError as exc:
            fail(f"{path}: {exc.message}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        fail(f"{path}: not valid YAML: {exc}")
