"""`helm install` with default values on a real node, and the walkthrough from an agent pod."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tests.cluster.conftest import (
    NAMESPACE,
    RELEASE,
    WEBHOOK_URL,
    Cluster,
    Release,
    agent_pod,
    unique,
)
from tests.conftest import run_cli


def test_the_node_runs_pods_that_reach_services_by_name(cluster: Cluster) -> None:
    nodes = cluster.json("get", "nodes")["items"]
    assert len(nodes) == 1
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert ready["Ready"] == "True"
    probe = (
        "import socket, ssl, urllib.request\n"
        "print('dns', socket.gethostbyname('kubernetes.default.svc.cluster.local'))\n"
        "ctx = ssl.create_default_context(cafile="
        "'/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
        "token = open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()\n"
        "req = urllib.request.Request('https://kubernetes.default.svc/version',"
        " headers={'Authorization': 'Bearer ' + token})\n"
        "print('api', urllib.request.urlopen(req, context=ctx).status)\n"
    )
    name = unique("probe")
    phase, logs = cluster.run_pod(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "probe",
                        "image": cluster.image,
                        "imagePullPolicy": "Never",
                        "command": ["python", "-c", probe],
                    }
                ],
            },
        }
    )
    assert phase == "Succeeded", logs + cluster.describe()
    assert "dns 10.0.0.1" in logs and "api 200" in logs
    pod = cluster.json("get", "pod", name, "-n", "default")
    assert pod["status"]["podIP"].startswith("10.244.0.")
    cluster.kubectl("delete", "pod", name, "-n", "default", "--wait=false")


def _ready_seconds(pod: dict[str, Any]) -> float:
    """Container start -> pod Ready, from the pod's own status (1 s resolution)."""
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(ready["lastTransitionTime"]) - parse(started)).total_seconds()


def test_helm_install_with_default_values_runs_ready_pods(kubewrit: Release) -> None:
    c = kubewrit.cluster
    pods = c.json("get", "pods", "-n", NAMESPACE)["items"]
    by_component: dict[str, list[dict[str, Any]]] = {}
    for p in pods:
        by_component.setdefault(p["metadata"]["labels"]["app.kubernetes.io/component"], []).append(
            p
        )
    assert len(by_component["webhook"]) == 2 and len(by_component["operator"]) == 2
    for p in by_component["webhook"] + by_component["operator"]:
        conds = {x["type"]: x["status"] for x in p["status"]["conditions"]}
        assert conds["Ready"] == "True", p["metadata"]["name"]
        spec = p["spec"]["containers"][0]
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert p["spec"]["securityContext"]["runAsNonRoot"] is True
    at_install = [_ready_seconds(p) for p in by_component["webhook"]]
    # A replacement replica, started alone (at install, 4 pods start at once on 2 cores).
    old = by_component["webhook"][0]["metadata"]["name"]
    c.kubectl("delete", "pod", old, "-n", NAMESPACE, "--wait=false")

    def replacement() -> dict[str, Any] | None:
        for p in kubewrit.webhook_pods():
            if (
                p["metadata"]["name"] != old
                and any(
                    x["type"] == "Ready" and x["status"] == "True"
                    for x in p["status"].get("conditions", [])
                )
                and p["metadata"]["name"]
                not in {q["metadata"]["name"] for q in by_component["webhook"]}
            ):
                return p
        return None

    alone = _ready_seconds(c.wait(replacement, "a replacement webhook replica to be Ready"))
    print(
        f"\nwebhook container start -> Ready: {alone:.0f} s for a replica started alone, "
        f"{at_install} s at install (4 pods at once); helm install --wait "
        f"{kubewrit.install_seconds:.1f} s; image {c.image_figures}"
    )
    # Target 3 s (about 0.6 s of it is CPU for imports: 3 s measured with the machine
    # otherwise idle, API timestamps at 1 s resolution). The 2 cores here are shared, so
    # the bound only catches regressions such as an image without byte-compiled code.
    assert alone <= 8, alone
    # 198 MB before ActionRecords were created through Debian's libcurl (+5 MB).
    assert c.image_figures["size_bytes"] <= 210e6, c.image_figures
    configs = c.kubectl(
        "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name"
    ).stdout
    assert "kubewrit.io" in configs
    assert {"kubewrit-webhook", "kubewrit-operator"} <= set(
        c.kubectl(
            "get", "pdb", "-n", NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}"
        ).stdout.split()
    )


