"""A real kubewrit operator process (`python -m kubewrit.operator`) against the control plane.

Import what you need into a test module (``from tests.kube.conftest_operator import ...``).
Each operator gets its own webhook configuration name and namespaces, so it never
judges objects of other tests sharing the control plane, and its persistent
(fail-closed) webhook configurations are deleted when it stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO, free_port

CRDS = REPO / "crds"
EXAMPLES = REPO / "examples" / "kubernetes"


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.3,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def apply_crds(control_plane: Any) -> None:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))


def example_manifests(namespace: str = "shop") -> str:
    """examples/kubernetes/*.yaml as one stream, moved into `namespace`."""
    docs = [p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))]
    text = "\n---\n".join(docs)
    return text.replace("namespace: shop", f"namespace: {namespace}").replace(
        "  name: shop\n", f"  name: {namespace}\n"
    )


@dataclass
class OperatorProcess:
    """One running operator; `log()` is its output so far."""

    control_plane: Any
    process: subprocess.Popen[bytes]
    log_path: Path
    identity: str
    config_name: str | None
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def remove_webhook_configurations(self) -> None:
        """The handlers are persistent (fail closed): without us they would refuse every write."""
        if self.config_name:
            for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
                self.control_plane.kubectl(
                    "delete", kind, self.config_name, "--ignore-not-found", check=False
                )


def _webhooks_point_at(control_plane: Any, config_name: str, port: int) -> bool:
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        r = control_plane.kubectl("get", kind, config_name, "-o", "json", check=False)
        if r.returncode != 0:
            return False
        hooks = json.loads(r.stdout).get("webhooks") or []
        if not hooks or any(f":{port}/" not in h["clientConfig"].get("url", "") for h in hooks):
            return False
    return True


def start_operator(
    control_plane: Any,
    workdir: Path,
    *extra: str,
    namespaces: tuple[str, ...],
    admission: bool = True,
    identity: str | None = None,
    timeout: float = 60,
) -> OperatorProcess:
    """Start `python -m kubewrit.operator` and wait until the API server can call its webhooks."""
    workdir.mkdir(parents=True, exist_ok=True)
    identity = identity or f"op-{uuid.uuid4().hex[:6]}"
    log_path = workdir / f"{identity}.log"
    args = [
        sys.executable,
        "-m",
        "kubewrit.operator",
        "--kubeconfig",
        str(control_plane.kubeconfig_for("admin")),
        "--identity",
        identity,
        "--signing-key",
        str(workdir / f"{identity}-key.pem"),
    ]
    for namespace in namespaces:
        args += ["--namespace", namespace]
    config_name = port = None
    if admission:
        port = free_port()
        config_name = f"kubewrit-test-{uuid.uuid4().hex[:8]}.kubewrit.io"
        args += [
            "--webhook-listen",
            "127.0.0.1",
            "--webhook-port",
            str(port),
            "--webhook-config-name",
            config_name,
        ]
    else:
        args += ["--no-admission"]
    args += list(extra)
    process = subprocess.Popen(
        args,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=str(workdir),
    )
    op = OperatorProcess(control_plane, process, log_path, identity, config_name, args)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"operator exited ({process.returncode}):\n{op.log()}")
        if admission:
            return _webhooks_point_at(control_plane, config_name or "", port or 0)
        return "Initial authentication has finished" in op.log()

    try:
        wait_until(ready, timeout=timeout, what=f"operator {identity} to serve")
        if admission and namespaces:
            confine(control_plane, config_name or "", namespaces)
    except BaseException:
        op.stop()
        op.remove_webhook_configurations()
        raise
    return op


def confine(control_plane: Any, config_name: str, namespaces: tuple[str, ...]) -> None:
    """Scope the (fail-closed) webhooks to the test's namespaces, so a test run killed before
    its teardown cannot leave a configuration that refuses writes in other tests' namespaces.
    kopf patches the configuration only when its client config changes, so this stays."""
    selector = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(namespaces)}
        ]
    }
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        hooks = json.loads(control_plane.kubectl("get", kind, config_name, "-o", "json").stdout)[
            "webhooks"
        ]
        ops = [
            {"op": "add", "path": f"/webhooks/{i}/namespaceSelector", "value": selector}
            for i in range(len(hooks))
        ]
        control_plane.kubectl("patch", kind, config_name, "--type=json", "-p", json.dumps(ops))
