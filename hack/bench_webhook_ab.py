#!/usr/bin/env python3
"""Two Kubernetes-mode webhooks side by side: this tree's and a baseline checkout's.

    git worktree add /tmp/baseline <commit>        # or any checkout of kubewrit
    hack/bench_webhook_ab.py /tmp/baseline --kubeconfig .control-plane/kubeconfig \\
        [--requests 800] [--repeats 3] [--concurrency 1,16]

Both webhooks run on the same control plane, as the same ServiceAccount, in the same
namespace under the same policy; `hey` drives each in turn, round after round
(`bench_decide.rounds`), so a drift of this VM's speed falls on both alike. Prints JSON:
per webhook and concurrency, medians and [min, max] of p50, p99, decisions/s and the CPU
per decision of the webhook, the control plane and the load generator.

The baseline runs from its own source tree: a package directory of symlinks laid out as
installed (`kubewrit/` -> the checkout's `kubewrit/*.py`, `webhook/`, `operator/`) on
its PYTHONPATH, started from a directory with no `kubewrit/` in it, so neither webhook
imports the other's code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_decide
import bench_load
from kubewrit.webhook.client.testing import free_port


def baseline_package(checkout: Path, into: Path) -> Path:
    """`into`, holding `kubewrit` as the checkout's sources would be installed."""
    package = into / "kubewrit"
    package.mkdir(parents=True)
    for source in (checkout / "kubewrit").iterdir():
        (package / source.name).symlink_to(source)
    for part in ("webhook", "operator"):
        (package / part).symlink_to(checkout / part)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="a checkout of kubewrit to compare with")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=bench_decide.integers, default=[1, 16])
    args = parser.parse_args()
    kubeconfig, checkout = args.kubeconfig, args.baseline.resolve()
    if not (checkout / "webhook" / "kube" / "records.py").is_file():
        parser.error(f"{checkout} is not a kubewrit checkout")
    kubectl = bench_decide.kubectl
    bench_decide.prepare_cluster(kubeconfig)
    namespace = f"bench-{uuid.uuid4().hex[:6]}-ab"
    token = bench_decide.agent_namespace(kubeconfig, namespace, limits=0)
    headers = {"Authorization": f"Bearer {token}"}
    control_plane = bench_load.pids_named(*bench_decide.CONTROL_PLANE)
    try:
        with tempfile.TemporaryDirectory(prefix="kubewrit-ab-") as tmp:
            scratch = Path(tmp)
            as_webhook = str(bench_decide.webhook_kubeconfig(kubeconfig, scratch))
            packages = baseline_package(checkout, scratch / "baseline")
            python = ["env", f"PYTHONPATH={packages}", sys.executable, "-c"]
            starts = {
                "this tree": [shutil.which("kubewrit") or "kubewrit"],
                "baseline": [*python, "from kubewrit.cli import main; main()"],
            }
            servers, running = [], []
            for name, start in starts.items():
                port = free_port()
                command = [
                    *start, "webhook", "--kubeconfig", as_webhook,
                    "--replica", f"ab-{name.replace(' ', '-')}-{uuid.uuid4().hex[:4]}",
                    "--signing-key", str(scratch / f"{port}.pem"),
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                ]  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                process = bench_decide.process(command, url, f"{name} webhook", scratch)
                running.append(process)
                servers.append(bench_decide.Server(name, url, 0, headers, behind=control_plane))
            # Started from scratch/: no kubewrit/ there for `python -c` to import first.
            with contextlib.chdir(scratch), running[0] as first, running[1] as second:
                servers[0].pid, servers[1].pid = first, second
                results = bench_decide.rounds(
                    servers, args.concurrency, args.requests, args.repeats
                )
    finally:
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    print(json.dumps({"benchmark": "webhook side by side", "baseline": str(checkout),
                      "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
