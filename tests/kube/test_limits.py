"""The bulk attack against two webhook replicas on a real API server, one replica
restarted in the middle: the replicas together permit exactly the budget, never more.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubewrit.webhook import chain
from kubewrit.webhook.chain import Record
from kubewrit.webhook.kube.records import from_spec

from tests.conftest import REPO, poll, run_cli
from tests.kube.decision_webhook import agent_namespace, agent_token, policy_manifest, webhooks

pytestmark = pytest.mark.kube

CLIENTS = 16
REFUNDS = 1470
POLICY = yaml.safe_load((REPO / "examples" / "limits" / "refund-budget.yaml").read_text())


@pytest.fixture(scope="module")
def shop(control_plane: Any) -> Iterator[str]:
    spec = {k: v for k, v in POLICY.items() if k != "name"}
    with agent_namespace(
        control_plane, "limits", lambda ns: policy_manifest(ns, "refund-budget", spec)
    ) as namespace:
        yield namespace


def test_two_replicas_permit_exactly_the_budget_across_a_restart(
    control_plane: Any, shop: str, tmp_path: Path
) -> None:
    token = agent_token(control_plane, shop)
    with webhooks(control_plane, tmp_path, "limits") as replicas:
        answers: dict[str, dict[str, Any]] = {}
        lock = threading.Lock()
        work = iter(range(REFUNDS))

        def client(n: int) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(headers=headers, timeout=60) as http:
                for i in work:
                    body = {
                        "tool": "process_refund",
                        "args": {"amount": 100, "customer_id": f"c-{i}"},
                        "request_id": f"refund-{i}",
                    }
                    target = (n + i) % 2
                    while True:  # a Service would send the retry to whichever is up
                        try:
                            reply = http.post(f"{replicas[target].url}/v1/decide", json=body)
                        except httpx.TransportError:
                            target = 1 - target
                            continue
                        if reply.status_code == 200:
                            break
                        assert reply.status_code in (502, 503), reply.text
                        target = 1 - target
                    with lock:
                        answers[body["request_id"]] = reply.json()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        poll(lambda: len(answers), lambda n: n >= 5, timeout=120)
        replicas[1].restart()  # SIGTERM: it returns its unused slices on the way out
        for t in threads:
            t.join(timeout=600)
        assert len(answers) == REFUNDS
        decisions = Counter(a["decision"] for a in answers.values())
        assert decisions == {"PERMIT": 10, "DEFER": REFUNDS - 10}
        reasons = Counter(a["reason"] for a in answers.values() if a["decision"] == "DEFER")
        assert reasons == {"limit_exceeded": REFUNDS - 10}

        permits = json.loads(
            control_plane.kubectl(
                "get",
                "actionrecords",
                "-n",
                shop,
                "-l",
                "kubewrit.io/decision=PERMIT,kubewrit.io/kind=decision",
                "-o",
                "json",
            ).stdout
        )["items"]
        assert len(permits) == 10
        assert (
            sum(
                int(e["amount"])
                for p in permits
                for e in p["spec"]["limits"]
                if e["limit"].endswith("auto-refund-budget")
            )
            == 1000
        )

        # The shared budget, once idle slices are back: all of it spent, none leased.
        def budget() -> dict[str, str]:
            listed = json.loads(
                control_plane.kubectl(
                    "get",
                    "configmaps",
                    "-n",
                    "kubewrit-system",
                    "-l",
                    "kubewrit.io/budget",
                    "-o",
                    "json",
                ).stdout
            )["items"]
            return next(
                cm["data"]
                for cm in listed
                if cm["data"]["limit"].endswith("auto-refund-budget")
                and cm["data"]["limit"].startswith(shop)
            )

        settled = poll(budget, lambda d: json.loads(d["state"])["leases"] == {}, timeout=30)
        assert settled["used"] == "1000" and settled["bound"] == "1000"

        # Recounted from the signed records alone: no budget was overspent.
        report = json.loads(
            run_cli(
                "verify",
                "--kubeconfig",
                str(control_plane.kubeconfig_for("admin")),
                "-n",
                shop,
                "--limits",
                "-o",
                "json",
                check=False,
            ).stdout
        )
        assert report["ok"] is True, report
        assert report["limits"]["overspends"] == []
        used = {b["limit"]: b["used_now"] for b in report["limits"]["budgets"]}
        assert used[f"{shop}/refund-budget/auto-refund-budget"] == "1000"


def test_a_sequence_rule_holds_across_replicas(
    control_plane: Any, shop: str, tmp_path: Path
) -> None:
    """Reading on one replica and mailing out through the other is still held."""
    token = agent_token(control_plane, shop)
    with webhooks(control_plane, tmp_path, "history") as replicas:
        mail = {"tool": "send_email", "args": {"to": "someone@elsewhere.example"}}
        before = replicas[1].decide(token, **mail).json()
        read = replicas[0].decide(token, tool="read_inbox").json()
        after = replicas[1].decide(token, **mail).json()
        assert before["decision"] == "PERMIT", before
        assert read["decision"] == "PERMIT", read
        assert after["decision"] == "DEFER", after
        assert after["rule_id"] == "refund-budget/email-out-after-reading-needs-approval"


TRANSFERS = {
    "agents": ["support-agent"],
    "rules": [
        {"id": "check-identity", "match": {"tool": "verify_identity"}, "allow": True},
        {
            "id": "transfer-after-identity-check",
            "match": {"tool": "transfer", "after": {"tool": ["verify_identity"], "within": "10m"}},
            "allow": True,
        },
    ],
}


def test_a_planted_record_never_satisfies_a_sequence_rule(
    control_plane: Any, tmp_path: Path
) -> None:
    """A transfer is allowed only after an identity check. Whoever may create ActionRecords
    plants the check's PERMIT (re-hashed, or copied from a genuine record with a new time);
    the transfer stays denied until the agent's own check is decided."""
    with agent_namespace(
        control_plane, "sequence", lambda ns: policy_manifest(ns, "transfers", TRANSFERS)
    ) as namespace:
        token = agent_token(control_plane, namespace)
        with webhooks(control_plane, tmp_path, "planted", count=1) as [replica]:
            denied = replica.decide(token, tool="transfer", args={"amount": 10}).json()
            assert denied["decision"] == "DENY", denied
            [template] = json.loads(
                control_plane.kubectl(
                    "get", "actionrecords", "-n", namespace, "-l",
                    "kubewrit.io/decision=DENY", "-o", "json",
                ).stdout
            )["items"]  # fmt: skip
            check = {**template["spec"], "tool": "verify_identity", "decision": "PERMIT"}
            rehashed = {
                **check,
                "hash": chain.record_hash(Record.from_dict(from_spec(check)).body()),
            }
            labels = {
                **template["metadata"]["labels"],
                "kubewrit.io/tool": "verify_identity",
                "kubewrit.io/decision": "PERMIT",
            }
            for name, spec in (("planted-rehashed", rehashed), ("planted-unhashed", check)):
                planted = {
                    "apiVersion": template["apiVersion"],
                    "kind": "ActionRecord",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": spec,
                }
                control_plane.kubectl("create", "-f", "-", input=json.dumps(planted))
            still = replica.decide(token, tool="transfer", args={"amount": 10}).json()
            assert still["decision"] == "DENY", still
            assert "not signed by a kubewrit key" in replica.log.read_text()

            checked = replica.decide(token, tool="verify_identity").json()
            assert checked["decision"] == "PERMIT", checked
            allowed = replica.decide(token, tool="transfer", args={"amount": 10}).json()
            assert allowed["decision"] == "PERMIT", allowed
            assert allowed["rule_id"] == "transfers/transfer-after-identity-check"


