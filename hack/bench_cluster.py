#!/usr/bin/env python3
"""Decision latency through a real cluster, beside the host-process webhook; JSON out.

    hack/bench_cluster.py [--count N]

1. `hack/control-plane up --node` (state dir .control-plane-node, like tests/cluster),
   kubewrit's image (`hack/image build`), `helm install` with 2 webhook replicas and
   the walkthrough's namespace `shop` (skipped when already there).
2. An agent pod in `shop` runs tests/cluster/agent_load.py bench: decisions through
   the webhook Service (TLS, TokenReview, ActionRecords) at concurrency 1 and 16.
3. The same client code on the host against `kubewrit webhook` run as a host process
   (today's development setup) on 127.0.0.1, same API server, same policy.

Prints one JSON object: {"service_2_replicas": [...], "host_process": [...], ...}.
The cluster it started is stopped at the end (KEEP=1 leaves it running).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=300, help="decisions per concurrency level")
    a = ap.parse_args()
    sd = REPO / ".control-plane-node"
    env = {**os.environ, "KUBEWRIT_CONTROL_PLANE_DIR": str(sd)}
    image = json.loads(
        subprocess.run(
            [sys.executable, str(HACK / "image.py"), "build"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    started_here = False
    sys.path.insert(0, str(HACK))
    import control_plane as cp

    os.environ["KUBEWRIT_CONTROL_PLANE_DIR"] = str(sd)
    if not (cp.is_running(sd) and cp.load_state(sd).get("node")):
        subprocess.run(
            [sys.executable, str(HACK / "control_plane.py"), "up", "--node"], env=env, check=True
        )
        started_here = True
    try:
        subprocess.run(
            [sys.executable, str(HACK / "control_plane.py"), "load", image["archive"]],
            env=env,
            check=True,
            capture_output=True,
        )
        return run(sd, image["image"], a.count)
    finally:
        if started_here and not os.environ.get("KEEP"):
            subprocess.run([sys.executable, str(HACK / "control_plane.py"), "down"], env=env)


def run(sd: Path, image: str, count: int) -> int:
    from tests.cluster.conftest import CHART, NAMESPACE, RELEASE, example_documents

    st = json.loads((sd / "state.json").read_text())
    kubectl, helm = st["bin"]["kubectl"], st["bin"]["helm"]
    kc = str(sd / "kubeconfig.admin")
    env = {
        **os.environ,
        "KUBECONFIG": kc,
        "HELM_CACHE_HOME": str(sd / "helm/cache"),
        "HELM_CONFIG_HOME": str(sd / "helm/config"),
        "HELM_DATA_HOME": str(sd / "helm/data"),
    }

    def k(*args: str, input: str | None = None, check: bool = True) -> str:
        r = subprocess.run([kubectl, *args], input=input, capture_output=True, text=True, env=env)
        if check and r.returncode:
            raise SystemExit(f"kubectl {' '.join(args)}: {r.stderr}")
        return r.stdout

    repo, tag = image.rsplit(":", 1)
    installed = (
        subprocess.run(
            [helm, "status", RELEASE, "-n", NAMESPACE], env=env, capture_output=True
        ).returncode
        == 0
    )
    if not installed:
        subprocess.run(
            [
                helm,
                "install",
                RELEASE,
                str(CHART),
                "-n",
                NAMESPACE,
                "--create-namespace",
                "--set",
                f"image.repository={repo}",
                "--set",
                f"image.tag={tag}",
                "--set",
                "image.pullPolicy=Never",
                "--set",
                "webhook.replicas=2",
                "--wait",
                "--timeout",
                "4m",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    k("apply", "-f", "-", input=example_documents("shop"))
    import base64

    ca = base64.b64decode(
        json.loads(k("get", "secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE, "-o", "json"))[
            "data"
        ]["ca.crt"]
    ).decode()
    k("delete", "configmap", "kubewrit-bench", "-n", "shop", "--ignore-not-found")
    k(
        "create",
        "configmap",
        "kubewrit-bench",
        "-n",
        "shop",
        f"--from-file=agent_load.py={REPO / 'tests' / 'cluster' / 'agent_load.py'}",
        f"--from-literal=ca.crt={ca}",
    )
    time.sleep(3)  # the policy reaches the webhook caches
    name = f"bench-{int(time.time())}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "serviceAccountName": "support-agent",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "bench",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [
                        "python",
                        "/agent/agent_load.py",
                        "bench",
                        "--count",
                        str(count),
                        "--concurrency",
                        "1",
                        "--concurrency",
                        "16",
                    ],
                    "env": [
                        {
                            "name": "KUBEWRIT_URL",
                            "value": f"https://{RELEASE}-webhook.{NAMESPACE}.svc",
                        },
                        {"name": "KUBEWRIT_CA", "value": "/agent/ca.crt"},
                    ],
                    "volumeMounts": [{"name": "a", "mountPath": "/agent"}],
                }
            ],
            "volumes": [{"name": "a", "configMap": {"name": "kubewrit-bench"}}],
        },
    }
    k("apply", "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        phase = k("get", "pod", name, "-n", "shop", "-o", "jsonpath={.status.phase}")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    logs = k("logs", "-n", "shop", name)
    k("delete", "pod", name, "-n", "shop", "--wait=false")
    service = json.loads([ln for ln in logs.splitlines() if ln.startswith("[")][-1])
    replicas = len(
        json.loads(
            k(
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                "app.kubernetes.io/component=webhook",
                "-o",
                "json",
            )
        )["items"]
    )

    # Today's host process, same API server and policy, same client code.
    from kubewrit.webhook.client.testing import free_port, wait_healthy

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "webhook.log").open("w") as log:
        proc = subprocess.Popen(
            [
                "kubewrit",
                "webhook",
                "--kubeconfig",
                kc,
                "--namespace",
                "kubewrit-bench",
                "--replica",
                "bench-host",
                "--signing-key",
                str(Path(tmp) / "key.pem"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            k("create", "namespace", "kubewrit-bench", check=False)
            wait_healthy(
                f"http://127.0.0.1:{port}",
                lambda: proc.poll() is None,
                "kubewrit webhook",
                log=Path(tmp) / "webhook.log",
            )
            time.sleep(2)
            token = k(
                "create", "token", "support-agent", "-n", "shop", "--audience", "kubewrit"
            ).strip()
            r = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "tests" / "cluster" / "agent_load.py"),
                    "bench",
                    "--count",
                    str(count),
                    "--concurrency",
                    "1",
                    "--concurrency",
                    "16",
                ],
                env={
                    **os.environ,
                    "KUBEWRIT_URL": f"http://127.0.0.1:{port}",
                    "KUBEWRIT_TOKEN": token,
                },
                capture_output=True,
                text=True,
                check=True,
            )
            host = json.loads(r.stdout.strip().splitlines()[-1])
        finally:
            proc.terminate()
            proc.wait(10)
    print(
        json.dumps(
            {
                "service": {
                    "replicas": replicas,
                    "tls": True,
                    "from": "agent pod via ClusterIP Service",
                    "results": service,
                },
                "host_process": {
                    "replicas": 1,
                    "tls": False,
                    "from": "host, 127.0.0.1",
                    "results": host,
                },
                "decisions_per_level": count,
                "machine": f"{os.cpu_count()} cores, shared",
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
