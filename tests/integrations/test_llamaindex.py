"""LlamaIndex: governed tools in a FunctionAgent workflow driven by a scripted LLM.

(No `from __future__ import annotations`: LlamaIndex finds the Context parameter by its
runtime annotation.)
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from integration_harness import Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook.client import ActionDenied
from kubewrit.webhook.integrations.llamaindex import GovernedTool, wrap_tools
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context

# llama-index's workflow runtime inspects pydantic objects with inspect.getmembers.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def scripted_llm(calls: list[dict[str, Any]]) -> MockFunctionCallingLLM:
    def respond(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if len(results) < len(calls):
            call = calls[len(results)]
            return ChatMessage(
                role=MessageRole.ASSISTANT,
                blocks=[
                    ToolCallBlock(
                        tool_call_id=f"call-{len(results)}",
                        tool_name=call["name"],
                        tool_kwargs=call["args"],
                    )
                ],
            )
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content="FINAL: " + " | ".join(str(m.content) for m in results),
        )

    return MockFunctionCallingLLM(response_generator=respond)


def support_tools(effects: SideEffects) -> list[FunctionTool]:
    def process_refund(order_id: str, amount: float) -> str:
        """Refund an order. Amount in dollars."""
        effects.record("process_refund", order_id=order_id, amount=amount)
        return f"refunded ${amount} on {order_id}"

    async def send_email(ctx: Context, to: str, body: str) -> str:
        """Send an email to a customer."""
        assert isinstance(ctx, Context)
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    return [
        FunctionTool.from_defaults(process_refund),
        FunctionTool.from_defaults(async_fn=send_email),
    ]


def run_agent(tools: list[GovernedTool], calls: list[dict[str, Any]]) -> str:
    agent = FunctionAgent(tools=tools, llm=scripted_llm(calls), system_prompt="help")

    async def main() -> str:
        return str(await agent.run(user_msg="refund my order"))

    return asyncio.run(main())


@pytest.fixture
def governed(kubewrit_server: KubewritServer, effects: SideEffects) -> list[GovernedTool]:
    return wrap_tools(support_tools(effects), governor=kubewrit_server.governor())


def test_same_metadata(effects: SideEffects, governed: list[GovernedTool]) -> None:
    for original, wrapped in zip(support_tools(effects), governed, strict=True):
        assert wrapped.metadata.name == original.metadata.name
        assert wrapped.metadata.description == original.metadata.description
        assert wrapped.metadata.get_parameters_dict() == original.metadata.get_parameters_dict()


def test_permit_deny_and_context(
    governed: list[GovernedTool], effects: SideEffects, order_id: Unique
) -> None:
    oid = order_id()
    answer = run_agent(
        governed,
        [
            {"name": "process_refund", "args": {"order_id": oid, "amount": 30}},
            {"name": "process_refund", "args": {"order_id": oid, "amount": 3000}},
            {"name": "send_email", "args": {"to": "c@x.io", "body": "hi"}},
        ],
    )
    assert effects.calls == [
        ("process_refund", {"order_id": oid, "amount": 30}),
        ("send_email", {"to": "c@x.io", "body": "hi"}),
    ]
    assert "refunded $30" in answer and "finance team" in answer and "sent to c@x.io" in answer


def test_defer(
    governed: list[GovernedTool], effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    yes, no = order_id(), order_id()
    approver.decide_next(approve=True)
    run_agent(governed, [{"name": "process_refund", "args": {"order_id": yes, "amount": 260}}])
    approver.join()
    approver.decide_next(approve=False)
    answer = run_agent(
        governed, [{"name": "process_refund", "args": {"order_id": no, "amount": 260}}]
    )
    assert "approval_denied" in answer
    assert effects.calls == [("process_refund", {"order_id": yes, "amount": 260})]


def test_timeout_down_and_direct_calls(
    kubewrit_server: KubewritServer, effects: SideEffects, down_url: str, order_id: Unique
) -> None:
    slow = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(approval_timeout=0.3)
    )
    assert "not given in time" in run_agent(
        slow, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 260}}]
    )
    down = wrap_tools(
        support_tools(effects),
        agent_id="support-agent",
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    assert "authorization service" in run_agent(
        down, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 1}}]
    )
    assert effects.calls == []
    [refund, _] = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(), on_deny="raise"
    )
    oid = order_id()
    assert refund.call(order_id=oid, amount=3).raw_output == f"refunded $3 on {oid}"
    with pytest.raises(ActionDenied):
        refund(order_id=oid, amount=30_000)
    assert effects.calls == [("process_refund", {"order_id": oid, "amount": 3})]


def test_a_direct_call_keeps_partial_params_and_opens_one_span_more_than_the_tool(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    import llama_index.core.instrumentation as instrument
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    def process_refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        effects.record("process_refund", order_id=order_id, amount=amount, currency=currency)
        return f"refunded {amount} {currency} on {order_id}"

    plain = FunctionTool.from_defaults(process_refund, partial_params={"currency": "EUR"})
    [governed] = wrap_tools([plain], governor=kubewrit_server.governor())
    spans = SimpleSpanHandler()
    dispatcher = instrument.get_dispatcher()
    dispatcher.add_span_handler(spans)
    try:
        ungoverned, permitted = order_id(), order_id()
        plain.call(order_id=ungoverned, amount=3)
        opened_by_the_tool = len(spans.completed_spans)
        answer = governed.call(order_id=permitted, amount=3)
        opened_governed = len(spans.completed_spans) - opened_by_the_tool
    finally:
        dispatcher.span_handlers.remove(spans)
    assert answer.raw_output == f"refunded 3 EUR on {permitted}"
    assert effects.calls[-1] == (
        "process_refund",
        {"order_id": permitted, "amount": 3, "currency": "EUR"},
    )
    # The governed tool's own span, and the tool's: LlamaIndex instruments each call.
    assert opened_by_the_tool >= 1 and opened_governed == opened_by_the_tool + 1
