"""In Kubernetes the agent's namespace is part of the action a writ covers: an agent that
knows its namespace verifies its writs; one that does not is refused (writ_action_mismatch)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kubewrit.webhook import canonical, keys, writ
from kubewrit.webhook.client import ActionDenied, Client, Governor, Permit

ARGS = {"order_id": "A-1001", "amount": 45}


def permit_in(namespace: str | None, signer: keys.Signer) -> Permit:
    action = canonical.build_action("support-agent", "process_refund", ARGS, namespace=namespace)
    record = SimpleNamespace(
        agent="support-agent",
        action_hash=canonical.action_hash(action),
        hash="sha256:" + "0" * 64,
        chain="kubewrit-a-shop",
        seq=1,
    )
    token = writ.issue(signer, record)  # type: ignore[arg-type]
    return Permit("process_refund", None, token, {"action_hash": record.action_hash})


def governor(signer: keys.Signer, **options: object) -> Governor:
    client = Client("http://kubewrit.invalid", token="t")
    return Governor(client=client, public_key=signer.verifier, **options)  # type: ignore[arg-type]


def test_a_kubernetes_writ_verifies_with_the_agents_namespace() -> None:
    signer = keys.generate()
    claims = governor(signer, namespace="shop").authorize(permit_in("shop", signer), ARGS)
    assert claims.agent == "support-agent" and claims.seq == 1


def test_the_namespace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWRIT_NAMESPACE", "shop")
    signer = keys.generate()
    assert governor(signer).authorize(permit_in("shop", signer), ARGS).chain == "kubewrit-a-shop"


def test_a_writ_from_another_namespace_is_refused() -> None:
    signer = keys.generate()
    with pytest.raises(ActionDenied) as denied:
        governor(signer, namespace="other").authorize(permit_in("shop", signer), ARGS)
    assert denied.value.reason == "writ_action_mismatch"


def test_standalone_writs_have_no_namespace() -> None:
    signer = keys.generate()
    assert governor(signer).authorize(permit_in(None, signer), ARGS).agent == "support-agent"
