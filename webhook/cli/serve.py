"""`kubewrit serve`: the standalone decision server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import uvicorn
from kubewrit.webhook import keys, standalone
from kubewrit.webhook.cli.output import console, fail
from kubewrit.webhook.console.standalone import with_console
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.server.app import create_app
from kubewrit.webhook.server.workers import WorkersFailed, reuseport_socket, supervise


def server_options(command: Callable[..., None]) -> Callable[..., None]:
    """The knobs both servers share: limits, lifetimes, anchoring, logging."""
    options = [
        click.option(
            "--max-body",
            default=64 * 1024,
            show_default=True,
            type=int,
            help="Largest request, bytes (larger: 413).",
        ),
        click.option(
            "--writ-ttl", default=60, show_default=True, type=int, help="Writ lifetime, seconds."
        ),
        click.option(
            "--approval-ttl",
            default=900,
            show_default=True,
            type=float,
            help="How long a DEFER waits for a human, seconds.",
        ),
        click.option(
            "--anchor-every",
            default=100,
            show_default=True,
            type=int,
            help="Publish the chain head every N records...",
        ),
        click.option(
            "--anchor-seconds",
            default=10.0,
            show_default=True,
            type=float,
            help="...or every T seconds.",
        ),
        click.option(
            "--log-level",
            default="info",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"]),
        ),
        click.option(
            "--access-log/--no-access-log",
            default=False,
            show_default=True,
            help="Log a line per HTTP request. Off by default: every decision already has "
            "its signed record, and the line costs a decision about a tenth of its CPU.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class Logs:
    """What a server logs: its level, and whether uvicorn logs every request."""

    level: str
    access: bool = False

    def start(self) -> None:
        logging.basicConfig(
            level=self.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

    def uvicorn(self) -> dict[str, Any]:
        return {"log_level": self.level, "access_log": self.access}


@click.command()
@click.option(
    "-p",
    "--policies",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("examples/policies"),
    show_default=True,
    help="Directory of policy files, hot-reloaded.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kubewrit"),
    show_default=True,
    help="SQLite store, signing key and tokens.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port, the policies and the store, each writing its "
    "own chain (e.g. one per core); they share limits by leasing slices of each budget. "
    "No console.",
)
@server_options
def serve(
    policies: Path,
    data_dir: Path,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
    **tuning: Any,
) -> None:
    """Run the decision API with policy files and an embedded SQLite store."""
    logs = Logs(log_level, access_log)
    logs.start()
    config = standalone.Config(policies=policies, data_dir=data_dir, **tuning)
    if workers > 1:
        serve_workers(config, host, port, workers, logs)
        return
    try:
        runtime = standalone.build(config)
    except (keys.KeyFileError, ValueError, OSError) as exc:
        fail(str(exc))
    describe(config, runtime.state, host, port)
    uvicorn.run(with_console(create_app(runtime), runtime), host=host, port=port, **logs.uvicorn())


def serve_workers(
    config: standalone.Config, host: str, port: int, workers: int, logs: Logs
) -> None:
    """Several server processes, each with its own runtime, chain and socket on the port."""
    try:
        state = standalone.prepare(config, workers)
        reuseport_socket(host, port).close()  # the port is free (else: say so now, once)
    except (keys.KeyFileError, ValueError, OSError) as exc:
        fail(str(exc))
    describe(config, state, host, port)
    console.print(
        f"  {workers} worker processes, a chain each; the console (/ui) needs --workers 1"
    )
    config.shared, config.bootstrap_tokens = True, False
    try:
        supervise(run_worker, (config.to_json(), host, port, logs), workers)
    except WorkersFailed as exc:
        fail(str(exc))


def run_worker(spec: str, host: str, port: int, logs: Logs) -> None:
    """One worker of `serve --workers N` (a spawned process)."""
    logs.start()
    app = create_app(standalone.build(standalone.Config.from_json(spec)))
    server = uvicorn.Server(uvicorn.Config(app, **logs.uvicorn()))
    server.run(sockets=[reuseport_socket(host, port)])


def describe(config: standalone.Config, state: PolicyState, host: str, port: int) -> None:
    policies, data_dir = config.policies, config.data_dir
    console.print(f"[bold]kubewrit[/] serving on http://{host}:{port}  (data: {data_dir})")
    for p in state.policies:
        console.print(
            f"  policy [cyan]{p.name}[/] {p.hash[:19]}  {len(p.rules)} rules  {p.mode.value}"
        )
    if state.error:
        console.print(f"  [red]policy error:[/] {state.error}")
    if not state.policies:
        console.print(f"  [yellow]no valid policy in {policies}: every action is denied[/]")
    if config.printed:
        console.print(
            "[bold yellow]First start: tokens created (shown once; client copies in "
            f"{config.credentials_file}):[/]"
        )
        for line in config.printed:
            console.print(f"  {line}")


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path),
    envvar="KUBECONFIG",
    help="Outside a cluster: the kubeconfig to use (in a pod: the service account).",
)
@click.option(
    "--namespace",
    default="kubewrit-system",
    show_default=True,
    help="Where this webhook publishes its public key (and records without a namespace).",
)
@click.option(
    "--replica", envvar="POD_NAME", default="", help="This replica's name; names its chains."
)
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/var/run/kubewrit/signing-key.pem"),
    show_default=True,
    help="Ed25519 key (created if missing); keep it to continue the same chains after restarts.",
)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8443, show_default=True, type=int)
@click.option(
    "--tls-cert", type=click.Path(exists=True, path_type=Path), help="Serve HTTPS with this cert."
)
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--request-id-ttl",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(min=60),
    help="How long a request id is remembered across replicas (one decision per id), seconds.",
)
@click.option(
    "--approval-namespace",
    "approval_namespaces",
    multiple=True,
    help="Honour approval decisions only in these namespaces: the ones the operator watches "
    "(repeat; default: all). Elsewhere nothing validates who stamped a decision.",
)
@click.option(
    "--token-audience",
    default="kubewrit",
    show_default=True,
    help="The audience agents' ServiceAccount tokens must be minted for "
    "(kubectl create token SA --audience kubewrit; a projected token volume with this audience).",
)
@click.option(
    "--token-cache-seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0, max=60),
    help="How long a TokenReview is trusted (never past the token's expiry): the most the "
    "webhook may lag the API server in refusing a revoked token.",
)
@server_options
def webhook(
    kubeconfig: Path | None,
    namespace: str,
    replica: str,
    signing_key: Path,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    request_id_ttl: float,
    approval_namespaces: tuple[str, ...],
    token_audience: str,
    token_cache_seconds: float,
    log_level: str,
    access_log: bool,
    **tuning: Any,
) -> None:
    """Run the decision API in Kubernetes mode: TokenReview, AgentPolicies, ActionRecords."""
    from kubewrit.webhook.kube import runtime as kube_runtime

    logs = Logs(log_level, access_log)
    logs.start()
    config = kube_runtime.Config(
        kubeconfig=kubeconfig,
        namespace=namespace,
        replica=replica,
        signing_key=signing_key,
        request_id_ttl=request_id_ttl,
        approval_namespaces=approval_namespaces,
        token_audience=token_audience,
        token_cache_seconds=token_cache_seconds,
        **tuning,
    )
    try:
        runtime = kube_runtime.build(config)
    except (keys.KeyFileError, OSError) as exc:
        fail(str(exc))
    console.print(f"[bold]kubewrit webhook[/] {config.replica_name()} on {host}:{port}")
    uvicorn.run(
        create_app(runtime),
        host=host,
        port=port,
        **logs.uvicorn(),
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
