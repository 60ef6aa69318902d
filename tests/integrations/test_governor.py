"""The shared core against a real server: every path that must not run, does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration_harness import Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook.client import (
    ActionDenied,
    ApprovalTimeout,
    GovernanceUnavailable,
    Governor,
)


def refund(effects: SideEffects) -> Any:
    def run(args: dict[str, Any]) -> str:
        effects.record("process_refund", **args)
        return f"refunded {args['amount']}"

    return run


def test_permit_runs_once_with_exact_args(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    args = {"amount": 45, "order_id": order_id()}
    with kubewrit_server.governor() as gov:
        assert gov.run("process_refund", args, refund(effects)) == "refunded 45"
    assert effects.of("process_refund") == [args]


def test_deny_never_runs_and_carries_the_record(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    with kubewrit_server.governor() as gov, pytest.raises(ActionDenied) as denied:
        gov.run("process_refund", {"amount": 5000, "order_id": order_id()}, refund(effects))
    assert effects.calls == []
    assert denied.value.code == "rule_deny"
    assert denied.value.rule_id.endswith("large-refunds")
    assert denied.value.record_ref and "/" in denied.value.record_ref


def test_default_deny_for_unknown_tool(kubewrit_server: KubewritServer) -> None:
    with kubewrit_server.governor() as gov, pytest.raises(ActionDenied) as denied:
        gov.check("drop_database", {})
    assert denied.value.code == "default_deny"


def test_defer_runs_only_after_approval(
    kubewrit_server: KubewritServer, approver: Approvals, effects: SideEffects, order_id: Unique
) -> None:
    args = {"amount": 300, "order_id": order_id()}
    approver.decide_next(approve=True)
    with kubewrit_server.governor() as gov:
        assert gov.run("process_refund", args, refund(effects)) == "refunded 300"
    assert effects.of("process_refund") == [args]
    assert approver.decided


def test_defer_denied_never_runs(
    kubewrit_server: KubewritServer, approver: Approvals, effects: SideEffects, order_id: Unique
) -> None:
    approver.decide_next(approve=False)
    with kubewrit_server.governor() as gov, pytest.raises(ActionDenied) as denied:
        gov.run("process_refund", {"amount": 300, "order_id": order_id()}, refund(effects))
    assert denied.value.code == "approval_denied"
    assert denied.value.approval_id
    assert effects.calls == []


def test_defer_timeout_never_runs(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    with (
        kubewrit_server.governor(approval_timeout=0.5) as gov,
        pytest.raises(ApprovalTimeout) as waited,
    ):
        gov.run("process_refund", {"amount": 300, "order_id": order_id()}, refund(effects))
    assert waited.value.approval_id
    assert effects.calls == []


def test_server_down_never_runs(
    kubewrit_server: KubewritServer, down_url: str, effects: SideEffects
) -> None:
    gov = Governor(down_url, kubewrit_server.agent_token, agent="support-agent", retries=1)
    with gov, pytest.raises(GovernanceUnavailable) as down:
        gov.run("process_refund", {"amount": 1, "order_id": "X"}, refund(effects))
    assert down.value.code == "unreachable"
    assert effects.calls == []


def test_changed_arguments_do_not_run(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    args = {"amount": 45, "order_id": order_id()}
    with kubewrit_server.governor() as gov:
        permit = gov.check("process_refund", args)
        with pytest.raises(ActionDenied) as changed:
            gov.execute(permit, {**args, "amount": 900}, refund(effects))
        assert changed.value.code == "writ_action_mismatch"
        gov.execute(permit, args, refund(effects))
        with pytest.raises(ActionDenied) as again:
            gov.execute(permit, args, refund(effects))
        assert again.value.code == "writ_replayed"
    assert effects.of("process_refund") == [args]


def test_forged_writ_is_rejected_with_key(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    from dataclasses import replace

    import jwt
    from kubewrit.webhook import keys, writ

    args = {"amount": 45, "order_id": order_id()}
    with kubewrit_server.governor() as gov:
        permit = gov.check("process_refund", args)
        claims = gov.authorize(permit, args)  # a genuine writ passes once
        rogue = keys.generate()
        payload = jwt.decode(permit.writ, options={"verify_signature": False})
        payload["jti"] = payload["rec"] = "sha256:forged"
        token = jwt.encode(
            payload,
            rogue.private_key,
            algorithm="EdDSA",
            headers={"typ": writ.WRIT_TYPE, "kid": rogue.key_id},
        )
        with pytest.raises(ActionDenied) as forged:
            gov.execute(replace(permit, writ=token), args, refund(effects))
        assert forged.value.code == "writ_bad_signature"
    assert claims.agent == "support-agent"
    assert effects.calls == []


def test_async_paths(
    kubewrit_server: KubewritServer, approver: Approvals, effects: SideEffects, order_id: Unique
) -> None:
    small = {"amount": 20, "order_id": order_id()}
    mid = {"amount": 200, "order_id": order_id()}

    async def run_async(args: dict[str, Any]) -> str:
        effects.record("process_refund", **args)
        return "ok"

    async def main(gov: Governor) -> None:
        assert await gov.arun("process_refund", small, run_async) == "ok"
        with pytest.raises(ActionDenied):
            await gov.arun("process_refund", {"amount": 2000, "order_id": "Z"}, run_async)
        approver.decide_next(approve=True)
        assert await gov.arun("process_refund", mid, run_async) == "ok"
        await gov.aclose()

    with kubewrit_server.governor() as gov:
        asyncio.run(main(gov))
        asyncio.run(main_small_again(gov, order_id, run_async))
    assert effects.of("process_refund")[:2] == [small, mid]


async def main_small_again(gov: Governor, order_id: Unique, fn: Any) -> None:
    """A second event loop on the same Governor: clients are per loop."""
    assert await gov.arun("process_refund", {"amount": 1, "order_id": order_id()}, fn) == "ok"
    await gov.aclose()


def test_guard_decorator(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    with kubewrit_server.governor() as gov:

        @gov.guard
        def process_refund(amount: float, order_id: str) -> str:
            effects.record("process_refund", amount=amount, order_id=order_id)
            return "done"

        oid = order_id()
        assert process_refund(12, oid) == "done"
        with pytest.raises(ActionDenied):
            process_refund(1200, oid)
    assert effects.of("process_refund") == [{"amount": 12, "order_id": oid}]


def test_identity_mismatch_is_denied(kubewrit_server: KubewritServer, effects: SideEffects) -> None:
    gov = Governor(kubewrit_server.url, kubewrit_server.agent_token, agent="someone-else")
    with gov, pytest.raises(ActionDenied) as denied:
        gov.run("send_email", {"to": "a@b.c", "body": "hi"}, refund(effects))
    assert denied.value.code == "identity_mismatch"
    assert effects.calls == []
