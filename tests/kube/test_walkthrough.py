"""The seed walkthrough on Kubernetes, as its users meet it: kubectl, the operator, the webhook."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli
from tests.kube.conftest_operator import (
    OperatorProcess,
    apply_crds,
    example_manifests,
    start_operator,
    wait_until,
)
from tests.kube.decision_webhook import DecisionWebhook, start_webhook

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def shop(control_plane: Any) -> Iterator[str]:
    apply_crds(control_plane)
    namespace = f"walk-{uuid.uuid4().hex[:6]}"
    yield namespace
    control_plane.delete_namespace(namespace)


@pytest.fixture(scope="module")
def operator(
    control_plane: Any,
    shop: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    control_plane.kubectl("create", "namespace", shop)
    op = start_operator(control_plane, tmp_path_factory.mktemp("operator"), namespaces=(shop,))
    yield op
    op.stop()
    op.remove_webhook_configurations()


@pytest.fixture(scope="module")
def webhook(
    control_plane: Any,
    operator: OperatorProcess,
    shop: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DecisionWebhook]:
    server = start_webhook(control_plane, tmp_path_factory.mktemp("webhook"), f"walk-{shop}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def applied(control_plane: Any, operator: OperatorProcess, shop: str) -> str:
    """`kubectl apply -f examples/kubernetes` (in the test's namespace): agent, policy, RBAC."""
    manifests = example_manifests(shop).replace("name: shop\n", f"name: {shop}\n")
    documents = [d for d in yaml.safe_load_all(manifests) if d and d.get("kind") != "Namespace"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    wait_until(
        lambda: (
            "True"
            in control_plane.kubectl(
                "get",
                "agentpolicy",
                "support-agent",
                "-n",
                shop,
                "-o",
                "jsonpath={.status.conditions[0].status}",
            ).stdout
        ),
        what="the policy to be Ready",
    )
    return shop


def agent_token(control_plane: Any, namespace: str) -> str:
    return control_plane.kubectl(
        "create", "token", "support-agent", "-n", namespace, "--audience", "kubewrit"
    ).stdout.strip()


def api_token(control_plane: Any, namespace: str) -> str:
    """The agent's token for the API server (kubectl), not for the webhook's audience."""
    return control_plane.kubectl("create", "token", "support-agent", "-n", namespace).stdout.strip()


def agent_kubeconfig(control_plane: Any, namespace: str, directory: Path) -> str:
    """A kubeconfig that authenticates as the agent's ServiceAccount, with RBAC to patch approvals."""
    control_plane.kubectl(
        "create",
        "role",
        "agent-patch-approvals",
        "-n",
        namespace,
        "--verb=get,list,patch,update",
        "--resource=actionapprovals",
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "agent-patch-approvals",
        "-n",
        namespace,
        "--role=agent-patch-approvals",
        f"--serviceaccount={namespace}:support-agent",
    )
    path = directory / "agent.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "agent",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": control_plane.server,
                            "certificate-authority": str(control_plane.ca_file),
                        },
                    }
                ],
                "users": [
                    {"name": "agent", "user": {"token": api_token(control_plane, namespace)}}
                ],
                "contexts": [{"name": "agent", "context": {"cluster": "c", "user": "agent"}}],
            }
        )
    )
    return str(path)


