"""The seed walkthrough, end to end over HTTP against a real `kubewrit serve`."""

from __future__ import annotations

import time

from kubewrit.webhook import canonical, keys, writ

from tests.conftest import Server, poll


def public_key(server: Server) -> keys.Verifier:
    return keys.load_public(server.kubewrit("keys", "public").stdout)


def test_small_refund_is_permitted_with_a_verifiable_writ(server: Server) -> None:
    answer = server.decide(tool="process_refund", args={"amount": 45, "order_id": "A-1"})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["decision"], body["reason"], body["rule_id"]) == (
        "PERMIT",
        "rule_allow",
        "support-agent/small-refunds",
    )
    action = canonical.build_action(
        "support-agent", "process_refund", {"amount": 45, "order_id": "A-1"}
    )
    claims = writ.verify(body["writ"], public_key(server), action, agent="support-agent")
    assert claims.record_hash == body["record"]["hash"]
    assert body["action_hash"] == canonical.action_hash(action)


def test_mid_range_refund_waits_for_an_approver_then_runs(server: Server) -> None:
    body = server.decide(tool="process_refund", args={"amount": 340}).json()
    assert body["decision"] == "DEFER" and body["writ"] is None
    approval_id = body["approval"]["id"]

    pending = server.get(f"/v1/approvals/{approval_id}", "support-agent").json()
    assert pending["phase"] == "Pending"

    decided = server.post(
        f"/v1/approvals/{approval_id}/approve", "approver", json={"reason": "customer ok"}
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["phase"] == "Approved"

    collected = server.get(
        f"/v1/approvals/{approval_id}", "support-agent", params={"wait": 5}
    ).json()
    assert collected["phase"] == "Consumed"
    outcome = collected["outcome"]
    assert outcome["decision"] == "PERMIT" and outcome["reason"] == "approved"
    action = canonical.build_action("support-agent", "process_refund", {"amount": 340})
    writ.verify(outcome["writ"], public_key(server), action, agent="support-agent")

    records = server.get("/v1/records", "approver", params={"limit": 100}).json()["items"]
    final = next(r for r in records if r["approval"] == approval_id and r["kind"] == "approval")
    assert final["decision"] == "PERMIT" and final["approver"] == "approver"


def test_long_poll_returns_when_the_approver_decides(server: Server) -> None:
    import threading

    approval_id = server.decide(tool="process_refund", args={"amount": 200}).json()["approval"][
        "id"
    ]
    timer = threading.Timer(
        0.5, lambda: server.post(f"/v1/approvals/{approval_id}/approve", "approver")
    )
    timer.start()
    started = time.monotonic()
    collected = server.get(
        f"/v1/approvals/{approval_id}", "support-agent", params={"wait": 20}
    ).json()
    timer.join()
    assert collected["outcome"]["decision"] == "PERMIT"
    assert time.monotonic() - started < 5


def test_600_is_deferred_and_marked_high_risk(server: Server) -> None:
    body = server.decide(tool="process_refund", args={"amount": 600}).json()
    assert body["decision"] == "DEFER"
    assert body["risk"] == "high"
    assert body["risk_rule"] == "support-agent/large-financial-action"


def test_large_refund_is_denied_with_the_policy_reason(server: Server) -> None:
    body = server.decide(tool="process_refund", args={"amount": 1200}).json()
    assert (body["decision"], body["reason"], body["rule_id"]) == (
        "DENY",
        "rule_deny",
        "support-agent/large-refunds",
    )
    assert "finance team" in body["message"]
    assert body["writ"] is None and body["record"]["seq"] > 0


def test_unknown_tool_is_denied_by_default(server: Server) -> None:
    body = server.decide(tool="delete_customer", args={"id": 7}).json()
    assert (body["decision"], body["reason"]) == ("DENY", "default_deny")


def test_policy_edit_is_live_within_a_second_without_restart(server: Server) -> None:
    assert server.decide(tool="process_refund", args={"amount": 45}).json()["decision"] == "PERMIT"
    policy_file = server.policies / "support-agent.yaml"
    replacement = server.policies / ".support-agent.yaml.swp"
    replacement.write_text(
        "agents: [support-agent]\n"
        "rules:\n"
        "  - id: refunds-over-50\n"
        "    match: {tool: process_refund, amount_gt: 50}\n"
        "    deny: true\n"
    )
    replacement.replace(policy_file)  # an editor's atomic-rename save
    body = poll(
        lambda: server.decide(tool="process_refund", args={"amount": 45}).json(),
        lambda answer: answer["reason"] == "default_deny",
        timeout=1.0,
    )
    assert (body["decision"], body["reason"]) == ("DENY", "default_deny")
    assert server.decide(tool="process_refund", args={"amount": 60}).json()["reason"] == "rule_deny"


def test_invalid_policy_edit_keeps_the_previous_policy(server: Server) -> None:
    policy_file = server.policies / "support-agent.yaml"
    good = policy_file.read_text()
    policy_file.write_text(good.replace("allow: true", "alow: true", 1))
    ready = poll(lambda: server.get("/readyz").json(), lambda r: r["last_error"] is not None, 2)
    assert (
        "unknown key 'alow'" in ready["last_error"]
        and "rule 1 (small-refunds)" in ready["last_error"]
    )
    assert server.decide(tool="process_refund", args={"amount": 45}).json()["decision"] == "PERMIT"
    metrics = server.get("/metrics").text
    assert "kubewrit_policy_reload_failures_total 1.0" in metrics


def test_removing_every_policy_denies_everything(server: Server) -> None:
    (server.policies / "support-agent.yaml").unlink()
    poll(lambda: server.get("/readyz").status_code, lambda status: status != 200, 2)
    assert server.get("/readyz").status_code == 503
    body = server.decide(tool="process_refund", args={"amount": 45}).json()
    assert (body["decision"], body["reason"]) == ("DENY", "default_deny")


def test_every_decision_is_recorded_and_the_chain_verifies(server: Server, tmp_path) -> None:
    for amount in (45, 340, 1200):
        server.decide(tool="process_refund", args={"amount": amount})
    time.sleep(0.8)  # let the anchor publish (every 0.5 s in this fixture)
    result = server.kubewrit("verify")
    assert "verified" in result.stdout
    export = tmp_path / "export.jsonl"
    server.kubewrit("records", "export", "-o", str(export))
    key = tmp_path / "key.pub"
    key.write_text(server.kubewrit("keys", "public").stdout)
    offline = server.kubewrit(
        "verify", "--export", str(export), "--public-key", str(key), "-o", "json"
    )
    assert '"ok": true' in offline.stdout


def test_metrics_and_admission_review(server: Server) -> None:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "object": {"tool": "process_refund", "args": {"amount": 1200}}},
    }
    answer = server.post("/v1/admission", "support-agent", json=review).json()["response"]
    assert answer["uid"] == "u-1" and answer["allowed"] is False
    assert answer["status"]["code"] == 403 and "finance team" in answer["status"]["message"]
    assert answer["auditAnnotations"]["kubewrit.io/decision"] == "DENY"
    review["request"]["object"]["args"]["amount"] = 45
    permitted = server.post("/v1/admission", "support-agent", json=review).json()["response"]
    assert permitted["allowed"] is True and permitted["auditAnnotations"]["kubewrit.io/writ"]
    metrics = server.get("/metrics").text
    assert 'kubewrit_decisions_total{decision="DENY",reason="rule_deny"} 1.0' in metrics
    assert "kubewrit_decide_latency_seconds_bucket" in metrics
    assert server.get("/openapi.json").json()["paths"]["/v1/decide"]["post"]["requestBody"]


def test_cli_approvals_and_watch_against_a_running_server(server: Server) -> None:
    deferred = server.decide(tool="process_refund", args={"amount": 340}).json()
    approval_id = deferred["approval"]["id"]
    pending = server.kubewrit("approvals", "list", "--url", server.url, "-o", "json").stdout
    assert approval_id in pending
    approved = server.kubewrit(
        "approvals", "approve", approval_id, "--reason", "customer verified", "--url", server.url
    )
    assert "Approved by approver" in approved.stdout
    watched = server.kubewrit("watch", "--url", server.url, "--count", "2", "--interval", "0.1")
    assert "DEFER" in watched.stdout and "PERMIT" in watched.stdout and "approver" in watched.stdout
    agent_try = server.kubewrit(
        "approvals", "deny", approval_id, "--as", "support-agent", "--url", server.url, check=False
    )
    assert agent_try.returncode == 1 and "not_an_approver" in agent_try.stderr


def test_secrets_at_rest(server: Server) -> None:
    """The signing key is private to its owner; the server keeps only token hashes."""
    key = server.data_dir / "signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    stored = (server.data_dir / "tokens.yaml").read_text()
    assert all(token not in stored for token in server.tokens.values())
    assert "sha256:" in stored