def test_the_walkthrough_from_an_agent_pod(kubewrit: Release) -> None:
    c = kubewrit.cluster
    name = unique("support-agent")
    c.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(agent_pod(kubewrit, name, ["/agent/cluster_agent.py"])),
    )
    shop = kubewrit.shop

    def pending() -> str | None:
        items = c.json("get", "actionapprovals", "-n", shop)["items"]
        waiting = [i for i in items if (i.get("status") or {}).get("phase") == "Pending"]
        return waiting[0]["metadata"]["name"] if waiting else None

    approval = c.wait(pending, "the $340 refund to wait for approval", timeout=90)
    listed = c.kubectl("get", "actionapprovals", "-n", shop).stdout
    assert "process_refund" in listed and "Pending" in listed
    refused = c.kubectl(
        "annotate",
        "actionapproval",
        approval,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        user="bob",
        check=False,
    )
    assert refused.returncode != 0
    c.kubectl(
        "annotate",
        "actionapproval",
        approval,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        "kubewrit.io/reason=order checked",
        user="alice",
    )
    c.wait_finished(shop, name, "the agent pod to finish", timeout=90)
    logs = c.pod_logs(shop, name)
    lines = [json.loads(x) for x in logs.splitlines() if x.startswith("{")]
    assert len(lines) == 3, logs
    small, mid, large = lines
    assert small["decision"] == "PERMIT" and small["writ_verified"], small
    assert small["rule"] == "support-agent/small-refunds"
    assert mid["decision"] == "PERMIT" and mid["approval"] == approval and mid["writ_verified"]
    assert (large["decision"], large["reason"]) == ("DENY", "rule_deny")
    records = c.kubectl("get", "actionrecords", "-n", shop).stdout
    print(f"\n$ kubectl get actionrecords -n {shop}\n{records}")
    assert records.count("process_refund") >= 4
    approved = c.json("get", "actionapproval", approval, "-n", shop)
    assert approved["status"]["decidedBy"] == "alice"
    verify = run_cli("verify", "--kubeconfig", str(c.kubeconfig_for("admin")), "-n", shop)
    print(verify.stdout)
    assert "verified" in verify.stdout


def test_no_one_changes_an_action_record_not_even_a_cluster_admin(kubewrit: Release) -> None:
    """The chart's admission policy: a record relabelled out of its hour would be hidden
    from a sequence rule's window, so kube-apiserver refuses every update to a record."""
    c = kubewrit.cluster
    names = c.kubectl("get", "actionrecords", "-n", kubewrit.shop, "-o", "name").stdout.split()
    assert names, "the walkthrough above records decisions in the shop namespace"
    before = c.json("get", names[-1], "-n", kubewrit.shop)
    for change in (
        ("label", names[-1], "kubewrit.io/hour=2020010100", "--overwrite"),
        ("label", names[-1], "kubewrit.io/hour-", "kubewrit.io/day-"),
        ("annotate", names[-1], "note=edited"),
        ("patch", names[-1], "--type=merge", "-p", '{"spec": {"decision": "DENY"}}'),
        ("patch", names[-1], "--type=merge", "-p", json.dumps({"spec": before["spec"]})),
    ):
        refused = c.kubectl(*change, "-n", kubewrit.shop, check=False)
        assert refused.returncode != 0, change
        # A changed spec meets the CRD's own rule first ("an ActionRecord is immutable");
        # labels, annotations and a spec patched to what it was, the chart's policy.
        assert "ActionRecord is immutable" in refused.stderr or (
            "ActionRecords are immutable" in refused.stderr
        ), refused.stderr
    after = c.json("get", names[-1], "-n", kubewrit.shop)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_helm_test_proves_the_webhook_fails_closed(kubewrit: Release) -> None:
    c = kubewrit.cluster
    r = c.helm("test", RELEASE, "-n", NAMESPACE, "--logs", "--timeout", "2m", timeout=180)
    print(r.stdout)
    assert "Phase:          Succeeded" in r.stdout
    assert "PASS: the webhook answers and fails closed" in r.stdout
    assert "no token: 401" in r.stdout


def test_webhook_service_name_resolves_from_a_pod(kubewrit: Release) -> None:
    host = WEBHOOK_URL.removeprefix("https://")
    phase, logs = kubewrit.cluster.run_pod(
        agent_pod(
            kubewrit,
            unique("resolve"),
            ["-c", f"import socket; print(socket.gethostbyname({host!r}))"],
        )
    )
    svc = kubewrit.cluster.json("get", "service", f"{RELEASE}-webhook", "-n", NAMESPACE)
    assert phase == "Succeeded" and svc["spec"]["clusterIP"] in logs, logs
