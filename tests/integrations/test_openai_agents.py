"""OpenAI Agents SDK: governed function tools in the SDK's own Runner loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, FunctionTool, Runner, function_tool, set_tracing_disabled
from agents.exceptions import UserError
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from integration_harness import Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook.client import ActionDenied
from kubewrit.webhook.integrations.openai_agents import wrap_tools
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

set_tracing_disabled(True)


class ScriptedModel(Model):
    """Calls the scripted tools one per turn, then answers with every tool output it saw."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = input if isinstance(input, list) else []
        outputs = [
            str(i.get("output"))
            for i in items
            if isinstance(i, dict) and i.get("type") == "function_call_output"
        ]
        if len(outputs) < len(self.calls):
            call = self.calls[len(outputs)]
            item: Any = ResponseFunctionToolCall(
                type="function_call",
                call_id=f"call-{len(outputs)}",
                name=call["name"],
                arguments=json.dumps(call["args"]),
                id=f"fc-{len(outputs)}",
                status="completed",
            )
        else:
            item = ResponseOutputMessage(
                id="msg",
                type="message",
                role="assistant",
                status="completed",
                content=[
                    ResponseOutputText(
                        type="output_text", annotations=[], text="FINAL: " + " | ".join(outputs)
                    )
                ],
            )
        return ModelResponse(output=[item], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


def support_tools(effects: SideEffects) -> list[FunctionTool]:
    @function_tool
    def process_refund(order_id: str, amount: float) -> str:
        """Refund an order. Amount in dollars."""
        effects.record("process_refund", order_id=order_id, amount=amount)
        return f"refunded ${amount} on {order_id}"

    @function_tool
    async def send_email(to: str, body: str) -> str:
        """Send an email to a customer."""
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    return [process_refund, send_email]


def run_agent(tools: list[FunctionTool], calls: list[dict[str, Any]]) -> str:
    agent = Agent(name="support", instructions="help", tools=tools, model=ScriptedModel(calls))
    return str(asyncio.run(Runner.run(agent, "refund my order")).final_output)


@pytest.fixture
def governed(kubewrit_server: KubewritServer, effects: SideEffects) -> list[FunctionTool]:
    return wrap_tools(support_tools(effects), governor=kubewrit_server.governor())


def test_same_schema(effects: SideEffects, governed: list[FunctionTool]) -> None:
    for original, wrapped in zip(support_tools(effects), governed, strict=True):
        assert (wrapped.name, wrapped.description, wrapped.params_json_schema) == (
            original.name,
            original.description,
            original.params_json_schema,
        )


def test_permit_and_deny(
    governed: list[FunctionTool], effects: SideEffects, order_id: Unique
) -> None:
    oid = order_id()
    answer = run_agent(
        governed,
        [
            {"name": "process_refund", "args": {"order_id": oid, "amount": 20}},
            {"name": "process_refund", "args": {"order_id": oid, "amount": 20_000}},
            {"name": "send_email", "args": {"to": "c@x.io", "body": "hi"}},
        ],
    )
    assert effects.calls == [
        ("process_refund", {"order_id": oid, "amount": 20}),
        ("send_email", {"to": "c@x.io", "body": "hi"}),
    ]
    assert "refunded $20" in answer and "finance team" in answer


def test_defer(
    governed: list[FunctionTool], effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    yes, no = order_id(), order_id()
    approver.decide_next(approve=True)
    run_agent(governed, [{"name": "process_refund", "args": {"order_id": yes, "amount": 250}}])
    approver.join()
    approver.decide_next(approve=False)
    answer = run_agent(
        governed, [{"name": "process_refund", "args": {"order_id": no, "amount": 250}}]
    )
    assert "approval_denied" in answer
    assert effects.calls == [("process_refund", {"order_id": yes, "amount": 250})]


def test_timeout_down_and_raise(
    kubewrit_server: KubewritServer, effects: SideEffects, down_url: str, order_id: Unique
) -> None:
    slow = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(approval_timeout=0.3)
    )
    answer = run_agent(
        slow, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 250}}]
    )
    assert "not given in time" in answer
    down = wrap_tools(
        support_tools(effects),
        agent_id="support-agent",
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    assert "authorization service" in run_agent(
        down, [{"name": "send_email", "args": {"to": "a@b.c", "body": "x"}}]
    )
    strict = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(), on_deny="raise"
    )
    with pytest.raises(UserError) as failed:  # the SDK wraps what a tool raises
        run_agent(
            strict, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 9000}}]
        )
    assert isinstance(failed.value.__cause__, ActionDenied)
    assert effects.calls == []
