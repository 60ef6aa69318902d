"""kubewrit's promises while pods die, roll and lose the API server, under a small agent
load running in a pod (a few clients, tens of seconds): no PERMIT without its record,
no failed decision during a rolling update, the operator's standby takes over, and an
unreachable API server means DENY, never PERMIT.

Each test prints its figures (decisions attempted / permitted / failed, the longest
gap between answers, chain verification)."""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    Cluster,
    Release,
    agent_pod,
    helm_values,
    unique,
)
from tests.conftest import run_cli
from tests.kube.conftest import _cp

CLIENTS = 4


def start_load(release: Release, seconds: float, clients: int = CLIENTS) -> str:
    name = unique("load")
    pod = agent_pod(
        release,
        name,
        ["/agent/agent_load.py", "load", "--clients", str(clients), "--seconds", str(seconds)],
    )
    c = release.cluster
    c.kubectl("apply", "-f", "-", input=json.dumps(pod))
    c.wait(
        lambda: (
            c.kubectl(
                "get", "pod", name, "-n", release.shop, "-o", "jsonpath={.status.phase}"
            ).stdout
            in ("Running", "Succeeded", "Failed")
        ),
        "the load pod to start",
        timeout=60,
    )
    return name


def finish_load(release: Release, name: str, timeout: float = 120) -> dict[str, Any]:
    c = release.cluster
    c.wait_finished(release.shop, name, "the load pod to finish", timeout)
    logs = c.pod_logs(release.shop, name)
    lines = [ln for ln in logs.splitlines() if ln.startswith("{")]
    assert lines, f"load pod {name} printed no result:\n{logs[-3000:]}"
    c.kubectl("delete", "pod", name, "-n", release.shop, "--wait=false")
    return json.loads(lines[-1])


def figures(result: dict[str, Any]) -> dict[str, Any]:
    answers, failures = result["answers"], result["failures"]
    times = sorted([a["t"] for a in answers])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "attempted": len(answers) + len(failures),
        "permitted": sum(a["decision"] == "PERMIT" for a in answers),
        "denied": sum(a["decision"] == "DENY" for a in answers),
        "failed": len(failures),
        "failure_codes": sorted({f["code"] for f in failures}),
        "deny_reasons": sorted({a["reason"] for a in answers if a["decision"] == "DENY"}),
        "longest_gap_s": round(max(gaps, default=0.0), 2),
        "seconds": result["elapsed"],
    }


def records_by_ref(c: Cluster, shop: str) -> dict[tuple[str, int], dict[str, Any]]:
    items = c.json("get", "actionrecords", "-n", shop)["items"]
    return {(i["spec"]["chain"], int(i["spec"]["seq"])): i["spec"] for i in items}


def assert_every_permit_recorded(c: Cluster, shop: str, result: dict[str, Any]) -> None:
    """Every PERMIT a client saw has its ActionRecord, and no request id (the SDK retries
    with the same one) was ever decided twice."""
    stored = records_by_ref(c, shop)
    decided = collections.Counter(
        (spec["agent"], spec["requestId"])
        for spec in stored.values()
        if spec["kind"] == "decision" and spec.get("requestId")
    )
    twice = {key: n for key, n in decided.items() if n > 1}
    assert not twice, f"request ids decided more than once: {twice}"
    for a in result["answers"]:
        if a["decision"] != "PERMIT":
            continue
        assert a["writ"] and a["record"], a
        ref = (a["record"]["chain"], int(a["record"]["seq"]))
        assert ref in stored, f"PERMIT {a['rid']} has no ActionRecord {ref}"
        assert stored[ref]["hash"] == a["record"]["hash"], (a, stored[ref])
        assert stored[ref]["decision"] == "PERMIT"


def verify_chains(c: Cluster, shop: str) -> str:
    time.sleep(1)
    out = run_cli("verify", "--kubeconfig", str(c.kubeconfig_for("admin")), "-n", shop).stdout
    assert "verified" in out, out
    return out.strip().splitlines()[-1]


def during_load(
    release: Release, seconds: float, fault: Callable[[], Any], delay: float = 4
) -> tuple[dict[str, Any], Any]:
    name = start_load(release, seconds)
    time.sleep(delay)
    info = fault()
    return finish_load(release, name), info


