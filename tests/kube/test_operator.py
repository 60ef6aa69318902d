"""The operator against a real API server: what `kubectl` users see.

AgentPolicy admission and status; ActionApproval decisions stamped with the
identity the API server authenticated, and every unsafe decision refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubewrit.webhook.policy import PolicyError, compile_document

from tests.kube.conftest_operator import (
    OperatorProcess,
    apply_crds,
    example_manifests,
    start_operator,
    wait_until,
)

pytestmark = pytest.mark.kube

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples/policies/support-agent.yaml"


@pytest.fixture(scope="module")
def shop(control_plane: Any) -> Iterator[str]:
    """A namespace holding examples/kubernetes (agent, policy, approver RBAC)."""
    apply_crds(control_plane)
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    yield namespace
    control_plane.delete_namespace(namespace)


@pytest.fixture(scope="module")
def operator(
    control_plane: Any, shop: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = start_operator(control_plane, tmp_path_factory.mktemp("operator"), namespaces=(shop,))
    control_plane.kubectl("apply", "-f", "-", input=example_manifests(shop))
    yield op
    op.stop()
    op.remove_webhook_configurations()


def policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def get(control_plane: Any, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(
        control_plane.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    )


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {}
    )


# --------------------------------------------------------------------------- AgentPolicy


def test_invalid_policy_is_refused_at_apply_with_the_compilers_message(
    control_plane, operator, shop
):
    spec = yaml.safe_load(EXAMPLE_POLICY.read_text())
    spec["rules"][1]["match"]["amount_gt"] = "a lot"
    manifest = policy(shop, "broken", spec)
    with pytest.raises(PolicyError) as expected:
        compile_document(manifest, source=f"AgentPolicy {shop}/broken")
    r = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert r.returncode != 0
    assert "denied the request" in r.stderr
    assert str(expected.value) in r.stderr  # the same validator as `kubewrit check`
    assert "rule 2 (mid-range-refunds)" in r.stderr
    assert (
        control_plane.kubectl("get", "agentpolicy", "broken", "-n", shop, check=False).returncode
        != 0
    )


def test_valid_policy_is_ready_with_hash_and_rule_count(control_plane, operator, shop):
    expected = compile_document(yaml.safe_load(EXAMPLE_POLICY.read_text()), source="file")

    def ready() -> dict[str, Any] | None:
        obj = get(control_plane, "agentpolicy", shop, "support-agent")
        return obj if ready_condition(obj).get("status") == "True" else None

    obj = wait_until(ready, what="Ready=True on the walkthrough policy")
    status = obj["status"]
    assert status["policyHash"] == expected.hash  # content hash: same as the file's
    assert status["ruleCount"] == 4
    assert (
        status["observedGeneration"] == status["servingGeneration"] == obj["metadata"]["generation"]
    )
    cond = ready_condition(obj)
    assert (
        cond["reason"] == "Compiled" and cond["observedGeneration"] == obj["metadata"]["generation"]
    )
    assert cond["lastTransitionTime"].endswith("Z")
    table = control_plane.kubectl("get", "agentpolicies", "-n", shop).stdout
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header[:5] == ["NAME", "MODE", "READY", "RULES", "POLICY"]
    assert row[:5] == ["support-agent", "enforce", "True", "4", expected.hash]


def test_policy_made_invalid_behind_admission_keeps_serving_and_says_so(
    control_plane, operator, shop
):
    name = "drifted"
    spec = {
        "agents": ["support-agent"],
        "rules": [{"id": "email", "match": {"tool": "send_email"}, "allow": True}],
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy(shop, name, spec)))
    first = wait_until(
        lambda: (
            (o := get(control_plane, "agentpolicy", shop, name))
            and ready_condition(o).get("status") == "True"
            and o
        ),
        what="Ready",
    )
    served_hash = first["status"]["policyHash"]

    # The admission webhook is "down" (its configuration entry is gone) while a bad
    # change is applied: exactly what status must survive.
    kind = "validatingwebhookconfiguration"
    saved = json.loads(
        control_plane.kubectl("get", kind, operator.config_name, "-o", "json").stdout
    )
    index = next(i for i, h in enumerate(saved["webhooks"]) if "validate-policy" in h["name"])
    control_plane.kubectl(
        "patch",
        kind,
        operator.config_name,
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": f"/webhooks/{index}"}]),
    )
    try:
        spec["rules"][0]["match"]["tool"] = "send email!"  # not a safe tool name
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy(shop, name, spec)))
    finally:
        saved["metadata"] = {"name": saved["metadata"]["name"]}
        control_plane.kubectl("replace", "-f", "-", input=json.dumps(saved))

    def not_ready() -> dict[str, Any] | None:
        obj = get(control_plane, "agentpolicy", shop, name)
        return obj if ready_condition(obj).get("status") == "False" else None

    obj = wait_until(not_ready, what="Ready=False after the invalid change")
    status, cond = obj["status"], ready_condition(obj)
    assert obj["metadata"]["generation"] == 2
    assert status["observedGeneration"] == 2
    assert status["servingGeneration"] == 1
    assert status["policyHash"] == served_hash  # the hash still enforced
    assert cond["reason"] == "InvalidServingPrevious"
    assert "still serving generation 1" in cond["message"]
    assert f"AgentPolicy {shop}/{name}: rule 1 (email)" in cond["message"]
    assert status["message"] == cond["message"]
    table = control_plane.kubectl("get", "agentpolicy", name, "-n", shop).stdout
    assert "False" in table and served_hash in table

    # and admission is back: a bad change is refused again
    spec["rules"][0]["match"]["tool"] = "another bad name!"
    r = control_plane.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(policy(shop, name, spec)), check=False
    )
    assert r.returncode != 0 and "rule 1 (email)" in r.stderr


# --------------------------------------------------------------------------- ActionApproval


def approval(
    control_plane: Any,
    namespace: str,
    expires_in: timedelta = timedelta(minutes=10),
    rule: str = "support-agent/mid-range-refunds",
) -> str:
    name = f"apr-{uuid.uuid4().hex[:8]}"
    expires = (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "ActionApproval",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "agent": "support-agent",
            "serviceAccount": f"system:serviceaccount:{namespace}:support-agent",
            "tool": "process_refund",
            "actionHash": "sha256:" + "ab" * 32,
            "action": '{"args":{"amount":340},"tool":"process_refund"}',
            "rule": rule,
            "risk": "low",
            "expiresAt": expires,
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(body))
    return name


def annotate(
    control_plane: Any,
    namespace: str,
    name: str,
    *pairs: str,
    user: str = "alice",
    extra: tuple[str, ...] = (),
) -> Any:
    return control_plane.kubectl(
        *extra, "annotate", "actionapproval", name, "-n", namespace, *pairs, user=user, check=False
    )


def refused(result: Any, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "denied the request" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def agent_kubectl(
    control_plane: Any,
    operator: OperatorProcess,
    shop: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, ...]:
    """kubectl flags authenticating as the support-agent ServiceAccount, which RBAC lets
    patch approvals (so only kubewrit's webhook stands in its way)."""
    for who, subject in (("agent", f"ServiceAccount:{shop}:support-agent"), ("bob", "User:bob")):
        kind, _, rest = subject.partition(":")
        control_plane.kubectl(
            "create",
            "role",
            f"patch-approvals-{who}",
            "-n",
            shop,
            "--verb=get,list,patch,update",
            "--resource=actionapprovals",
        )
        flag = "--serviceaccount" if kind == "ServiceAccount" else "--user"
        control_plane.kubectl(
            "create",
            "rolebinding",
            f"patch-approvals-{who}",
            "-n",
            shop,
            f"--role=patch-approvals-{who}",
            f"{flag}={rest}",
        )
    token = control_plane.kubectl("create", "token", "support-agent", "-n", shop).stdout.strip()
    kubeconfig = tmp_path_factory.mktemp("agent") / "kubeconfig"
    kubeconfig.write_text(
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
                "users": [{"name": "agent", "user": {"token": token}}],
                "contexts": [{"name": "agent", "context": {"cluster": "c", "user": "agent"}}],
            }
        )
    )
    return (f"--kubeconfig={kubeconfig}",)


