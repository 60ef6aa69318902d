"""`kubewrit console`: the approver's console on Kubernetes, served locally with your kubeconfig."""

from __future__ import annotations

from pathlib import Path

import click
import uvicorn
from kubewrit.webhook.cli.output import fail


@click.command("console")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="Your kubeconfig (default: $KUBECONFIG, then ~/.kube/config); the console acts as you.",
)
@click.option("-n", "--namespace", required=True, help="The namespace whose approvals you decide.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
def console(kubeconfig: Path | None, namespace: str, host: str, port: int) -> None:
    """Serve the approver's console locally, acting with your own Kubernetes credentials.

    Approving is the same patch as `kubectl annotate actionapproval NAME
    kubewrit.io/decision=approve`: the API server and the operator decide whether you may.
    """
    from kubernetes.client import ApiException
    from kubernetes.config import ConfigException
    from kubewrit.webhook.console.kube import KubeBackend, create_app

    kubeconfig = kubeconfig or Path.home() / ".kube" / "config"
    try:
        backend = KubeBackend(kubeconfig, namespace)
    except (ConfigException, ApiException, OSError) as exc:
        fail(f"cannot use {kubeconfig}: {exc}")
    groups = f" (groups: {', '.join(backend.groups)})" if backend.groups else ""
    click.echo(f"kubewrit console: acting as {backend.user}{groups} in namespace {namespace}")
    click.echo(f"  open http://{host}:{port}/ui/ and sign in with the access code:")
    click.echo(f"  {backend.access_code}", nl=True)
    uvicorn.run(
        create_app(backend), host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
    )