def test_deleting_a_webhook_pod_loses_no_record(kubewrit: Release) -> None:
    c = kubewrit.cluster
    c.wait(
        lambda: len([p for p in kubewrit.webhook_pods() if _ready(p)]) == 2, "2 webhook replicas"
    )
    deleted: list[str] = []

    def delete_a_busy_replica() -> None:
        # The replica whose chain the load is writing to (connections are kept alive, so
        # the Service may have sent every client to the same one).
        chains = [r[0] for r in records_by_ref(c, kubewrit.shop)]
        pods = [p["metadata"]["name"] for p in kubewrit.webhook_pods() if _ready(p)]
        victim = max(pods, key=lambda pod: sum(pod in ch for ch in chains))
        deleted.append(victim)
        c.kubectl("delete", "pod", victim, "-n", NAMESPACE, "--wait=false")

    result, _ = during_load(kubewrit, 20, delete_a_busy_replica)
    victim = deleted[0]
    f = figures(result)
    print(f"\ndelete webhook pod {victim}: {f}")
    assert f["permitted"] > 0
    assert_every_permit_recorded(c, kubewrit.shop, result)
    chains = {a["record"]["chain"] for a in result["answers"] if a.get("record")}
    assert any(victim in ch for ch in chains), f"the deleted pod's chain is exercised: {chains}"
    print("verify:", verify_chains(c, kubewrit.shop))
    c.wait(
        lambda: len([p for p in kubewrit.webhook_pods() if _ready(p)]) == 2, "2 webhook replicas"
    )


def _ready(pod: dict[str, Any]) -> bool:
    return (
        any(
            x["type"] == "Ready" and x["status"] == "True"
            for x in pod["status"].get("conditions", [])
        )
        and pod["metadata"].get("deletionTimestamp") is None
    )


def test_a_rolling_update_fails_no_decision(kubewrit: Release) -> None:
    c = kubewrit.cluster

    def upgrade() -> float:
        t0 = time.monotonic()
        c.helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            NAMESPACE,
            "--reuse-values",
            *helm_values(c),
            "--set",
            "webhook.logLevel=warning",
            "--wait",
            "--timeout",
            "3m",
            timeout=240,
        )
        return time.monotonic() - t0

    result, took = during_load(kubewrit, 35, upgrade, delay=3)
    f = figures(result)
    print(f"\nhelm upgrade (rolling, {took:.1f}s): {f}")
    assert f["failed"] == 0 and f["denied"] == 0, result["failures"][:5]
    assert_every_permit_recorded(c, kubewrit.shop, result)
    print("verify:", verify_chains(c, kubewrit.shop))


def lease_holder(c: Cluster) -> str:
    lease = c.json("get", "lease", "kubewrit-operator", "-n", NAMESPACE)
    return str(lease["spec"].get("holderIdentity") or "")


