"""Request ids in Kubernetes mode: one decision per id across two webhook replicas."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubewrit.webhook import chain, writ
from kubewrit.webhook.chain import Record
from kubewrit.webhook.kube.records import from_spec
from kubewrit.webhook.requests import RequestKey

from tests.kube.decision_webhook import (
    DecisionWebhook,
    agent_namespace,
    agent_token,
    start_webhook,
    webhooks,
)

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def shop(control_plane: Any) -> Iterator[str]:
    with agent_namespace(control_plane, "reqid") as namespace:
        yield namespace


@pytest.fixture(scope="module")
def replicas(
    control_plane: Any, shop: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[DecisionWebhook]]:
    with webhooks(control_plane, tmp_path_factory.mktemp("replicas"), "replica") as started:
        yield started


@pytest.fixture(scope="module")
def agent(control_plane: Any, shop: str) -> str:
    return agent_token(control_plane, shop)


def decisions_for(control_plane: Any, namespace: str, request_id: str) -> list[dict[str, Any]]:
    digest = RequestKey(namespace, "support-agent", request_id).digest()
    listing = control_plane.kubectl(
        "get", "actionrecords", "-n", namespace, "-l", f"kubewrit.io/request={digest}", "-o", "json"
    ).stdout
    return json.loads(listing)["items"]


@pytest.mark.parametrize("amount", [45, 340])
def test_concurrent_retries_across_replicas_are_one_decision(
    control_plane, shop, replicas, agent, amount
) -> None:
    request_id = f"both-replicas-{amount}-{uuid.uuid4().hex[:6]}"

    def send(i: int) -> dict[str, Any]:
        answer = replicas[i % 2].decide(
            agent, tool="process_refund", args={"amount": amount}, request_id=request_id
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert len(decisions_for(control_plane, shop, request_id)) == 1
    assert len({(a["record"]["chain"], a["record"]["seq"]) for a in answers}) == 1
    # one record, one writ: each replica signs it with its own key, over the same claims
    claims = [writ.claims_of(a["writ"]) for a in answers if a["writ"]]
    assert len({(c["jti"], c["exp"], c["iat"]) for c in claims}) <= 1
    assert len(claims) == (8 if amount == 45 else 0)
    assert len({(a["approval"] or {}).get("id") for a in answers}) == 1
    assert sum(1 for a in answers if not a["replayed"]) == 1
    if amount == 340:
        approvals = json.loads(
            control_plane.kubectl("get", "actionapprovals", "-n", shop, "-o", "json").stdout
        )["items"]
        assert [a["spec"].get("requestId") for a in approvals].count(request_id) == 1


def test_a_request_id_reused_for_another_action_is_refused_by_any_replica(
    shop, replicas, agent
) -> None:
    request_id = f"reused-{uuid.uuid4().hex[:6]}"
    first = replicas[0].decide(
        agent, tool="process_refund", args={"amount": 45}, request_id=request_id
    )
    assert first.status_code == 200
    other = replicas[1].decide(
        agent, tool="process_refund", args={"amount": 46}, request_id=request_id
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "request_id_reused"


def test_a_replay_survives_a_restart_of_the_deciding_replica(
    control_plane, shop, agent, tmp_path: Path
) -> None:
    request_id = f"restart-{uuid.uuid4().hex[:6]}"
    answers = []
    for _ in range(2):  # the same replica (same chain and key), stopped and started again
        replica = start_webhook(control_plane, tmp_path, "restarting")
        try:
            answers.append(
                replica.decide(
                    agent, tool="process_refund", args={"amount": 45}, request_id=request_id
                ).json()
            )
        finally:
            replica.stop()
    before, after = answers
    assert after["replayed"] and after["record"] == before["record"]
    assert after["writ"] == before["writ"]


def test_record_queries_point_at_kubectl(replicas, agent) -> None:
    answer = replicas[0].get("/v1/records", agent)
    assert answer.status_code == 501
    assert "kubectl get actionrecords" in answer.json()["error"]["message"]


def test_a_planted_record_never_turns_a_replay_into_a_permit(
    control_plane, shop, replicas, agent
) -> None:
    """Whoever may create ActionRecords could plant a PERMIT under a denied request's label;
    a retry must still get the DENY that kubewrit signed, and no writ."""
    request_id = f"planted-{uuid.uuid4().hex[:6]}"
    first = replicas[0].decide(
        agent, tool="process_refund", args={"amount": 1200}, request_id=request_id
    )
    assert first.json()["decision"] == "DENY"
    [genuine] = decisions_for(control_plane, shop, request_id)
    for name, rehash in (("aaa-planted-permit", False), ("aaa-planted-rehashed", True)):
        spec = {**genuine["spec"], "decision": "PERMIT", "reason": "rule_allow"}
        if rehash:  # consistent content, but no kubewrit key signed it
            spec["hash"] = chain.record_hash(Record.from_dict(from_spec(spec)).body())
        planted = {
            "apiVersion": genuine["apiVersion"],
            "kind": "ActionRecord",
            "metadata": {"name": name, "namespace": shop, "labels": genuine["metadata"]["labels"]},
            "spec": spec,
        }
        control_plane.kubectl("create", "-f", "-", input=json.dumps(planted))
    for replica in replicas:
        retry = replica.decide(
            agent, tool="process_refund", args={"amount": 1200}, request_id=request_id
        ).json()
        assert (retry["decision"], retry["replayed"], retry.get("writ")) == ("DENY", True, None)
        assert retry["record"]["hash"] == genuine["spec"]["hash"]
