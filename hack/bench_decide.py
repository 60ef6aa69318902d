#!/usr/bin/env python3
"""Benchmark `POST /v1/decide` with a compiled load generator; JSON on stdout.

    hack/bench_decide.py standalone [--requests N] [--concurrency 1,16,32] [--workers 1,2]
                                    [--repeats R] [--prefill M] [--limits 0,1,3] [--pin]
    hack/bench_decide.py kubernetes --kubeconfig PATH [--requests N] [--concurrency 1,16]
                                    [--limits 0,1,3]

The client is `hey` (Go; built from its module on first use, see bench_load.py), a
separate process, so the figures are the server's, not a Python client's. Every
request is a fresh decision (no request_id): a PERMIT for a small refund, durable
(fsync'd SQLite commit, or an ActionRecord through the API server) and signed
before its answer, with a writ. After the runs the store is counted: every 200
must have its record.

Configurations (server x concurrency) are interleaved round by round and repeated;
each is reported as the median and range over the rounds, beside floors measured in
the same run on the same machine: one fsync'd SQLite commit, one Ed25519 signature,
a constant-answer endpoint on the same FastAPI/uvicorn stack driven the same way, and
in Kubernetes mode one ActionRecord created at a time, before and after the rounds.

`--limits 0,1,3` serves the same policy with that many limits on the refund (a count
per hour, a sum per day, a count per order: bounds no run reaches, so every decision
draws on every limit and none is exceeded), side by side: what limits cost.

`--prefill M` first fills the store with M valid sealed records (other chains, by
direct inserts) and reports the same runs against it, with bytes per record and the
time `kubewrit verify` takes: flatness as the store grows.

`--pin` (standalone, one worker) runs every server on the first CPU and hey on the
others, so the load generator never takes the server's core: on this VM a woken thread
then never waits for another CPU to wake.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_load
import bench_store
from kubewrit.webhook.client.testing import free_port, serve_command, wait_healthy

REPO = Path(__file__).resolve().parent.parent
BODY = json.dumps({"tool": "process_refund", "args": {"amount": 45, "order": "A-1"}}).encode()


@dataclass
class Server:
    name: str
    url: str
    pid: int
    headers: dict[str, str]
    database: Path | None = None
    behind: list[int] | None = None  # processes it waits on (kube-apiserver, etcd, ...)


@contextmanager
def process(command: list[str], url: str, what: str, scratch: Path) -> Iterator[int]:
    log_path = scratch / f"{what.replace(' ', '-')}.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, lambda: child.poll() is None, what, 60, log_path)
            yield child.pid
        finally:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


LIMITS = [
    {
        "name": "refunds-per-hour",
        "match": {"tool": "process_refund"},
        "max": 10**12,
        "window": "1h",
    },
    {
        "name": "refunded-per-day",
        "match": {"tool": "process_refund"},
        "sum": "amount",
        "max": 10**15,
        "window": "24h",
    },
    {
        "name": "refunds-per-order",
        "match": {"tool": "process_refund"},
        "max": 10**12,
        "window": "24h",
        "per": ["args.order"],
    },
]


def walkthrough_spec(limits: int) -> dict[str, object]:
    """The walkthrough policy, with the first `limits` of LIMITS."""
    spec = yaml.safe_load((REPO / "examples" / "policies" / "support-agent.yaml").read_text())
    if limits:
        spec["limits"] = LIMITS[:limits]
    return spec


@contextmanager
def kubewrit_serve(
    workers: int, scratch: Path, data_dir: Path, name: str = "", limits: int = 0
) -> Iterator[Server]:
    name = name or f"decide/w{workers}"
    policy_dir = scratch / f"policies-{name.replace('/', '-')}"
    policy_dir.mkdir()
    (policy_dir / "support-agent.yaml").write_text(yaml.safe_dump(walkthrough_spec(limits)))
    port = free_port()
    command = serve_command(policy_dir, data_dir, port)
    if workers > 1:
        command += ["--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with process(command, url, f"kubewrit serve {name.replace('/', ' ')}", scratch) as pid:
        credentials = yaml.safe_load((data_dir / "credentials.yaml").read_text())
        token = credentials["credentials"]["support-agent"]["token"]
        yield Server(
            name,
            url,
            pid,
            {"Authorization": f"Bearer {token}"},
            data_dir / "kubewrit.db",
        )


@contextmanager
def floor_server(workers: int, scratch: Path) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench_floor_app:app",
        "--app-dir",
        str(REPO / "hack"),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with process(command, url, f"floor w{workers}", scratch) as pid:
        yield Server(f"floor_http/w{workers}", url, pid, {})


def decisions_in(database: Path) -> int:
    connection = sqlite3.connect(str(database))
    try:
        return int(
            connection.execute("SELECT COUNT(*) FROM records WHERE kind = 'decision'").fetchone()[0]
        )
    finally:
        connection.close()


def records_per_signature(database: Path) -> float:
    """Records over signed records: how many records each signature covered (chain.py)."""
    connection = sqlite3.connect(str(database))
    try:
        total, batched = connection.execute(
            "SELECT COUNT(*), SUM(body LIKE '%\"batched\":true%') FROM records"
        ).fetchone()
    finally:
        connection.close()
    return round(total / max(1, total - (batched or 0)), 2)


WARM_PER_CLIENT = 50


def warm(server: Server, concurrency: int) -> None:
    bench_load.hey(
        server.url + "/v1/decide",
        BODY,
        WARM_PER_CLIENT * concurrency,
        concurrency,
        server.pid,
        server.headers,
    )


def answers_sent(args: argparse.Namespace) -> int:
    """Decisions each server was sent: hey sends requests // c per client, and the warm-up."""
    sent = args.repeats * sum(max(1, args.requests // c) * c for c in args.concurrency)
    return sent + WARM_PER_CLIENT * max(args.concurrency)


def rounds(
    servers: list[Server],
    concurrencies: list[int],
    requests: int,
    repeats: int,
    client_cpus: set[int] | None = None,
) -> dict[str, dict[str, object]]:
    """Every (server, concurrency) once per round, rounds interleaved; medians and ranges."""
    runs: dict[tuple[str, int], list[bench_load.Run]] = {}
    for server in servers:
        warm(server, max(concurrencies))
    for _ in range(repeats):
        for concurrency in concurrencies:
            for server in servers:
                run = bench_load.hey(
                    server.url + "/v1/decide",
                    BODY,
                    requests,
                    concurrency,
                    server.pid,
                    server.headers,
                    server.behind,
                    client_cpus,
                )
                bad = {code: n for code, n in run.statuses.items() if code != 200}
                if bad:
                    raise RuntimeError(f"{server.name} c={concurrency}: non-200 answers {bad}")
                runs.setdefault((server.name, concurrency), []).append(run)
    results: dict[str, dict[str, object]] = {}
    for (name, concurrency), found in runs.items():
        summaries = [run.summary() for run in found]
        results.setdefault(name, {})[f"c{concurrency}"] = bench_load.spread(summaries)
    return results


def floors(scratch: Path) -> dict[str, float]:
    return {
        "fsync_commit_ms": bench_load.fsync_commit_floor(scratch),
        "ed25519_sign_us": bench_load.ed25519_sign_floor(),
    }


def prefill(data_dir: Path, records: int) -> dict[str, object]:
    """Fill a fresh data dir's store with valid sealed records (see bench_store.py)."""
    import bench_store

    started = time.perf_counter()
    bench_store.fill(data_dir, records)
    filled = time.perf_counter() - started
    return {
        "prefilled_records": records,
        "prefill_seconds": round(filled, 1),
        **bench_store.bytes_per_record(data_dir),
    }


def pinning() -> tuple[set[int], set[int]]:
    """(the servers' CPU, hey's CPUs): the first CPU this process may use, and the rest."""
    usable = sorted(os.sched_getaffinity(0))
    return {usable[0]}, set(usable[1:])


def standalone(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="kubewrit-bench-") as tmp:
        scratch = Path(tmp)
        report: dict[str, object] = {
            "benchmark": "decide",
            "mode": "standalone",
            "store": "sqlite (WAL, synchronous=FULL), one chain per worker",
            "body": BODY.decode(),
            "requests_per_run": args.requests,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "load_generator": f"hey {bench_load.HEY_VERSION} (Go), separate process",
            "floors": floors(scratch),
        }
        stores = [(f"decide/w{w}", w, scratch / f"data-w{w}", 0) for w in args.workers]
        stores += [
            (f"decide/w{w}+{n}limits", w, scratch / f"data-w{w}-l{n}", n)
            for w in args.workers
            for n in args.limits
            if n
        ]
        if args.prefill:
            label = (
                f"{args.prefill // 1000}k" if args.prefill < 10**6 else f"{args.prefill / 1e6:g}M"
            )
            for workers in args.workers:
                data_dir = scratch / f"data-w{workers}-prefilled"
                report[f"prefill_w{workers}"] = prefill(data_dir, args.prefill)
                stores.append((f"decide/w{workers}+{label}", workers, data_dir, 0))
        with contextlib.ExitStack() as stack:
            servers = []
            for name, workers, data_dir, limits in stores:
                servers.append(
                    stack.enter_context(kubewrit_serve(workers, scratch, data_dir, name, limits))
                )
            servers += [stack.enter_context(floor_server(w, scratch)) for w in args.workers]
            client_cpus = None
            if args.pin:
                server_cpus, client_cpus = pinning()
                for server in servers:
                    bench_load.pin(server.pid, server_cpus)
                report["pinned"] = {
                    "server_cpus": sorted(server_cpus),
                    "load_generator_cpus": sorted(client_cpus),
                }
            before = {s.name: decisions_in(s.database) for s in servers if s.database}
            report["results"] = rounds(
                servers, args.concurrency, args.requests, args.repeats, client_cpus
            )
            sent = answers_sent(args)
            for server in servers:
                if server.database is None:
                    continue
                recorded = decisions_in(server.database) - before[server.name]
                if recorded != sent:
                    raise RuntimeError(f"{server.name}: {sent} answers but {recorded} records")
            report["every_answer_recorded"] = True
            report["records_per_signature"] = {
                s.name: records_per_signature(s.database) for s in servers if s.database
            }
        if args.prefill:
            import bench_store

            for workers in args.workers:
                data_dir = scratch / f"data-w{workers}-prefilled"
                report[f"prefill_w{workers}"].update(bench_store.verify_seconds(data_dir))
        return report


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=input,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def bench_namespaces(kubeconfig: str) -> list[str]:
    listed = kubectl(kubeconfig, "get", "ns", "-o", "jsonpath={.items[*].metadata.name}")
    return [name for name in listed.split() if name.startswith("bench-")]


def quiet_control_plane(kubeconfig: str, timeout: float = 300) -> None:
    """Wait until earlier runs' namespaces are gone: their thousands of ActionRecords are
    deleted by the control plane in the background, on the cores this run measures."""
    started = time.monotonic()
    if earlier := bench_namespaces(kubeconfig):
        # Left by a run that did not finish, or already going: deleting either is safe.
        kubectl(kubeconfig, "delete", "namespace", "--wait=false", "--ignore-not-found", *earlier)
    while earlier:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"still being deleted after {timeout:.0f}s: {earlier}")
        print(
            f"waiting for {len(earlier)} earlier benchmark namespace(s) to be deleted",
            file=sys.stderr,
        )
        time.sleep(5)
        earlier = bench_namespaces(kubeconfig)


def prepare_cluster(kubeconfig: str) -> None:
    """kubewrit's CRDs and namespace in place, once earlier runs' namespaces are gone."""
    if missing := [tool for tool in ("kubectl", "helm") if shutil.which(tool) is None]:
        sys.exit(
            f'{" and ".join(missing)} not on PATH: run `eval "$(hack/control-plane env)"` '
            "first (the pinned kubectl and helm)"
        )
    quiet_control_plane(kubeconfig)
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    if "namespace/kubewrit-system" not in kubectl(kubeconfig, "get", "ns", "-o", "name"):
        kubectl(kubeconfig, "create", "namespace", "kubewrit-system")


def agent_namespace(kubeconfig: str, namespace: str, limits: int) -> str:
    """A new namespace with the walkthrough's agent and policy; the agent's token."""
    kubectl(kubeconfig, "create", "namespace", namespace)
    kubectl(kubeconfig, "create", "serviceaccount", "support-agent", "-n", namespace)
    manifest = {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": "support-agent", "namespace": namespace},
        "spec": walkthrough_spec(limits),
    }
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    return kubectl(
        kubeconfig, "create", "token", "support-agent", "-n", namespace, "--audience", "kubewrit"
    ).strip()


def webhook_kubeconfig(kubeconfig: str, scratch: Path) -> Path:
    """A kubeconfig for the webhook as the chart runs it: its ServiceAccount's token and
    the chart's RBAC, not the admin's client certificate (which kube-apiserver verifies on
    every request, where it caches a token's review). Needs `helm` (`hack/control-plane
    env` puts it on PATH) to render the chart's RBAC."""
    rbac = subprocess.run(
        ["helm", "template", "bench", str(REPO / "charts" / "kubewrit"), "--namespace",
         "kubewrit-system", "--show-only", "templates/rbac.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    kubectl(kubeconfig, "apply", "-f", "-", input=rbac)
    account = "bench-kubewrit-webhook"
    if f"serviceaccount/{account}" not in kubectl(
        kubeconfig, "get", "serviceaccounts", "-n", "kubewrit-system", "-o", "name"
    ):
        kubectl(kubeconfig, "create", "serviceaccount", account, "-n", "kubewrit-system")
    token = kubectl(
        kubeconfig, "create", "token", account, "-n", "kubewrit-system", "--duration", "6h"
    ).strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    path = scratch / "webhook.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {"name": account, "context": {"cluster": cluster["name"], "user": account}}
                ],
                "current-context": account,
            }
        )
    )
    return path


