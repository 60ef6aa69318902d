"""The decision webhook in Kubernetes mode, through a real API server and kubectl."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubewrit.webhook import canonical, keys, writ

from tests.conftest import poll, run_cli
from tests.kube.decision_webhook import (
    DecisionWebhook,
    agent_namespace,
    apply_crds,
    fresh_shop,
    policy_manifest,
    start_webhook,
)

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def shop(control_plane: Any) -> Iterator[str]:
    with agent_namespace(control_plane, "shop", agents=("support-agent", "finance-agent")) as ns:
        yield ns


@pytest.fixture(scope="module")
def webhook(
    control_plane: Any, shop: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecisionWebhook]:
    server = start_webhook(control_plane, tmp_path_factory.mktemp("webhook"))
    yield server
    server.stop()


def token(control_plane: Any, namespace: str, sa: str = "support-agent") -> str:
    return control_plane.kubectl(
        "create", "token", sa, "-n", namespace, "--audience", "kubewrit"
    ).stdout.strip()


def records(control_plane: Any, namespace: str) -> list[dict[str, Any]]:
    listing = json.loads(
        control_plane.kubectl("get", "actionrecords", "-n", namespace, "-o", "json").stdout
    )
    return sorted(listing["items"], key=lambda item: item["spec"]["seq"])


def test_agents_authenticate_with_their_service_account(control_plane, shop, webhook) -> None:
    answer = webhook.decide(token(control_plane, shop), tool="process_refund", args={"amount": 45})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["decision"], body["rule_id"]) == ("PERMIT", "support-agent/small-refunds")
    published = json.loads(
        control_plane.kubectl(
            "get", "configmap", "kubewrit-keys", "-n", "kubewrit-system", "-o", "json"
        ).stdout
    )["data"]
    trusted = [keys.load_public(value) for value in published.values()]
    action = canonical.build_action(
        "support-agent", "process_refund", {"amount": 45}, namespace=shop
    )
    writ.verify(body["writ"], trusted, action, agent="support-agent")
    assert webhook.decide("not-a-token", tool="send_email").status_code == 401


def test_every_decision_is_an_action_record(control_plane, shop, webhook) -> None:
    agent = token(control_plane, shop)
    big = webhook.decide(agent, tool="process_refund", args={"amount": 1200}).json()
    assert (big["decision"], big["reason"]) == ("DENY", "rule_deny")
    listed = control_plane.kubectl("get", "actionrecords", "-n", shop).stdout
    header = listed.splitlines()[0].split()
    assert header[:6] == ["NAME", "AGENT", "TOOL", "DECISION", "RULE", "SEQ"]
    assert "support-agent/large-refunds" in listed
    stored = records(control_plane, shop)
    denied = next(r for r in stored if r["spec"]["hash"] == big["record"]["hash"])
    assert denied["metadata"]["labels"]["kubewrit.io/decision"] == "DENY"
    assert denied["spec"]["seq"] == big["record"]["seq"]
    selected = control_plane.kubectl(
        "get", "actionrecords", "-n", shop, "-l", "kubewrit.io/decision=DENY", "-o", "name"
    ).stdout.split()
    assert f"actionrecord.kubewrit.io/{denied['metadata']['name']}" in selected


def test_action_record_spec_is_immutable(control_plane, shop, webhook) -> None:
    webhook.decide(token(control_plane, shop), tool="send_email", args={"to": "a@example.com"})
    name = records(control_plane, shop)[-1]["metadata"]["name"]
    patched = control_plane.kubectl(
        "patch",
        "actionrecord",
        name,
        "-n",
        shop,
        "--type=merge",
        "-p",
        '{"spec": {"decision": "PERMIT", "reason": "forged"}}',
        check=False,
    )
    assert patched.returncode != 0 and "an ActionRecord is immutable" in patched.stderr


def test_spoofed_agent_id_is_refused(control_plane, shop, webhook) -> None:
    answer = webhook.decide(
        token(control_plane, shop),
        tool="process_refund",
        args={"amount": 45},
        agent="finance-agent",
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "identity_mismatch"


def test_policies_select_agents_by_service_account(control_plane, shop, webhook) -> None:
    other = webhook.decide(
        token(control_plane, shop, "finance-agent"), tool="process_refund", args={"amount": 45}
    ).json()
    assert (other["decision"], other["reason"]) == ("DENY", "default_deny")


def test_policy_updates_are_live_within_a_second(control_plane, shop, webhook) -> None:
    agent = token(control_plane, shop)
    spec = {
        "agents": ["support-agent"],
        "rules": [{"id": "email-only", "match": {"tool": "send_email"}, "allow": True}],
    }
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(shop, "email-only", spec))
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=policy_manifest(
            shop,
            "support-agent",
            {
                "agents": ["support-agent"],
                "rules": [
                    {
                        "id": "over-50",
                        "match": {"tool": "process_refund", "amount_gt": 50},
                        "deny": True,
                    }
                ],
            },
        ),
    )
    body = poll(
        lambda: webhook.decide(agent, tool="process_refund", args={"amount": 45}).json(),
        lambda answer: answer["reason"] == "default_deny",
        timeout=1.0,
    )
    assert body["reason"] == "default_deny"
    control_plane.kubectl("delete", "agentpolicy", "support-agent", "-n", shop)
    body = poll(
        lambda: webhook.decide(agent, tool="process_refund", args={"amount": 60}).json(),
        lambda answer: answer["reason"] == "default_deny",
        timeout=1.0,
    )
    assert (body["decision"], body["reason"]) == ("DENY", "default_deny")
    control_plane.kubectl("delete", "agentpolicy", "email-only", "-n", shop)
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(shop))
    time.sleep(0.5)


def test_verify_passes_then_names_a_deleted_or_relabelled_record(
    control_plane, shop, webhook, tmp_path: Path
) -> None:
    agent = token(control_plane, shop)
    for amount in (45, 46, 47):
        webhook.decide(agent, tool="process_refund", args={"amount": amount})
    time.sleep(1.0)  # anchors publish every 0.5 s in this fixture
    kubeconfig = str(control_plane.kubeconfig_for("admin"))
    ok = run_cli("verify", "--kubeconfig", kubeconfig, "-n", shop)
    assert "verified" in ok.stdout
    stored = records(control_plane, shop)
    victim = stored[len(stored) // 2]
    control_plane.kubectl(
        "label",
        "actionrecord",
        victim["metadata"]["name"],
        "-n",
        shop,
        "--overwrite",
        "kubewrit.io/decision=PERMIT"
        if victim["spec"]["decision"] != "PERMIT"
        else "kubewrit.io/decision=DENY",
    )
    relabelled = run_cli("verify", "--kubeconfig", kubeconfig, "-n", shop, check=False)
    assert relabelled.returncode == 1
    assert f"seq {victim['spec']['seq']}: modified" in relabelled.stdout
    control_plane.kubectl("delete", "actionrecord", victim["metadata"]["name"], "-n", shop)
    deleted = run_cli("verify", "--kubeconfig", kubeconfig, "-n", shop, check=False)
    assert deleted.returncode == 1
    assert f"seq {victim['spec']['seq']}: missing" in deleted.stdout


def test_restarted_webhook_starts_a_chain_that_follows_the_old_one(
    control_plane, tmp_path: Path
) -> None:
    apply_crds(control_plane)
    namespace = f"restart-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "serviceaccount", "support-agent", "-n", namespace)
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(namespace))
    first = start_webhook(control_plane, tmp_path, "restart-webhook")
    agent = token(control_plane, namespace)
    try:
        before = first.decide(agent, tool="process_refund", args={"amount": 45}).json()
    finally:
        first.stop()
    assert httpx_refused(first.url)
    second = start_webhook(control_plane, tmp_path, "restart-webhook")
    try:
        after = second.decide(agent, tool="process_refund", args={"amount": 45}).json()
    finally:
        second.stop()
    # A new chain, whose signed genesis names where the old one ended: no seq is reused.
    assert after["record"]["chain"] != before["record"]["chain"]
    assert after["record"]["seq"] == 1
    genesis = next(
        r
        for r in records(control_plane, namespace)
        if r["spec"]["chain"] == after["record"]["chain"]
    )
    old = before["record"]
    assert f"follows:{old['chain']}@{old['seq']}:{old['hash']}" in genesis["spec"]["message"]
    result = run_cli(
        "verify", "--kubeconfig", str(control_plane.kubeconfig_for("admin")), "-n", namespace
    )
    assert "verified" in result.stdout


def httpx_refused(url: str) -> bool:
    import httpx

    try:
        httpx.post(f"{url}/v1/decide", json={"tool": "send_email"}, timeout=2)
    except httpx.HTTPError:
        return True
    return False


def test_a_record_the_api_server_refuses_means_deny(control_plane, shop, webhook) -> None:
    policy = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: refuse-records-{shop}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [kubewrit.io]
        apiVersions: [v1alpha1]
        operations: [CREATE]
        resources: [actionrecords]
  validations:
    - expression: "false"
      message: etcd is full
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: refuse-records-{shop}}}
spec:
  policyName: refuse-records-{shop}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {shop}}}
"""
    control_plane.kubectl("apply", "-f", "-", input=policy)
    agent = token(control_plane, shop)
    try:
        body = poll(
            lambda: webhook.decide(agent, tool="process_refund", args={"amount": 45}).json(),
            lambda answer: answer["reason"] == "record_unavailable",
            timeout=15,
            interval=0.3,
        )
        assert (body["decision"], body["reason"]) == ("DENY", "record_unavailable")
        assert body["writ"] is None
    finally:
        control_plane.kubectl("delete", "-f", "-", input=policy)
    body = poll(
        lambda: webhook.decide(agent, tool="process_refund", args={"amount": 45}).json(),
        lambda answer: answer["decision"] == "PERMIT",
        timeout=15,
        interval=0.3,
    )
    assert body["decision"] == "PERMIT"