def test_approver_decision_is_stamped_with_the_api_servers_identity(control_plane, operator, shop):
    name = approval(control_plane, shop)
    r = annotate(
        control_plane,
        shop,
        name,
        "kubewrit.io/decision=approve",
        "kubewrit.io/reason=customer verified",
    )
    assert r.returncode == 0, r.stderr
    notes = get(control_plane, "actionapproval", shop, name)["metadata"]["annotations"]
    assert notes["kubewrit.io/decided-by"] == "alice"
    assert "kubewrit-approvers" in notes["kubewrit.io/decided-by-groups"].split(",")
    stamped = datetime.fromisoformat(notes["kubewrit.io/decided-at"].replace("Z", "+00:00"))
    assert notes["kubewrit.io/decided-at"].endswith("Z")
    assert abs(datetime.now(UTC) - stamped) < timedelta(seconds=30)
    assert notes["kubewrit.io/decision"] == "approve"
    assert notes["kubewrit.io/reason"] == "customer verified"


def test_the_agent_itself_cannot_decide(control_plane, operator, shop, agent_kubectl):
    name = approval(control_plane, shop)
    # RBAC lets it (a dry run on the API server passes authorization) ...
    can = control_plane.kubectl(
        *agent_kubectl, "auth", "can-i", "patch", "actionapprovals", "-n", shop, check=False
    )
    assert can.stdout.strip() == "yes"
    # ... but kubewrit refuses the agent's own decision, whatever it claims.
    r = annotate(control_plane, shop, name, "kubewrit.io/decision=approve", extra=agent_kubectl)
    refused(
        r,
        f"system:serviceaccount:{shop}:support-agent is the agent that requested this "
        "action and may never decide its own approval",
    )
    assert "kubewrit.io/decision" not in (
        get(control_plane, "actionapproval", shop, name)["metadata"].get("annotations") or {}
    )