def create_times(kubeconfig: str, namespace: str, creates: int = 200) -> list[float]:
    """Milliseconds for ActionRecords created one at a time, as the webhook creates each
    (`ActionRecordLedger`). Every decision in Kubernetes mode waits for this round trip
    through kube-apiserver and etcd: its p50 is the floor under the webhook's p50 at one
    client. Measured before and after the rounds, which the control plane's drift can
    tell apart."""
    from kubewrit.webhook import keys
    from kubewrit.webhook.chain import Head
    from kubewrit.webhook.kube import api as kube_api
    from kubewrit.webhook.kube.records import ActionRecordLedger

    ledger = ActionRecordLedger(kube_api.load(kubeconfig), namespace, connections=1)
    signer, head = keys.generate(), Head(f"floor-{uuid.uuid4().hex[:8]}")
    took = []
    for index in range(creates + 50):  # the first 50 warm the connection and the caches
        record = head.seal_next(bench_store.small_refund(index, namespace), signer)
        started = time.perf_counter()
        ledger.write([record], namespace)
        took.append((time.perf_counter() - started) * 1000)
    return took[50:]


def create_floor(before: list[float], after: list[float]) -> dict[str, float]:
    took = before + after
    return {
        "actionrecord_create_p50_ms": round(statistics.median(took), 3),
        "actionrecord_create_p99_ms": round(bench_load.percentile(took, 0.99), 3),
        "actionrecord_create_p50_ms_before": round(statistics.median(before), 3),
        "actionrecord_create_p50_ms_after": round(statistics.median(after), 3),
    }