def test_killing_the_operator_leader_hands_over_within_the_lease(kubewrit: Release) -> None:
    c = kubewrit.cluster
    # The Lease elects the retention worker: off by default, so turn it on (a limit far
    # above what this test writes; nothing is exported).
    c.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--reuse-values",
        *helm_values(c),
        "--set",
        "operator.retention.maxCount=1000000",
        "--set",
        "operator.retention.allowEphemeralSink=true",
        "--wait",
        "--timeout",
        "3m",
        timeout=240,
    )
    leader = c.wait(
        lambda: (
            c.kubectl(
                "get",
                "lease",
                "kubewrit-operator",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.spec.holderIdentity}",
                check=False,
            ).stdout
        ),
        "an operator to take the lease",
    )
    operators = c.json(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    assert leader in {p["metadata"]["name"] for p in operators}, leader
    t0 = time.monotonic()
    c.kubectl("delete", "pod", leader, "-n", NAMESPACE, "--grace-period=0", "--force")
    new = c.wait(
        lambda: (h := lease_holder(c)) and h != leader and h,
        "a standby to take the lease",
        timeout=40,
        interval=0.25,
    )
    took = time.monotonic() - t0
    print(f"\noperator leader {leader} killed; {new} holds the lease after {took:.1f}s (lease 15s)")
    assert took <= 15 + 2 + 2, took  # lease duration + retry period + polling
    # Approvals are still stamped and refused correctly: the walkthrough's DEFER again.
    name = unique("after-failover")
    c.kubectl(
        "apply", "-f", "-", input=json.dumps(agent_pod(kubewrit, name, ["/agent/cluster_agent.py"]))
    )
    shop = kubewrit.shop

    def pending() -> str | None:
        items = c.json("get", "actionapprovals", "-n", shop)["items"]
        w = [i for i in items if (i.get("status") or {}).get("phase") == "Pending"]
        return w[0]["metadata"]["name"] if w else None

    approval = c.wait(pending, "a pending approval", timeout=90)
    bob = c.kubectl(
        "annotate",
        "actionapproval",
        approval,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        user="bob",
        check=False,
    )
    assert bob.returncode != 0
    c.kubectl(
        "annotate",
        "actionapproval",
        approval,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        user="alice",
    )
    c.wait_finished(shop, name, "the agent to finish", timeout=90)
    lines = [json.loads(x) for x in c.pod_logs(shop, name).splitlines() if x.startswith("{")]
    assert [x["decision"] for x in lines] == ["PERMIT", "PERMIT", "DENY"], lines
    assert c.json("get", "actionapproval", approval, "-n", shop)["status"]["decidedBy"] == "alice"


def restart_apiserver_after(c: Cluster, down_seconds: float) -> dict[str, float]:
    """Kill kube-apiserver (SIGKILL), leave it down, start it again with the same command
    line; return when it is ready. Times are wall-clock (pods share the clock)."""
    st = _cp.load_state(c.state_dir)
    info = st["processes"]["kube-apiserver"]
    argv = Path(f"/proc/{info['pid']}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(info["pid"], signal.SIGKILL)
    t = {"down": time.time()}
    time.sleep(down_seconds)
    proc = _cp._spawn(c.state_dir, "kube-apiserver", [a.decode() for a in argv])
    t["restarted"] = time.time()
    pki = c.state_dir / "pki"

    def ready() -> tuple[bool, str]:
        code, body = _cp._https_get(c.server + "/readyz", pki)
        return code == 200, body

    _cp._wait(c.state_dir, "kube-apiserver", proc, ready, 120, "ready again")
    t["ready"] = time.time()
    return t


def first_permit_after(result: dict[str, Any], moment: float) -> float:
    later = [a["done"] for a in result["answers"] if a["decision"] == "PERMIT" and a["t"] > moment]
    return min(later, default=float("nan")) - moment


def test_an_unavailable_api_server_means_deny_never_permit(kubewrit: Release) -> None:
    c = kubewrit.cluster
    name = start_load(kubewrit, 30)
    time.sleep(5)
    t = restart_apiserver_after(c, 3)
    result = finish_load(kubewrit, name, timeout=180)
    f = figures(result)
    down, up, back = (t[k] - result["start_wall"] for k in ("down", "restarted", "ready"))
    # Answered while no API server process existed (0.5 s after the kill: a decision whose
    # record the API server stored just before dying is still answered PERMIT, rightly).
    during = [a for a in result["answers"] if down + 0.5 <= a["done"] <= up]
    end = result["elapsed"]
    after = [a for a in result["answers"] if a["t"] > end - 4]
    late = [a for a in result["answers"] if back + 2 < a["t"] and a["decision"] != "PERMIT"]
    print(
        f"\nkube-apiserver killed, down {back - down:.1f}s (restarted after 3 s): {f}; "
        f"answers given while it was down: "
        f"{sorted({a['decision'] + '/' + a['reason'] for a in during})} ({len(during)}); "
        f"first PERMIT after the kill answered {first_permit_after(result, down):.2f}s later"
    )
    # Never PERMIT without its record; while the API server is down, DENY record_unavailable.
    assert_every_permit_recorded(c, kubewrit.shop, result)
    assert not [a for a in during if a["decision"] == "PERMIT"], during[:5]
    assert "record_unavailable" in f["deny_reasons"], f
    # It recovers by itself: 2 s after the API server is ready again, every answer is
    # PERMIT (a write whose answer was lost in the crash must not wedge a chain).
    assert not late, f"DENY after the API server was back at {back:.1f}s: {late[:5]}"
    assert after and all(a["decision"] == "PERMIT" for a in after), after[-5:]
    print("verify:", verify_chains(c, kubewrit.shop))


pytestmark = pytest.mark.cluster