def test_a_user_who_is_not_an_approver_is_refused(control_plane, operator, shop, agent_kubectl):
    name = approval(control_plane, shop)
    r = annotate(control_plane, shop, name, "kubewrit.io/decision=approve", user="bob")
    refused(
        r,
        f"bob is not an approver of AgentPolicy {shop}/support-agent",
        "users ['manager']",
        "groups ['kubewrit-approvers']",
    )


def test_a_second_decision_is_refused(control_plane, operator, shop):
    name = approval(control_plane, shop)
    assert annotate(control_plane, shop, name, "kubewrit.io/decision=deny").returncode == 0
    r = annotate(control_plane, shop, name, "--overwrite", "kubewrit.io/decision=approve")
    refused(r, "was already decided (deny) by alice", "decided once")
    r = annotate(control_plane, shop, name, "kubewrit.io/decision-")
    refused(r, "was already decided")


def test_a_decision_after_expiry_is_refused(control_plane, operator, shop):
    name = approval(control_plane, shop, expires_in=timedelta(seconds=-5))
    r = annotate(control_plane, shop, name, "kubewrit.io/decision=approve")
    refused(r, "expired at", "can no longer be decided")


def test_the_stamp_cannot_be_edited_or_preset(control_plane, operator, shop):
    name = approval(control_plane, shop)
    # pre-set with the decision: refused in the same request
    r = annotate(
        control_plane, shop, name, "kubewrit.io/decision=approve", "kubewrit.io/decided-by=manager"
    )
    refused(r, "kubewrit.io/decided-by cannot be set by hand")
    # pre-set before any decision
    r = annotate(control_plane, shop, name, "kubewrit.io/decided-at=2020-01-01T00:00:00Z")
    refused(r, "kubewrit.io/decided-at can only come with a decision")
    # after a real decision: no edit, no removal, by anyone (admin included)
    assert annotate(control_plane, shop, name, "kubewrit.io/decision=approve").returncode == 0
    for change in (
        "kubewrit.io/decided-by=manager",
        "kubewrit.io/decided-by-groups=finance",
        "kubewrit.io/decided-at-",
    ):
        r = annotate(control_plane, shop, name, "--overwrite", change, user="admin")
        refused(r, "record who decided and cannot be edited")
    notes = get(control_plane, "actionapproval", shop, name)["metadata"]["annotations"]
    assert notes["kubewrit.io/decided-by"] == "alice"


