"""Namespaces are isolation boundaries for approvals, through a real API server and operator.

Two teams (team-a, team-b) run the same agent name with the example policy; a third
namespace (team-c) is outside the operator's watch. Each test plays a tenant who tries to
reach across, or to make kubewrit trust something a tenant can write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from kubewrit.webhook import chain, keys
from kubewrit.webhook.chain import Draft

from tests.kube.conftest_operator import (
    OperatorProcess,
    apply_crds,
    example_manifests,
    start_operator,
    wait_until,
)
from tests.kube.decision_webhook import DecisionWebhook, policy_manifest, start_webhook

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def teams(control_plane: Any) -> Iterator[dict[str, str]]:
    apply_crds(control_plane)
    suffix = uuid.uuid4().hex[:5]
    names = {team: f"{team}-{suffix}" for team in ("a", "b", "c")}
    for namespace in names.values():
        control_plane.kubectl("create", "namespace", namespace)
    yield names
    for namespace in names.values():
        control_plane.delete_namespace(namespace)


@pytest.fixture(scope="module")
def operator(
    control_plane: Any, teams: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    governed = (teams["a"], teams["b"])
    op = start_operator(control_plane, tmp_path_factory.mktemp("op"), namespaces=governed)
    yield op
    op.stop()
    op.remove_webhook_configurations()


@pytest.fixture(scope="module")
def webhook(
    control_plane: Any,
    operator: OperatorProcess,
    teams: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DecisionWebhook]:
    server = start_webhook(
        control_plane,
        tmp_path_factory.mktemp("webhook"),
        f"tenancy-{teams['a']}",
        "--approval-namespace",
        teams["a"],
        "--approval-namespace",
        teams["b"],
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def applied(control_plane: Any, operator: OperatorProcess, teams: dict[str, str]) -> None:
    """The examples (agent, policy, alice as approver) in both governed teams; team-c by hand."""
    for team in ("a", "b"):
        namespace = teams[team]
        docs = [
            d
            for d in yaml.safe_load_all(example_manifests(namespace))
            if d and d.get("kind") != "Namespace"
        ]
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        wait_until(
            lambda ns=namespace: "True"
            in control_plane.kubectl(
                "get", "agentpolicy", "support-agent", "-n", ns,
                "-o", "jsonpath={.status.conditions[0].status}",
            ).stdout,
            what="the policy to be Ready",
        )  # fmt: skip
    control_plane.kubectl("create", "serviceaccount", "support-agent", "-n", teams["c"])
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(teams["c"]))


def token(control_plane: Any, namespace: str, sa: str = "support-agent") -> str:
    return control_plane.kubectl(
        "create", "token", sa, "-n", namespace, "--audience", "kubewrit"
    ).stdout.strip()


def held(control_plane: Any, webhook: DecisionWebhook, namespace: str) -> tuple[str, str]:
    agent = token(control_plane, namespace)
    answer = webhook.decide(agent, tool="process_refund", args={"amount": 340}).json()
    assert answer["decision"] == "DEFER", answer
    return agent, answer["approval"]["id"]


def approval(control_plane: Any, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(
        control_plane.kubectl("get", "actionapproval", name, "-n", namespace, "-o", "json").stdout
    )


def decision_records(control_plane: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    listing = json.loads(
        control_plane.kubectl("get", "actionrecords", "-n", namespace, "-o", "json").stdout
    )["items"]
    return [
        r for r in listing if r["spec"].get("approval") == name and r["spec"]["kind"] != "decision"
    ]


def annotate(control_plane: Any, namespace: str, name: str, user: str, *notes: str) -> Any:
    return control_plane.kubectl(
        "annotate", "actionapproval", name, "-n", namespace, *notes, user=user, check=False
    )


def test_an_agent_never_sees_or_collects_another_namespaces_approval(
    control_plane, teams, applied, webhook
) -> None:
    victim, name = held(control_plane, webhook, teams["a"])
    intruder = token(control_plane, teams["b"])  # the same ServiceAccount name, elsewhere
    listed = webhook.get("/v1/approvals", intruder).json()
    assert name not in [a["id"] for a in listed]
    assert webhook.get(f"/v1/approvals/{name}", intruder).status_code == 404
    assert (
        annotate(
            control_plane, teams["a"], name, "alice", "kubewrit.io/decision=approve"
        ).returncode
        == 0
    )
    wait_until(
        lambda: approval(control_plane, teams["a"], name)["status"]["phase"] == "Approved",
        what="the approval to be recorded",
    )
    assert webhook.get(f"/v1/approvals/{name}", intruder).status_code == 404
    mine = webhook.get(f"/v1/approvals/{name}", victim).json()
    assert mine["phase"] == "Consumed" and mine["outcome"]["writ"]


def test_a_same_named_approval_elsewhere_never_resolves_the_victims(
    control_plane, teams, applied, webhook
) -> None:
    _, name = held(control_plane, webhook, teams["a"])
    original = approval(control_plane, teams["a"], name)
    copy = {
        "apiVersion": original["apiVersion"],
        "kind": "ActionApproval",
        "metadata": {"name": name, "namespace": teams["b"]},
        "spec": original["spec"],
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(copy))
    assert (
        annotate(
            control_plane, teams["b"], name, "alice", "kubewrit.io/decision=approve"
        ).returncode
        == 0
    )
    wait_until(
        lambda: (
            "approval_not_genuine" in webhook.log.read_text()
            or "no valid seal" in webhook.log.read_text()
        ),
        what="the webhook to refuse the copy",
    )
    assert approval(control_plane, teams["a"], name)["status"]["phase"] == "Pending"
    assert decision_records(control_plane, teams["a"], name) == []
    assert decision_records(control_plane, teams["b"], name) == []


def test_a_hand_made_approval_is_never_decided(control_plane, teams, applied, webhook) -> None:
    victim, name = held(control_plane, webhook, teams["a"])
    spec = approval(control_plane, teams["a"], name)["spec"]
    forged = f"apr-{uuid.uuid4().hex[:16]}"
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kubewrit.io/v1alpha1",
                "kind": "ActionApproval",
                "metadata": {"name": forged, "namespace": teams["a"]},
                "spec": {**spec, "action": spec["action"].replace("340", "900")},
            }
        ),
    )
    assert (
        annotate(
            control_plane, teams["a"], forged, "alice", "kubewrit.io/decision=approve"
        ).returncode
        == 0
    )
    answer = webhook.get(f"/v1/approvals/{forged}", victim, params={"wait": 2})
    assert answer.status_code in (200, 403)
    assert not (answer.json().get("outcome") or {}).get("writ")
    assert decision_records(control_plane, teams["a"], forged) == []


def test_whoever_patches_status_cannot_mint_a_writ(control_plane, teams, applied, webhook) -> None:
    victim, name = held(control_plane, webhook, teams["a"])
    current = approval(control_plane, teams["a"], name)
    forger = keys.generate()
    draft = Draft(
        kind="approval",
        decision="PERMIT",
        reason="approved",
        agent="support-agent",
        tool="process_refund",
        action_hash=current["spec"]["actionHash"],
        approval=name,
        namespace=teams["a"],
    )
    record = chain.seal(draft, "forged", 1, chain.GENESIS_PREV, forger)
    outcome = {"decision": "PERMIT", "reason": "approved", "rule_id": "x", "risk": "low",
               "message": "", "policy_hash": "", "action_hash": record.action_hash,
               "record": {"chain": "forged", "seq": 1, "hash": record.hash,
                          "full": record.to_dict()}}  # fmt: skip
    patch = {"status": {**current["status"], "phase": "Approved", "outcome": json.dumps(outcome)}}
    control_plane.kubectl(
        "patch", "actionapproval", name, "-n", teams["a"], "--subresource=status",
        "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip
    answer = webhook.get(f"/v1/approvals/{name}", victim, params={"wait": 5})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "approval_not_genuine"


def test_a_second_policy_cannot_make_its_author_an_approver(
    control_plane, teams, applied, webhook
) -> None:
    namespace = teams["b"]
    rogue = {
        "agents": ["support-agent"],
        "rules": [{"id": "mine", "match": {"tool": "process_refund"}, "require_approval": True}],
        "approvers": {"users": ["bob"]},
    }
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(namespace, "a-rogue", rogue))
    control_plane.kubectl(
        "create", "role", "bob-rogue", "-n", namespace, "--verb=get,patch",
        "--resource=actionapprovals",
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "bob-rogue", "-n", namespace, "--role=bob-rogue", "--user=bob"
    )
    try:
        _, name = held(control_plane, webhook, namespace)
        spec = approval(control_plane, namespace, name)["spec"]
        assert sorted(a["policy"] for a in spec["approvers"]) == ["a-rogue", "support-agent"]
        refused = annotate(control_plane, namespace, name, "bob", "kubewrit.io/decision=approve")
        assert refused.returncode != 0
        assert "bob is not an approver of AgentPolicy" in refused.stderr
        assert "support-agent" in refused.stderr
    finally:
        control_plane.kubectl("delete", "agentpolicy", "a-rogue", "-n", namespace, check=False)


def test_a_monitor_policy_never_permits_what_enforcement_would_not(
    control_plane, teams, applied, webhook
) -> None:
    namespace = teams["a"]
    control_plane.kubectl("create", "serviceaccount", "finance-agent", "-n", namespace)
    lenient = {"agents": ["finance-agent"], "mode": "monitor",
               "rules": [{"id": "all", "match": {"tool": "process_refund"}, "allow": True}]}  # fmt: skip
    control_plane.kubectl("apply", "-f", "-", input=policy_manifest(namespace, "shadow", lenient))

    def decided() -> dict[str, Any]:
        agent = token(control_plane, namespace, "finance-agent")
        return webhook.decide(agent, tool="process_refund", args={"amount": 45}).json()

    answer = wait_until(lambda: (a := decided()).get("monitored") and a, what="the policy")
    assert (answer["decision"], answer["reason"]) == ("DENY", "default_deny")
    assert answer["monitored"]["decision"] == "PERMIT" and not answer["writ"]


def test_decisions_outside_the_operators_namespaces_are_not_honoured(
    control_plane, teams, applied, webhook
) -> None:
    namespace = teams["c"]
    _, name = held(control_plane, webhook, namespace)
    stamped = annotate(
        control_plane, namespace, name, "admin",
        "kubewrit.io/decision=approve", "kubewrit.io/decided-by=alice",
        "kubewrit.io/decided-by-groups=kubewrit-approvers",
    )  # fmt: skip
    assert stamped.returncode == 0  # nothing validates stamps here...
    wait_until(
        lambda: "namespace the operator does not validate" in webhook.log.read_text(),
        what="the webhook to ignore the stamp",
    )
    assert approval(control_plane, namespace, name)["status"]["phase"] == "Pending"
    assert decision_records(control_plane, namespace, name) == []


def test_a_persons_token_cannot_approve_over_the_webhooks_api(
    control_plane, teams, applied, webhook
) -> None:
    """A bearer token that is not a ServiceAccount's (here a bootstrap token, a real identity
    the API server authenticates) is not served by the webhook: approving goes through
    kubectl, where the operator validates and stamps who decided."""
    token_id, secret = uuid.uuid4().hex[:6], uuid.uuid4().hex[:16]
    control_plane.kubectl(
        "create", "secret", "generic", f"bootstrap-token-{token_id}", "-n", "kube-system",
        "--type=bootstrap.kubernetes.io/token", f"--from-literal=token-id={token_id}",
        f"--from-literal=token-secret={secret}",
        "--from-literal=usage-bootstrap-authentication=true",
    )  # fmt: skip
    person = f"{token_id}.{secret}"
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": person}}  # fmt: skip
    reviewed = json.loads(
        control_plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    )
    assert reviewed["status"]["authenticated"], reviewed  # a real, non-ServiceAccount identity
    assert reviewed["status"]["user"]["username"] == f"system:bootstrap:{token_id}"
    _, name = held(control_plane, webhook, teams["a"])
    answer = webhook.decide(person, tool="process_refund", args={"amount": 45})
    assert answer.status_code == 401
    approve = httpx.post(
        f"{webhook.url}/v1/approvals/{name}/approve",
        headers={"Authorization": f"Bearer {person}"},
        timeout=30,
    )
    assert approve.status_code == 401, approve.text
    assert approval(control_plane, teams["a"], name)["status"]["phase"] == "Pending"
