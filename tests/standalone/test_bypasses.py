"""Every bypass the standalone server must refuse, tried over HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from kubewrit.webhook import canonical, keys, writ

from tests.conftest import Server, start_server


@pytest.mark.parametrize(
    "amount", ["5,000", "1e3", " 45", "45 ", "0x2D", {"value": 5000}, [45], True, None]
)
def test_wrongly_typed_amounts_are_denied_not_skipped(server: Server, amount: object) -> None:
    body = server.decide(tool="process_refund", args={"amount": amount}).json()
    assert (body["decision"], body["reason"]) == ("DENY", "type_mismatch"), body


@pytest.mark.parametrize(
    ("amount", "decision"),
    [
        ("45", "PERMIT"),
        ("600", "DEFER"),
        ("1200.00", "DENY"),
        (45.0, "PERMIT"),
        (150, "PERMIT"),
        (150.01, "DEFER"),
    ],
)
def test_clean_numeric_strings_compare_as_numbers(
    server: Server, amount: object, decision: str
) -> None:
    assert (
        server.decide(tool="process_refund", args={"amount": amount}).json()["decision"] == decision
    )


def test_absent_amount_matches_no_amount_rule(server: Server) -> None:
    body = server.decide(tool="process_refund", args={"order": "A-1"}).json()
    assert (body["decision"], body["reason"]) == ("DENY", "default_deny")


@pytest.mark.parametrize(
    "tool", ["prоcess_refund", "process\u200b_refund", "ｐrocess_refund", "process refund"]
)
def test_look_alike_tool_names_are_denied_and_recorded(server: Server, tool: str) -> None:
    body = server.decide(tool=tool, args={"amount": 45}).json()
    assert (body["decision"], body["reason"]) == ("DENY", "invalid_tool_name")
    assert body["record"] is not None
    records = server.get("/v1/records", "approver", params={"decision": "DENY"}).json()["items"]
    assert any(r["tool"] == tool and r["reason"] == "invalid_tool_name" for r in records)


def test_spoofed_agent_id_is_refused_and_recorded(server: Server) -> None:
    answer = server.decide(tool="process_refund", args={"amount": 45}, agent="finance-agent")
    assert answer.status_code == 403
    body = answer.json()
    assert body["error"]["code"] == "identity_mismatch"
    assert body["decision"]["decision"] == "DENY" and body["decision"]["record"]["seq"] > 0


def test_unauthenticated_and_unknown_tokens_are_refused(server: Server) -> None:
    url = f"{server.url}/v1/decide"
    assert httpx.post(url, json={"tool": "send_email"}).status_code == 401
    bad = httpx.post(url, json={"tool": "send_email"}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthenticated"


def test_agents_cannot_approve_even_their_own_action(server: Server) -> None:
    approval_id = server.decide(tool="process_refund", args={"amount": 340}).json()["approval"][
        "id"
    ]
    answer = server.post(f"/v1/approvals/{approval_id}/approve", "support-agent")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "not_an_approver"
    assert server.get(f"/v1/approvals/{approval_id}", "approver").json()["phase"] == "Pending"


def test_an_approver_outside_the_policy_list_cannot_approve(server: Server) -> None:
    outsider = server.kubewrit("tokens", "create", "intern", "--role", "approver").stdout.strip()
    server.tokens["intern"] = outsider
    approval_id = server.decide(tool="process_refund", args={"amount": 340}).json()["approval"][
        "id"
    ]
    answer = server.post(f"/v1/approvals/{approval_id}/approve", "intern")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "not_listed_approver"


def test_approvals_are_single_use(server: Server) -> None:
    approval_id = server.decide(tool="process_refund", args={"amount": 340}).json()["approval"][
        "id"
    ]
    assert server.post(f"/v1/approvals/{approval_id}/approve", "approver").status_code == 200
    again = server.post(f"/v1/approvals/{approval_id}/deny", "approver")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"
    first = server.get(f"/v1/approvals/{approval_id}", "support-agent").json()
    assert first["outcome"]["writ"]
    second = server.get(f"/v1/approvals/{approval_id}", "support-agent")
    assert second.status_code == 409 and second.json()["error"]["code"] == "approval_consumed"


def test_denied_approval_never_permits(server: Server) -> None:
    approval_id = server.decide(tool="process_refund", args={"amount": 340}).json()["approval"][
        "id"
    ]
    server.post(
        f"/v1/approvals/{approval_id}/deny", "approver", json={"reason": "duplicate refund"}
    )
    view = server.get(f"/v1/approvals/{approval_id}", "support-agent").json()
    assert view["phase"] == "Denied" and view["outcome"]["decision"] == "DENY"
    assert view["outcome"]["reason"] == "approval_denied" and view["outcome"]["writ"] is None


def test_expired_approval_is_denied(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--approval-ttl", "1")
    try:
        approval_id = server.decide(tool="process_refund", args={"amount": 340}).json()["approval"][
            "id"
        ]
        time.sleep(2.5)
        answer = server.post(f"/v1/approvals/{approval_id}/approve", "approver")
        assert answer.status_code == 409 and answer.json()["error"]["code"] in {
            "approval_expired",
            "already_decided",
        }
        view = server.get(f"/v1/approvals/{approval_id}", "support-agent").json()
        assert view["phase"] == "Expired"
        records = server.get("/v1/records", "approver", params={"limit": 100}).json()["items"]
        assert any(r["kind"] == "expiry" and r["reason"] == "approval_expired" for r in records)
    finally:
        server.stop()


def test_replayed_or_altered_writs_are_rejected(server: Server) -> None:
    body = server.decide(tool="process_refund", args={"amount": 45}).json()
    key = keys.load_public(server.kubewrit("keys", "public").stdout)
    action = canonical.build_action("support-agent", "process_refund", {"amount": 45})
    replay = writ.ReplayCache()
    writ.verify(body["writ"], key, action, replay=replay)
    with pytest.raises(writ.WritRejected) as replayed:
        writ.verify(body["writ"], key, action, replay=replay)
    assert replayed.value.code == "replayed"
    bigger = canonical.build_action("support-agent", "process_refund", {"amount": 4500})
    with pytest.raises(writ.WritRejected) as altered:
        writ.verify(body["writ"], key, bigger)
    assert altered.value.code == "action_mismatch"
    header, payload, signature = body["writ"].split(".")
    forged = ".".join(
        [header, payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1], signature]
    )
    with pytest.raises(writ.WritRejected):
        writ.verify(forged, key, action)


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"tool": "send_email", "tool": "process_refund"}', 400, "duplicate_key"),
        (b'{"tool": "send_email", "args": {"n": NaN}}', 400, "invalid_number"),
        (b'{"tool": "send_email", "args": {"n": Infinity}}', 400, "invalid_number"),
        (b'{"tool": "send_email", "args": {"n": 9007199254740993}}', 400, "number_out_of_range"),
        (b'{"tool": "send_email"', 400, "malformed_json"),
        (b'{"tool": "send_email", "agnet": "x"}', 400, "invalid_request"),
        (b'{"tool": 5}', 400, "invalid_request"),
        (b"[1, 2]", 400, "invalid_request"),
        (
            b'{"tool": "send_email", "args": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
            400,
            "too_deep",
        ),
        (
            b'{"tool": "send_email", "args": {"blob": "' + b"x" * 70000 + b'"}}',
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    server: Server, raw: bytes, status: int, code: str
) -> None:
    before = len(server.get("/v1/records", "approver", params={"limit": 1000}).json()["items"])
    answer = httpx.post(
        f"{server.url}/v1/decide",
        content=raw,
        timeout=10,
        headers={**server.headers("support-agent"), "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    after = len(server.get("/v1/records", "approver", params={"limit": 1000}).json()["items"])
    assert after == before


def test_a_retry_with_the_same_request_id_is_not_a_second_decision(server: Server) -> None:
    first = server.decide(tool="process_refund", args={"amount": 45}, request_id="req-1").json()
    second = server.decide(tool="process_refund", args={"amount": 45}, request_id="req-1").json()
    assert second["replayed"] is True and second["record"] == first["record"]
    reused = server.decide(tool="process_refund", args={"amount": 900}, request_id="req-1")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "request_id_reused"


def test_errors_never_leak_internals(server: Server) -> None:
    answer = server.get("/v1/approvals/does-not-exist", "approver")
    assert answer.status_code == 404
    assert json.dumps(answer.json()).find("Traceback") == -1
