"""How CLI commands reach a running server: URL and a token (flag, env, or --data-dir credentials)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from kubewrit.webhook.cli.output import fail
from kubewrit.webhook.client import Client


def remote_options(role: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --url/--token/--as/--data-dir and pass a ready `client` to the command."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--url", envvar="KUBEWRIT_URL", default="http://127.0.0.1:8080", show_default=True
        )
        @click.option(
            "--token", envvar="KUBEWRIT_TOKEN", help="Bearer token (default: from credentials)."
        )
        @click.option(
            "--as", "as_name", help="Use this principal's token from the credentials file."
        )
        @click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            default=Path(".kubewrit"),
            show_default=True,
            help="Where `kubewrit serve` keeps credentials.yaml.",
        )
        @functools.wraps(command)
        def wrapper(
            url: str, token: str | None, as_name: str | None, data_dir: Path, **kwargs: Any
        ) -> Any:
            token = token or credential(data_dir / "credentials.yaml", as_name, role)
            with Client(url, token, timeout=10.0) as client:
                return command(client=client, **kwargs)

        return wrapper

    return decorate


def credential(path: Path, name: str | None, role: str | None) -> str:
    if not path.exists():
        fail(
            f"no token: pass --token, set KUBEWRIT_TOKEN, or point --data-dir at a server's data ({path} "
            "not found)"
        )
    entries = (yaml.safe_load(path.read_text()) or {}).get("credentials") or {}
    if name:
        if name not in entries:
            fail(f"no credential named {name!r} in {path}; have: {', '.join(sorted(entries))}")
        return str(entries[name]["token"])
    for entry_name in sorted(entries):
        if role is None or entries[entry_name].get("role") == role:
            return str(entries[entry_name]["token"])
    fail(f"no {role or ''} credential in {path}")