def test_the_walkthrough_through_kubectl(control_plane, applied, webhook, tmp_path) -> None:
    shop = applied
    token = agent_token(control_plane, shop)

    small = webhook.decide(token, tool="process_refund", args={"amount": 45}).json()
    assert (small["decision"], small["rule_id"]) == ("PERMIT", "support-agent/small-refunds")
    assert small["writ"]

    mid = webhook.decide(token, tool="process_refund", args={"amount": 340}).json()
    assert mid["decision"] == "DEFER"
    name = mid["approval"]["id"]
    pending = control_plane.kubectl("get", "actionapprovals", "-n", shop).stdout
    assert name in pending and "Pending" in pending and "process_refund" in pending

    outcome: dict[str, Any] = {}
    poll = threading.Thread(
        target=lambda: outcome.update(
            webhook.get(f"/v1/approvals/{name}", token, params={"wait": 30}).json()
        )
    )
    poll.start()

    refused = control_plane.kubectl(
        f"--kubeconfig={agent_kubeconfig(control_plane, shop, tmp_path)}",
        "annotate",
        "actionapproval",
        name,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        check=False,
    )
    assert refused.returncode != 0
    assert "may never decide its own approval" in refused.stderr

    control_plane.kubectl(
        "create", "role", "bob-patch", "-n", shop, "--verb=get,patch", "--resource=actionapprovals"
    )
    control_plane.kubectl(
        "create", "rolebinding", "bob-patch", "-n", shop, "--role=bob-patch", "--user=bob"
    )
    ordinary = control_plane.kubectl(
        "annotate",
        "actionapproval",
        name,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        user="bob",
        check=False,
    )
    assert ordinary.returncode != 0 and "bob" in ordinary.stderr and "approver" in ordinary.stderr

    control_plane.kubectl(
        "annotate",
        "actionapproval",
        name,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        "kubewrit.io/reason=customer verified",
        user="alice",
    )
    poll.join(timeout=40)
    assert outcome["phase"] == "Consumed", outcome
    assert outcome["outcome"]["decision"] == "PERMIT" and outcome["outcome"]["writ"]
    approved = json.loads(
        control_plane.kubectl("get", "actionapproval", name, "-n", shop, "-o", "json").stdout
    )
    assert approved["status"]["decidedBy"] == "alice"
    listed = control_plane.kubectl("get", "actionapprovals", "-n", shop).stdout
    assert "alice" in listed and "Consumed" in listed

    large = webhook.decide(token, tool="process_refund", args={"amount": 1200}).json()
    assert (large["decision"], large["reason"]) == ("DENY", "rule_deny")

    records = control_plane.kubectl("get", "actionrecords", "-n", shop).stdout
    assert records.splitlines()[0].split()[:6] == [
        "NAME",
        "AGENT",
        "TOOL",
        "DECISION",
        "RULE",
        "SEQ",
    ]
    items = json.loads(
        control_plane.kubectl("get", "actionrecords", "-n", shop, "-o", "json").stdout
    )["items"]
    final = [
        i["spec"]
        for i in items
        if i["spec"].get("approval") == name and i["spec"]["kind"] == "approval"
    ]
    assert final and final[0]["approver"] == "alice" and final[0]["decision"] == "PERMIT"

    import time

    time.sleep(1.0)  # let the anchor catch up (every 0.5 s in this fixture)
    kubeconfig = str(control_plane.kubeconfig_for("admin"))
    assert "verified" in run_cli("verify", "--kubeconfig", kubeconfig, "-n", shop).stdout
    victim = sorted(items, key=lambda i: i["spec"]["seq"])[2]
    control_plane.kubectl("delete", "actionrecord", victim["metadata"]["name"], "-n", shop)
    broken = run_cli("verify", "--kubeconfig", kubeconfig, "-n", shop, check=False)
    assert broken.returncode == 1 and f"seq {victim['spec']['seq']}: missing" in broken.stdout


def test_an_invalid_policy_is_refused_at_apply(control_plane, applied) -> None:
    bad = {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": "typo", "namespace": applied},
        "spec": {
            "rules": [
                {"id": "oops", "match": {"tool": "send_email", "amount_gt": "lots"}, "allow": True}
            ]
        },
    }
    result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert "rule 1 (oops)" in result.stderr and "amount_gt needs a number" in result.stderr


def test_denied_and_expired_approvals_never_permit(
    control_plane, applied, webhook, tmp_path
) -> None:
    shop = applied
    token = agent_token(control_plane, shop)
    denied_id = webhook.decide(token, tool="process_refund", args={"amount": 500}).json()
    denied_id = denied_id["approval"]["id"]
    control_plane.kubectl(
        "annotate",
        "actionapproval",
        denied_id,
        "-n",
        shop,
        "kubewrit.io/decision=deny",
        "kubewrit.io/reason=duplicate refund",
        user="alice",
    )
    view = webhook.get(f"/v1/approvals/{denied_id}", token, params={"wait": 20}).json()
    assert view["phase"] == "Denied" and view["outcome"]["decision"] == "DENY"
    assert view["outcome"]["reason"] == "approval_denied" and view["outcome"]["writ"] is None

    impatient = start_webhook(control_plane, tmp_path, f"expiry-{shop}", "--approval-ttl", "1")
    try:
        expiring = impatient.decide(token, tool="process_refund", args={"amount": 501}).json()
        name = expiring["approval"]["id"]
        view = impatient.get(f"/v1/approvals/{name}", token, params={"wait": 10}).json()
    finally:
        impatient.stop()
    assert view["phase"] == "Expired"
    late = control_plane.kubectl(
        "annotate",
        "actionapproval",
        name,
        "-n",
        shop,
        "kubewrit.io/decision=approve",
        user="alice",
        check=False,
    )
    assert late.returncode != 0 and "expired" in late.stderr.lower()
    phase = control_plane.kubectl(
        "get", "actionapproval", name, "-n", shop, "-o", "jsonpath={.status.phase}"
    ).stdout
    assert phase == "Expired"