def etcd_bytes_per_record(kubeconfig: str, namespace: str) -> tuple[int, float | None]:
    """How many ActionRecords exist, and their size as the API server serializes them."""
    listing = json.loads(kubectl(kubeconfig, "get", "actionrecords", "-n", namespace, "-o", "json"))
    items = listing["items"]
    if not items:
        return 0, None
    sizes = [len(json.dumps(item, separators=(",", ":"))) for item in items]
    return len(items), round(statistics.fmean(sizes), 1)


# The control plane's processes on this machine (`comm` names; the controller manager's
# is cut to 15 characters). Its CPU per decision is reported beside the webhook's.
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller")


def ceilings(results: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """Decisions/s the cores would allow, from the CPU each decision cost in the run.

    `control_plane_only`: if the webhook and the load generator cost nothing, the cores
    could create at most this many ActionRecords per second through kube-apiserver and
    etcd; `all_processes`: with every process's measured CPU, i.e. what saturating the
    cores would give. Both are upper bounds for the measured throughput beside them.
    """
    cpus = os.cpu_count() or 1
    found: dict[str, dict[str, float]] = {}
    for name, by_concurrency in results.items():
        for key, summary in by_concurrency.items():
            assert isinstance(summary, dict)
            behind = summary.get("control_plane_cpu_ms_per_request")
            if not behind:
                continue
            every = (
                behind + summary["server_cpu_ms_per_request"] + summary["client_cpu_ms_per_request"]
            )
            found[f"{name}/{key}"] = {
                "control_plane_only_per_s": round(1000 * cpus / behind),
                "all_processes_per_s": round(1000 * cpus / every),
                "measured_per_s": summary["throughput_per_s"],
            }
    return found


def kubernetes(args: argparse.Namespace) -> dict[str, object]:
    kubeconfig = args.kubeconfig
    run = uuid.uuid4().hex[:6]
    prepare_cluster(kubeconfig)
    floor_namespace = f"bench-{run}-floor"
    kubectl(kubeconfig, "create", "namespace", floor_namespace)
    tokens: dict[int, tuple[str, str]] = {}
    for limits in sorted({0, *args.limits}):
        namespace = f"bench-{run}-l{limits}"
        tokens[limits] = (namespace, agent_namespace(kubeconfig, namespace, limits))
    with tempfile.TemporaryDirectory(prefix="kubewrit-bench-") as tmp:
        scratch = Path(tmp)
        report: dict[str, object] = {
            "benchmark": "decide",
            "mode": "kubernetes",
            "store": "ActionRecord objects via kube-apiserver (host-process webhook)",
            "body": BODY.decode(),
            "requests_per_run": args.requests,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "load_generator": f"hey {bench_load.HEY_VERSION} (Go), separate process",
        }
        measured = floors(scratch)
        as_webhook = str(webhook_kubeconfig(kubeconfig, scratch))
        creates_before = create_times(as_webhook, floor_namespace)
        port = free_port()
        command = [
            shutil.which("kubewrit") or "kubewrit",
            "webhook",
            "--kubeconfig",
            as_webhook,
            "--replica",
            f"bench-{os.getpid()}",
            "--signing-key",
            str(scratch / "key.pem"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        url = f"http://127.0.0.1:{port}"
        control_plane = bench_load.pids_named(*CONTROL_PLANE)
        if not control_plane:
            raise RuntimeError(f"none of {CONTROL_PLANE} is running on this machine")
        with (
            process(command, url, "kubewrit webhook", scratch) as pid,
            floor_server(1, scratch) as floor,
        ):
            webhooks = [
                Server(
                    "decide" + (f"+{n}limits" if n else ""),
                    url,
                    pid,
                    {"Authorization": f"Bearer {token}"},
                    behind=control_plane,
                )
                for n, (_, token) in sorted(tokens.items())
            ]
            report["results"] = results = rounds(
                [*webhooks, floor], args.concurrency, args.requests, args.repeats
            )
            report["ceilings"] = ceilings(results)
        creates_after = create_times(as_webhook, floor_namespace)
        report["floors"] = {**measured, **create_floor(creates_before, creates_after)}
    kubectl(kubeconfig, "delete", "namespace", floor_namespace, "--wait=false")
    sent = answers_sent(args)
    counts, sizes = [], []
    for namespace, _ in tokens.values():
        count, size = etcd_bytes_per_record(kubeconfig, namespace)
        counts.append(count)
        sizes.append(size)
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    report["records_found"] = min(counts)
    report["answers"] = sent
    report["etcd_bytes_per_record"] = sizes[0]
    if min(counts) < sent:
        raise RuntimeError(f"{sent} answers but only {min(counts)} ActionRecords in a namespace")
    report["every_answer_recorded"] = True
    return report


def integers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["standalone", "kubernetes"])
    parser.add_argument("--requests", type=int, default=3000, help="per run")
    parser.add_argument("--concurrency", type=integers, default=[1, 16, 32])
    parser.add_argument("--workers", type=integers, default=[1, 2], help="standalone only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=0, help="standalone only")
    parser.add_argument(
        "--limits", type=integers, default=[0], help="limits on the refund: e.g. 0,1,3"
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""))
    parser.add_argument(
        "--pin",
        action="store_true",
        help="standalone, --workers 1: servers on the first CPU, hey on the others",
    )
    args = parser.parse_args()
    if args.mode == "kubernetes" and not args.kubeconfig:
        parser.error("kubernetes mode needs --kubeconfig (or KUBECONFIG)")
    if args.pin and (args.mode != "standalone" or args.workers != [1]):
        parser.error(
            "--pin is for standalone --workers 1: one core for the server, hey on the rest"
        )
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs at least two CPUs: one for the server, one for hey")
    report = standalone(args) if args.mode == "standalone" else kubernetes(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
