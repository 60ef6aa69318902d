"""Shared terminal output: one console, colours for decisions, errors that exit non-zero."""

from __future__ import annotations

import json
import sys
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