def test_unrelated_changes_and_status_updates_still_work(control_plane, operator, shop):
    name = approval(control_plane, shop)
    assert annotate(control_plane, shop, name, "kubewrit.io/decision=approve").returncode == 0
    control_plane.kubectl("label", "actionapproval", name, "-n", shop, "team=support")
    # The decision webhook moves status.phase; admission is not registered for /status.
    control_plane.kubectl(
        "patch",
        "actionapproval",
        name,
        "-n",
        shop,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Approved"}}),
    )
    assert get(control_plane, "actionapproval", shop, name)["status"]["phase"] == "Approved"
    hooks = json.loads(
        control_plane.kubectl(
            "get", "validatingwebhookconfiguration", operator.config_name, "-o", "json"
        ).stdout
    )
    for hook in hooks["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        for rule in hook["rules"]:
            assert all("/" not in resource for resource in rule["resources"])


def test_an_approval_naming_no_valid_policy_cannot_be_decided(control_plane, operator, shop):
    name = approval(control_plane, shop, rule="no-such-policy/some-rule")
    r = annotate(control_plane, shop, name, "kubewrit.io/decision=approve")
    refused(r, f"no valid AgentPolicy {shop}/no-such-policy selects this approval")


def test_a_policys_limits_show_their_usage_in_status_and_kubectl_wide(
    control_plane, operator, shop
):
    from decimal import Decimal

    from kubewrit.webhook.kube import configmaps
    from kubewrit.webhook.slices import BudgetState

    spec = yaml.safe_load((EXAMPLE_POLICY.parent.parent / "limits/refund-budget.yaml").read_text())
    spec.pop("name")
    control_plane.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(policy(shop, "refund-budget", spec))
    )
    # What the decision webhook keeps for one budget: $700 spent, a $200 slice leased.
    now = datetime.now(UTC).timestamp()
    limit = f"{shop}/refund-budget/auto-refund-budget"
    state = BudgetState(
        limit,
        '[["agent","shop/support-agent"]]',
        [(now - 60, Decimal(700))],
        {"webhook-0": (Decimal(200), now + 3600)},
    )
    data = configmaps.budget_data(state, now, 86400, Decimal(1000))
    control_plane.kubectl("create", "namespace", "kubewrit-system", check=False)
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": configmaps.budget_name(limit, state.scope),
                    "namespace": "kubewrit-system",
                    "labels": {configmaps.BUDGET_LABEL: "test"},
                },
                "data": data,
            }
        ),
    )

    def shown() -> dict[str, Any] | None:
        obj = get(control_plane, "agentpolicy", shop, "refund-budget")
        usage = {u["name"]: u for u in (obj.get("status") or {}).get("limits") or []}
        budget = usage.get("auto-refund-budget")
        return usage if budget and budget["used"] == "900" else None

    usage = wait_until(shown, timeout=40, what="the budget's usage in the policy's status")
    assert usage["auto-refund-budget"] == {
        "name": "auto-refund-budget",
        "window": "24h",
        "bound": "1000",
        "used": "900",
        "scopes": 1,
        "exceeded": "require_approval",
    }
    assert usage["refunds-per-customer"]["used"] == "0"
    wide = control_plane.kubectl("get", "agentpolicy", "refund-budget", "-n", shop, "-o", "wide")
    assert "auto-refund-budget 900/1000 per 24h" in wide.stdout
