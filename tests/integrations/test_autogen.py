"""AutoGen: governed tools in an AssistantAgent driven by the replay model client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient
from integration_harness import Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook.client import ActionDenied
from kubewrit.webhook.integrations.autogen import GovernedTool, wrap_tools

MODEL = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def scripted(calls: list[dict[str, Any]]) -> ReplayChatCompletionClient:
    turns: list[Any] = [
        CreateResult(
            finish_reason="function_calls",
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
            content=[FunctionCall(id=f"call-{n}", name=c["name"], arguments=json.dumps(c["args"]))],
        )
        for n, c in enumerate(calls)
    ]
    return ReplayChatCompletionClient([*turns, "FINAL"], model_info=MODEL)


def support_tools(effects: SideEffects) -> list[FunctionTool]:
    def process_refund(order_id: str, amount: float) -> str:
        effects.record("process_refund", order_id=order_id, amount=amount)
        return f"refunded ${amount} on {order_id}"

    async def send_email(to: str, body: str) -> str:
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    return [
        FunctionTool(process_refund, description="Refund an order."),
        FunctionTool(send_email, description="Send an email."),
    ]


def run_agent(tools: list[GovernedTool], calls: list[dict[str, Any]]) -> list[Any]:
    """Every tool result the agent received, in order."""
    agent = AssistantAgent(
        "support", model_client=scripted(calls), tools=tools, max_tool_iterations=len(calls)
    )

    async def main() -> list[Any]:
        result = await agent.run(task="refund my order")
        return [
            r for m in result.messages if isinstance(m, ToolCallExecutionEvent) for r in m.content
        ]

    return asyncio.run(main())


@pytest.fixture
def governed(kubewrit_server: KubewritServer, effects: SideEffects) -> list[GovernedTool]:
    return wrap_tools(support_tools(effects), governor=kubewrit_server.governor())


def test_same_schema(effects: SideEffects, governed: list[GovernedTool]) -> None:
    for original, wrapped in zip(support_tools(effects), governed, strict=True):
        assert wrapped.schema == original.schema


def test_permit_and_deny(
    governed: list[GovernedTool], effects: SideEffects, order_id: Unique
) -> None:
    oid = order_id()
    results = run_agent(
        governed,
        [
            {"name": "process_refund", "args": {"order_id": oid, "amount": 25}},
            {"name": "process_refund", "args": {"order_id": oid, "amount": 2500}},
            {"name": "send_email", "args": {"to": "c@x.io", "body": "hi"}},
        ],
    )
    assert effects.calls == [
        ("process_refund", {"order_id": oid, "amount": 25}),
        ("send_email", {"to": "c@x.io", "body": "hi"}),
    ]
    assert [r.is_error for r in results] == [False, True, False]
    assert "finance team" in results[1].content


def test_defer(
    governed: list[GovernedTool], effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    yes, no = order_id(), order_id()
    approver.decide_next(approve=True)
    [ok] = run_agent(
        governed, [{"name": "process_refund", "args": {"order_id": yes, "amount": 270}}]
    )
    approver.join()
    approver.decide_next(approve=False)
    [refused] = run_agent(
        governed, [{"name": "process_refund", "args": {"order_id": no, "amount": 270}}]
    )
    assert not ok.is_error and refused.is_error and "approval_denied" in refused.content
    assert effects.calls == [("process_refund", {"order_id": yes, "amount": 270})]


def test_timeout_down_and_raise(
    kubewrit_server: KubewritServer, effects: SideEffects, down_url: str, order_id: Unique
) -> None:
    slow = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(approval_timeout=0.3)
    )
    [late] = run_agent(
        slow, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 270}}]
    )
    assert late.is_error and "not given in time" in late.content
    down = wrap_tools(
        support_tools(effects),
        agent_id="support-agent",
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    [unavailable] = run_agent(down, [{"name": "send_email", "args": {"to": "a", "body": "b"}}])
    assert unavailable.is_error and "authorization service" in unavailable.content
    [refund, _] = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(), on_deny="raise"
    )
    with pytest.raises(ActionDenied):
        asyncio.run(refund.run_json({"order_id": order_id(), "amount": 5000}, CancellationToken()))
    assert effects.calls == []
