"""`kubewrit serve`: the standalone decision server."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import uvicorn

from kubewrit.webhook import keys, standalone
from kubewrit.webhook.cli.output import console, fail
from kubewrit.webhook.server.app import create_app


@click.command()
@click.option("-p", "--policies", type=click.Path(file_okay=False, path_type=Path),
              default=Path("examples/policies"), show_default=True,
              help="Directory of policy files, hot-reloaded.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".kubewrit"),
              show_default=True, help="SQLite store, signing key and tokens.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--max-body", default=64 * 1024, show_default=True, type=int, help="Largest request, bytes.")
@click.option("--writ-ttl", default=60, show_default=True, type=int, help="Writ lifetime, seconds.")
@click.option("--approval-ttl", default=900, show_default=True, type=float,
              help="How long a DEFER waits for a human, seconds.")
@click.option("--anchor-every", default=100, show_default=True, type=int,
              help="Publish the chain head every N records...")
@click.option("--anchor-seconds", default=10.0, show_default=True, type=float, help="...or every T seconds.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(policies: Path, data_dir: Path, host: str, port: int, max_body: int, writ_ttl: int,
          approval_ttl: float, anchor_every: int, anchor_seconds: float, log_level: str) -> None:
    """Run the decision API with policy files and an embedded SQLite store."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = standalone.Config(policies=policies, data_dir=data_dir, max_body=max_body, writ_ttl=writ_ttl,
                               approval_ttl=approval_ttl, anchor_every=anchor_every,
                               anchor_seconds=anchor_seconds)
    try:
        runtime = standalone.build(config)
    except (keys.KeyFileError, ValueError, OSError) as exc:
        fail(str(exc))
    state = runtime.state
    console.print(f"[bold]kubewrit[/] serving on http://{host}:{port}  (data: {data_dir})")
    for p in state.policies:
        console.print(f"  policy [cyan]{p.name}[/] {p.hash[:19]}  {len(p.rules)} rules  {p.mode.value}")
    if state.error:
        console.print(f"  [red]policy error:[/] {state.error}")
    if not state.policies:
        console.print(f"  [yellow]no valid policy in {policies}: every action is denied[/]")
    if config.printed:
        console.print("[bold yellow]First start: tokens created (shown once; client copies in "
                      f"{config.credentials_file}):[/]")
        for line in config.printed:
            console.print(f"  {line}")
    uvicorn.run(create_app(runtime), host=host, port=port, log_level=log_level)