def test_a_sequence_rule_reads_its_window_and_records_from_before_time_labels(
    control_plane: Any, tmp_path: Path
) -> None:
    """Records carry the hour they were made; history lists only the hours its window
    reaches, so a check relabelled into another year no longer satisfies the rule, and a
    check with no time labels at all (made before they existed) still does."""
    with agent_namespace(
        control_plane, "window", lambda ns: policy_manifest(ns, "transfers", TRANSFERS)
    ) as namespace:
        token = agent_token(control_plane, namespace)
        check = ["actionrecords", "-n", namespace, "-l", "kubewrit.io/tool=verify_identity"]
        with webhooks(control_plane, tmp_path, "window", count=1) as [replica]:
            assert replica.decide(token, tool="verify_identity").json()["decision"] == "PERMIT"
            [record] = json.loads(control_plane.kubectl("get", *check, "-o", "json").stdout)[
                "items"
            ]
            made = chain.epoch(record["spec"]["time"])
            assert abs(made - time.time()) < 60
            hour = time.strftime("%Y%m%d%H", time.gmtime(made))
            labels = record["metadata"]["labels"]
            assert (labels["kubewrit.io/hour"], labels["kubewrit.io/day"]) == (hour, hour[:8])

            transfer = {"tool": "transfer", "args": {"amount": 10}}
            assert replica.decide(token, **transfer).json()["decision"] == "PERMIT"

            control_plane.kubectl("label", *check, "kubewrit.io/hour=2020010100", "--overwrite")
            moved = replica.decide(token, **transfer).json()
            assert moved["decision"] == "DENY", moved
            report = verified(control_plane, namespace)
            named = [p["detail"] for p in report["input_problems"]] + [
                c["problem"]["detail"] for c in report["chains"] if c["problem"]
            ]
            assert report["ok"] is False
            assert any(
                f"label kubewrit.io/hour says '2020010100', the signed record '{hour}'" in detail
                for detail in named
            ), named

            control_plane.kubectl("label", *check, "kubewrit.io/hour-", "kubewrit.io/day-")
            unlabelled = replica.decide(token, **transfer).json()
            assert unlabelled["decision"] == "PERMIT", unlabelled
            assert unlabelled["rule_id"] == "transfers/transfer-after-identity-check"
        assert verified(control_plane, namespace)["ok"] is True


def verified(control_plane: Any, namespace: str) -> dict[str, Any]:
    """`kubewrit verify`'s JSON report on a namespace's chains."""
    admin = str(control_plane.kubeconfig_for("admin"))
    found = run_cli("verify", "--kubeconfig", admin, "-n", namespace, "-o", "json", check=False)
    report: dict[str, Any] = json.loads(found.stdout)
    return report
