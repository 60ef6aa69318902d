"""A real `kubewrit webhook` process against the local control plane, for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubewrit.webhook.client.testing import wait_healthy

from tests.conftest import REPO, free_port
from tests.kube.conftest_operator import apply_crds

WALKTHROUGH = REPO / "examples" / "policies" / "support-agent.yaml"


def policy_manifest(namespace: str, name: str = "support-agent", spec: dict | None = None) -> str:
    spec = spec if spec is not None else yaml.safe_load(WALKTHROUGH.read_text())
    return yaml.safe_dump(
        {
            "apiVersion": "kubewrit.io/v1alpha1",
            "kind": "AgentPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def fresh_shop(control_plane: Any, prefix: str) -> str:
    """A namespace of its own with the support agent and its policy: a chain from seq 0."""
    apply_crds(control_plane)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "serviceaccount", "support-agent", "-n", namespace)
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(namespace))
    return namespace


@dataclass
class DecisionWebhook:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str]

    def decide(self, token: str, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/decide",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def get(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def restart(self) -> None:
        """SIGTERM (the replica shuts down as in a rollout), then the same command again."""
        self.stop()
        self.process = launch(self.args, self.url, self.log)


def launch(args: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    """Start `kubewrit webhook` and wait until it answers; stop it if it never does."""
    process = subprocess.Popen(
        args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}
    )
    try:
        wait_healthy(url, lambda: process.poll() is None, "kubewrit webhook", 60, log)
    except RuntimeError:
        process.kill()
        raise
    return process


def start_webhook(
    control_plane: Any, workdir: Path, replica: str = "test-webhook", *extra: str
) -> DecisionWebhook:
    workdir.mkdir(parents=True, exist_ok=True)
    control_plane.kubectl("create", "namespace", "kubewrit-system", check=False)
    port = free_port()
    log = workdir / f"{replica}.log"
    args = [
        shutil.which("kubewrit") or "kubewrit",
        "webhook",
        "--kubeconfig",
        str(control_plane.kubeconfig_for("admin")),
        "--replica",
        replica,
        "--signing-key",
        str(workdir / f"{replica}.pem"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--anchor-seconds",
        "0.5",
        *extra,
    ]
    url = f"http://127.0.0.1:{port}"
    return DecisionWebhook(url, launch(args, url, log), log, args)


@contextmanager
def agent_namespace(
    control_plane: Any,
    prefix: str,
    policy: Callable[[str], str] = policy_manifest,
    agents: Sequence[str] = ("support-agent",),
) -> Iterator[str]:
    """A fresh namespace with the agents' ServiceAccounts and the AgentPolicy `policy`
    makes for it (the walkthrough's by default), deleted afterwards."""
    apply_crds(control_plane)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    for agent in agents:
        control_plane.kubectl("create", "serviceaccount", agent, "-n", namespace)
    control_plane.kubectl("apply", "-f", "-", input=policy(namespace))
    try:
        yield namespace
    finally:
        control_plane.delete_namespace(namespace)


def agent_token(control_plane: Any, namespace: str, agent: str = "support-agent") -> str:
    """A token for the agent's ServiceAccount, minted for the webhook's audience."""
    return control_plane.kubectl(
        "create", "token", agent, "-n", namespace, "--audience", "kubewrit"
    ).stdout.strip()


@contextmanager
def webhooks(
    control_plane: Any, workdir: Path, prefix: str, count: int = 2
) -> Iterator[list[DecisionWebhook]]:
    """`count` webhook replicas, stopped afterwards whatever happened."""
    replicas = [start_webhook(control_plane, workdir, f"{prefix}-{i}") for i in range(count)]
    try:
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