def refusing_records(namespace: str, name: str, operations: str, expression: str) -> str:
    """A ValidatingAdmissionPolicy (and binding) that refuses ActionRecord `operations`
    in `namespace` where `expression` is false, as a full etcd or a strict admin would."""
    return f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}-{namespace}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{apiGroups: [kubewrit.io], apiVersions: [v1alpha1], operations: [{operations}],
         resources: [actionrecords]}}
  validations:
    - expression: "{expression}"
      message: refused for the test
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}-{namespace}}}
spec:
  policyName: {name}-{namespace}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"""


def test_refused_records_never_leave_a_gap_in_the_chain(control_plane, tmp_path: Path) -> None:
    """Concurrent decisions while the API server refuses some records: those are DENY
    record_unavailable, everything acknowledged is recorded, and the chain still verifies."""
    import concurrent.futures

    namespace = fresh_shop(control_plane, "gaps")
    refuse = refusing_records(namespace, "every-fifth", "CREATE", "object.spec.seq % 5 != 3")
    control_plane.kubectl("apply", "-f", "-", input=refuse)
    server = start_webhook(control_plane, tmp_path, f"gaps-{namespace}")
    agent = token(control_plane, namespace)
    try:
        time.sleep(1.5)  # the admission policy takes effect asynchronously
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda i: server.decide(
                        agent, tool="process_refund", args={"amount": 45, "n": i}
                    ).json(),
                    range(40),
                )
            )
    finally:
        control_plane.kubectl("delete", "-f", "-", input=refuse)
    try:  # the hole a refused record left is closed once the API server takes it
        poll(
            lambda: server.decide(agent, tool="process_refund", args={"amount": 45}).json(),
            lambda answer: answer["decision"] == "PERMIT",
            timeout=15,
            interval=0.3,
        )
    finally:
        server.stop()
    reasons = {a["reason"] for a in answers}
    assert reasons == {"rule_allow", "record_unavailable"}, reasons
    acknowledged = {a["record"]["hash"] for a in answers if a["record"]}
    stored = {r["spec"]["hash"] for r in records(control_plane, namespace)}
    assert acknowledged <= stored
    result = run_cli(
        "verify", "--kubeconfig", str(control_plane.kubeconfig_for("admin")), "-n", namespace
    )
    assert "verified" in result.stdout


def test_a_hole_left_by_a_refused_record_is_closed_before_the_chain_goes_on(
    control_plane, tmp_path: Path
) -> None:
    """The API server refuses seq 3 while later records of its batch land (and refuses
    every delete): every decision is then DENY record_unavailable, because the chain
    cannot go on past a hole. Once seq 3 is accepted, the webhook creates the record it
    sealed for it, the chain goes on after what landed, and it verifies; nothing was
    deleted (the chart grants the webhook no delete)."""
    import concurrent.futures

    namespace = fresh_shop(control_plane, "holes")
    refuse = refusing_records(
        namespace,
        "hole-at-3",
        "CREATE, DELETE",
        "request.operation == 'CREATE' && object.spec.seq != 3",
    )
    control_plane.kubectl("apply", "-f", "-", input=refuse)
    server = start_webhook(control_plane, tmp_path, f"holes-{namespace}")
    agent = token(control_plane, namespace)

    def decide(i: int) -> dict[str, Any]:
        body: dict[str, Any] = server.decide(
            agent, tool="process_refund", args={"amount": 45, "n": i}
        ).json()
        return body

    try:
        time.sleep(1.5)  # the admission policy takes effect asynchronously
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(decide, range(80)))
        stuck = [r["spec"]["seq"] for r in records(control_plane, namespace)]
        # Batches that began at seq 3 landed their later records: the chain has a hole
        # it may not go on from, so the last answers are all DENY.
        assert 3 not in stuck and max(stuck) > 3, stuck
        assert [a["reason"] for a in answers[-8:]] == ["record_unavailable"] * 8, answers[-8:]
        assert not [a for a in answers if a["record"] and a["record"]["seq"] > 2], answers
    finally:
        control_plane.kubectl("delete", "-f", "-", input=refuse)
    try:
        after = poll(
            lambda: decide(1000),
            lambda answer: answer["decision"] == "PERMIT",
            timeout=15,
            interval=0.3,
        )
    finally:
        server.stop()
    last = after["record"]["seq"]
    assert last > max(stuck)
    assert [r["spec"]["seq"] for r in records(control_plane, namespace)] == list(range(last + 1))
    result = run_cli(
        "verify", "--kubeconfig", str(control_plane.kubeconfig_for("admin")), "-n", namespace
    )
    assert "verified" in result.stdout
