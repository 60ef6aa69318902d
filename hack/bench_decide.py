#!/usr/bin/env python3
"""Benchmark `POST /v1/decide`: latency percentiles and throughput, printed as JSON.

    hack/bench_decide.py standalone [--requests N] [--concurrency C]
    hack/bench_decide.py kubernetes --kubeconfig PATH [--requests N] [--concurrency C]

Standalone starts `kubewrit serve` (SQLite, durable group commit) in a temporary
directory. Kubernetes mode starts `kubewrit webhook` against the cluster in
KUBECONFIG (e.g. `hack/control-plane up`), so every decision is an ActionRecord
persisted through the API server before the answer, and also reports the etcd
bytes per record. Requests are bounded in count and go to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml
from kubewrit.webhook.client.testing import free_port, served_process, wait_healthy

REPO = Path(__file__).resolve().parent.parent
AMOUNTS = (45, 120, 1200, 20, 99)  # a mix of PERMIT and DENY (no approvals pile up)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def drive(url: str, token: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:

        async def worker() -> None:
            for index in counter:
                body = {
                    "tool": "process_refund",
                    "args": {"amount": AMOUNTS[index % len(AMOUNTS)], "order": f"o-{index}"},
                }
                started = time.perf_counter()
                answer = await client.post("/v1/decide", json=body)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200 or answer.json().get("record") is None:
                    raise RuntimeError(
                        f"unexpected answer: {answer.status_code} {answer.text[:200]}"
                    )

        for _ in range(20):  # warm-up: connections, caches, first chain open
            await client.post("/v1/decide", json={"tool": "send_email", "args": {}})
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed


def report(
    mode: str, latencies: list[float], elapsed: float, concurrency: int, **extra: object
) -> None:
    ms = [x * 1000 for x in latencies]
    print(
        json.dumps(
            {
                "benchmark": "decide",
                "mode": mode,
                "requests": len(ms),
                "concurrency": concurrency,
                "p50_ms": round(percentile(ms, 0.50), 3),
                "p95_ms": round(percentile(ms, 0.95), 3),
                "p99_ms": round(percentile(ms, 0.99), 3),
                "mean_ms": round(statistics.fmean(ms), 3),
                "throughput_per_s": round(len(ms) / elapsed, 1),
                **extra,
            },
            indent=2,
        )
    )


def standalone(args: argparse.Namespace) -> None:
    with served_process(REPO / "examples" / "policies") as server:
        latencies, elapsed = asyncio.run(
            drive(server.url, server.tokens["support-agent"], args.requests, args.concurrency)
        )
    report(
        "standalone", latencies, elapsed, args.concurrency, store="sqlite (WAL, synchronous=FULL)"
    )


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=input,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def etcd_bytes_per_record(kubeconfig: str, namespace: str) -> float | None:
    """Size of the stored objects as the API server serializes them (what etcd holds, as JSON)."""
    listing = json.loads(kubectl(kubeconfig, "get", "actionrecords", "-n", namespace, "-o", "json"))
    items = listing["items"]
    if not items:
        return None
    sizes = [len(json.dumps(item, separators=(",", ":"))) for item in items]
    return round(statistics.fmean(sizes), 1)


def kubernetes(args: argparse.Namespace) -> None:
    kubeconfig = args.kubeconfig
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(kubeconfig, "create", "namespace", namespace)
    kubectl(
        kubeconfig, "create", "namespace", "kubewrit-system"
    ) if "kubewrit-system" not in kubectl(kubeconfig, "get", "ns", "-o", "name") else None
    kubectl(kubeconfig, "create", "serviceaccount", "support-agent", "-n", namespace)
    spec = yaml.safe_load((REPO / "examples" / "policies" / "support-agent.yaml").read_text())
    kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "kubewrit.io/v1alpha1",
                "kind": "AgentPolicy",
                "metadata": {"name": "support-agent", "namespace": namespace},
                "spec": spec,
            }
        ),
    )
    token = kubectl(
        kubeconfig, "create", "token", "support-agent", "-n", namespace, "--audience", "kubewrit"
    ).strip()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = Path(tmp) / "webhook.log"
        process = subprocess.Popen(
            [
                shutil.which("kubewrit") or "kubewrit",
                "webhook",
                "--kubeconfig",
                kubeconfig,
                "--replica",
                f"bench-{os.getpid()}",
                "--signing-key",
                str(Path(tmp) / "key.pem"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, lambda: process.poll() is None, "kubewrit webhook", 60, log)
            latencies, elapsed = asyncio.run(drive(url, token, args.requests, args.concurrency))
        finally:
            process.terminate()
            process.wait(timeout=15)
    size = etcd_bytes_per_record(kubeconfig, namespace)
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    report(
        "kubernetes",
        latencies,
        elapsed,
        args.concurrency,
        store="ActionRecord objects via kube-apiserver",
        bytes_per_record=size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["standalone", "kubernetes"])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""))
    args = parser.parse_args()
    if args.mode == "kubernetes" and not args.kubeconfig:
        parser.error("kubernetes mode needs --kubeconfig (or KUBECONFIG)")
    standalone(args) if args.mode == "standalone" else kubernetes(args)


if __name__ == "__main__":
    main()
