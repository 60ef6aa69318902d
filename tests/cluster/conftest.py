"""Fixtures for tests through real pods: a control plane with a node, kubewrit's image
built from the Dockerfile, and `helm install` of the chart with default values.

``cluster`` (session)
    :class:`Cluster`: ``hack/control-plane up --node`` in its own state dir
    (``<clone>/.control-plane-node``, beside the node-less one the ``kube`` tests
    use), with kubewrit's image (``hack/image build``) imported into the node's
    containerd. Stopped at the end of the session, pods, mounts and bridge
    included (a watchdog does it if pytest dies). A node that cannot start is a
    test ERROR with the components' log tails, never a skip.

``kubewrit`` (session)
    :class:`Release`: ``helm install kubewrit charts/kubewrit -n kubewrit-system``
    with the local image, waited Ready; the walkthrough's namespace ``shop``
    applied from examples/kubernetes.

Tests here are marked ``cluster`` (and ``kube``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.conftest import HACK, ControlPlane, _cp

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubewrit"
NAMESPACE = "kubewrit-system"
RELEASE = "kubewrit"
WEBHOOK_URL = f"https://{RELEASE}-webhook.{NAMESPACE}.svc"
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-scheduler")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.kube)
            # Cold: the node's binaries and the image build in the first test's setup.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(1200))


@dataclass
class Cluster(ControlPlane):
    """A control plane with a node. ``image``: kubewrit's image name in the node;
    ``image_figures``: its build figures (size_bytes, build_seconds)."""

    image: str = ""
    image_figures: dict[str, Any] = field(default_factory=dict)

    def node_logs(self, lines: int = 25) -> str:
        return "\n".join(self.log_tail(c, lines) for c in ("kube-apiserver", *NODE_COMPONENTS))

    def json(self, *args: str, user: str = "admin") -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", user=user).stdout)

    def wait(
        self, check: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.5
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}\n{self.describe()}"
        )

    def describe(self) -> str:
        r = self.kubectl("get", "pods", "-A", "-o", "wide", check=False)
        e = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False)
        return f"--- pods ---\n{r.stdout}\n--- events (last 25) ---\n" + "\n".join(
            e.stdout.splitlines()[-25:]
        )

    def pod_logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        args = ["logs", "-n", namespace, pod] + (["-c", container] if container else [])
        return self.kubectl(*args, check=False).stdout

    def wait_finished(self, namespace: str, pod: str, what: str, timeout: float = 120) -> str:
        """Wait until the pod has Succeeded or Failed; return which."""

        def finished() -> str:
            phase = self.kubectl(
                "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
            ).stdout
            return phase if phase in ("Succeeded", "Failed") else ""

        return str(self.wait(finished, what, timeout))

    def run_pod(self, manifest: dict[str, Any], timeout: float = 120) -> tuple[str, str]:
        """Create a pod, wait until it ends; return (phase, logs)."""
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        phase = self.wait_finished(ns, name, f"pod {ns}/{name} to finish", timeout)
        return phase, self.pod_logs(ns, name)


def _run_streaming(
    request: pytest.FixtureRequest, cmd: list[str], env: dict[str, str]
) -> tuple[int, str]:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    out: list[str] = []
    ctx = capman.global_and_fixture_disabled() if capman else None
    if ctx:
        ctx.__enter__()
    try:
        sys.stderr.write("\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("["):
                sys.stderr.write(line)
                sys.stderr.flush()
            out.append(line)
        rc = proc.wait()
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
    return rc, "".join(out)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    sd = Path(os.environ.get("KUBEWRIT_NODE_CONTROL_PLANE_DIR") or REPO / ".control-plane-node")
    env = {**os.environ, "KUBEWRIT_CONTROL_PLANE_DIR": str(sd)}
    t0 = time.monotonic()
    rc, out = _run_streaming(request, [sys.executable, str(HACK / "image.py"), "build"], env)
    if rc != 0:
        pytest.fail(f"hack/image build failed (exit {rc}):\n{out[-6000:]}", pytrace=False)
    image = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    t_image = time.monotonic() - t0
    cmd = [
        sys.executable,
        str(HACK / "control_plane.py"),
        "up",
        "--node",
        "--owner-pid",
        str(os.getpid()),
    ]
    rc, out = _run_streaming(request, cmd, env)
    if rc != 0:
        tails = "\n".join(_cp.log_tail(sd, c, 25) for c in ("kube-apiserver", *NODE_COMPONENTS))
        pytest.fail(
            f"hack/control-plane up --node failed (exit {rc}); tests through pods cannot run.\n"
            f"{out[-5000:]}\n{tails}",
            pytrace=False,
        )
    t_up = time.monotonic() - t0 - t_image
    st = _cp.load_state(sd)
    c = Cluster(
        server=st["server"],
        state_dir=sd,
        kubeconfig=sd / "kubeconfig",
        ca_file=sd / "pki" / "ca.crt",
        bin={k: Path(v) for k, v in st["bin"].items()},
        versions=st.get("versions", {}),
        image=image["image"],
        image_figures={**image, "image_seconds": round(t_image, 1), "up_seconds": round(t_up, 1)},
    )
    try:
        rc, out = _run_streaming(
            request, [sys.executable, str(HACK / "control_plane.py"), "load", image["archive"]], env
        )
        if rc != 0:
            pytest.fail(f"importing {image['image']} into the node failed:\n{out}", pytrace=False)
        yield c
    finally:
        c.close()
        subprocess.run(
            [
                sys.executable,
                str(HACK / "control_plane.py"),
                "release",
                "--owner-pid",
                str(os.getpid()),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=180,
        )


@dataclass
class Release:
    cluster: Cluster
    shop: str
    install_seconds: float
    public_key: str
    ca_pem: str

    def webhook_pods(self) -> list[dict[str, Any]]:
        return self.cluster.json(
            "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=webhook"
        )["items"]


def helm_values(c: Cluster) -> list[str]:
    repo, tag = c.image.rsplit(":", 1)
    return [
        "--set",
        f"image.repository={repo}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
    ]


def example_documents(shop: str) -> str:
    docs = []
    for f in sorted((REPO / "examples" / "kubernetes").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                d.setdefault("metadata", {})
                if d["kind"] == "Namespace":
                    d["metadata"]["name"] = shop
                else:
                    d["metadata"]["namespace"] = shop
                docs.append(d)
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="session")
def kubewrit(cluster: Cluster) -> Iterator[Release]:
    # A cluster started by hand may hold a previous run's release and walkthrough.
    if cluster.helm("status", RELEASE, "-n", NAMESPACE, check=False).returncode == 0:
        cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=180)
    cluster.kubectl("delete", "namespace", "shop", "--ignore-not-found", "--wait=true", timeout=120)
    t0 = time.monotonic()
    cluster.helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--create-namespace",
        *helm_values(cluster),
        "--wait",
        "--timeout",
        "4m",
        timeout=300,
    )
    install = time.monotonic() - t0
    shop = "shop"
    cluster.kubectl("apply", "-f", "-", input=example_documents(shop))
    cluster.wait(
        lambda: (
            "True"
            in cluster.kubectl(
                "get",
                "agentpolicy",
                "support-agent",
                "-n",
                shop,
                "-o",
                "jsonpath={.status.conditions[0].status}",
                check=False,
            ).stdout
        ),
        "the AgentPolicy to be Ready",
    )
    keys = cluster.wait(
        lambda: (
            cluster.json("get", "configmap", "kubewrit-keys", "-n", NAMESPACE)
            if cluster.kubectl(
                "get", "configmap", "kubewrit-keys", "-n", NAMESPACE, check=False
            ).returncode
            == 0
            else None
        ),
        "the webhook to publish its key",
    )
    public_keys = sorted(set(keys["data"].values()))
    assert len(public_keys) == 1, f"replicas share the chart's signing key: {keys['data']}"
    import base64

    ca = base64.b64decode(
        cluster.json("get", "secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)["data"]["ca.crt"]
    ).decode()
    cluster.kubectl(
        "create",
        "configmap",
        "kubewrit-agent",
        "-n",
        shop,
        f"--from-file=cluster_agent.py={REPO / 'examples' / 'agents' / 'cluster_agent.py'}",
        f"--from-file=agent_load.py={Path(__file__).parent / 'agent_load.py'}",
        f"--from-literal=ca.crt={ca}",
    )
    yield Release(cluster, shop, install, public_keys[0], ca)


def agent_pod(
    release: Release, name: str, command: list[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pod in `shop` as the support agent: its projected token, kubewrit's image."""
    c = release.cluster
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": release.shop},
        "spec": {
            "serviceAccountName": "support-agent",
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [
                {
                    "name": "agent",
                    "image": c.image,
                    "imagePullPolicy": "Never",
                    "command": ["python", *command],
                    "env": [
                        {"name": k, "value": v}
                        for k, v in {
                            "KUBEWRIT_URL": WEBHOOK_URL,
                            "KUBEWRIT_CA": "/agent/ca.crt",
                            "KUBEWRIT_PUBLIC_KEY": release.public_key,
                            **(env or {}),
                        }.items()
                    ],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "agent", "mountPath": "/agent"},
                        {"name": "kubewrit-token", "mountPath": "/var/run/secrets/kubewrit"},
                    ],
                }
            ],
            "volumes": [
                {"name": "agent", "configMap": {"name": "kubewrit-agent"}},
                {  # a token minted for the webhook's audience, which the SDK finds
                    "name": "kubewrit-token",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"audience": "kubewrit", "path": "token"}}
                        ]
                    },
                },
            ],
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
