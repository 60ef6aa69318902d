"""LangChain: every invocation path is governed, and the model sees no difference."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration_harness import Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook.client import ActionDenied, GovernanceUnavailable
from kubewrit.webhook.integrations.langchain import GovernedTool, governed, wrap_tools
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from scripted_langchain import ScriptedChatModel


def support_tools(effects: SideEffects) -> list[BaseTool]:
    @tool
    def process_refund(order_id: str, amount: float) -> str:
        """Refund an order. Amount in dollars."""
        effects.record("process_refund", order_id=order_id, amount=amount)
        return f"refunded ${amount} on {order_id}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email to a customer."""
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    return [process_refund, send_email]


@pytest.fixture
def tools(kubewrit_server: KubewritServer, effects: SideEffects) -> list[GovernedTool]:
    governor = kubewrit_server.governor()
    yield wrap_tools(support_tools(effects), governor=governor)
    governor.close()


def agent_run(tools: list[BaseTool], calls: list[dict[str, Any]]) -> dict[str, Any]:
    agent = create_agent(ScriptedChatModel(calls=calls), tools)
    return agent.invoke({"messages": [{"role": "user", "content": "help me"}]})


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_model_sees_the_same_tools(effects: SideEffects, tools: list[GovernedTool]) -> None:
    for original, wrapped in zip(support_tools(effects), tools, strict=True):
        assert wrapped.name == original.name
        assert wrapped.description == original.description
        assert wrapped.args == original.args
        assert convert_to_openai_tool(wrapped) == convert_to_openai_tool(original)


def test_permit_in_agent_loop(
    tools: list[GovernedTool], effects: SideEffects, order_id: Unique
) -> None:
    oid = order_id()
    state = agent_run(
        tools,
        [
            {"name": "process_refund", "args": {"order_id": oid, "amount": 40}},
            {"name": "send_email", "args": {"to": "c@x.io", "body": "done"}},
        ],
    )
    assert effects.calls == [
        ("process_refund", {"order_id": oid, "amount": 40}),
        ("send_email", {"to": "c@x.io", "body": "done"}),
    ]
    assert [m.status for m in tool_messages(state)] == ["success", "success"]


def test_deny_in_agent_loop_returns_the_reason(
    tools: list[GovernedTool], effects: SideEffects, order_id: Unique
) -> None:
    state = agent_run(
        tools, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 5000}}]
    )
    assert effects.calls == []
    [message] = tool_messages(state)
    assert message.status == "error"
    assert "finance team" in message.content and "large-refunds" in message.content
    assert "finance team" in state["messages"][-1].content  # the agent can explain it


def test_defer_runs_after_approval(
    tools: list[GovernedTool], effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    oid = order_id()
    approver.decide_next(approve=True)
    state = agent_run(tools, [{"name": "process_refund", "args": {"order_id": oid, "amount": 400}}])
    assert effects.of("process_refund") == [{"order_id": oid, "amount": 400}]
    assert tool_messages(state)[0].status == "success"


def test_defer_denied_never_runs(
    tools: list[GovernedTool], effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    approver.decide_next(approve=False)
    state = agent_run(
        tools, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 400}}]
    )
    assert effects.calls == []
    assert "approval_denied" in tool_messages(state)[0].content


def test_defer_timeout_never_runs(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    tools = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(approval_timeout=0.3)
    )
    state = agent_run(
        tools, [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 400}}]
    )
    assert effects.calls == []
    assert "not given in time" in tool_messages(state)[0].content


def test_server_down_never_runs(
    kubewrit_server: KubewritServer, down_url: str, effects: SideEffects, order_id: Unique
) -> None:
    tools = wrap_tools(
        support_tools(effects),
        agent_id="support-agent",
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    state = agent_run(tools, [{"name": "send_email", "args": {"to": "a@b.c", "body": "x"}}])
    assert effects.calls == []
    assert "authorization service" in tool_messages(state)[0].content
    with pytest.raises(GovernanceUnavailable):
        wrap_tools(
            support_tools(effects),
            agent_id="support-agent",
            url=down_url,
            token=kubewrit_server.agent_token,
            retries=0,
            on_deny="raise",
        )[1].invoke({"to": "a@b.c", "body": "x"})
    assert effects.calls == []


def test_every_invocation_path_is_governed(
    tools: list[GovernedTool], effects: SideEffects, order_id: Unique
) -> None:
    refund, email = tools
    ok = [{"order_id": order_id(), "amount": n} for n in range(1, 10)]
    bad = {"order_id": order_id(), "amount": 9999}
    assert refund.invoke(ok[0]).startswith("refunded")
    assert refund.run(ok[1]).startswith("refunded")
    assert next(iter(refund.stream(ok[2]))).startswith("refunded")
    assert len(refund.batch([ok[3], ok[4]])) == 2

    async def async_paths() -> None:
        assert (await refund.ainvoke(ok[5])).startswith("refunded")
        assert (await refund.arun(ok[6])).startswith("refunded")
        assert len(await refund.abatch([ok[7], ok[8]])) == 2
        assert [c async for c in email.astream({"to": "a@b.c", "body": "s"})] == ["sent to a@b.c"]
        assert "denied by policy" in await refund.ainvoke(bad)
        await refund.governor.aclose()

    asyncio.run(async_paths())
    message = refund.invoke(
        {"name": "process_refund", "args": bad, "id": "tc1", "type": "tool_call"}
    )
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "denied by policy" in refund.invoke(bad)
    assert [b for b in refund.batch([bad]) if "denied" in b]
    assert sorted(a["amount"] for a in effects.of("process_refund")) == list(range(1, 10))
    assert effects.of("send_email") == [{"to": "a@b.c", "body": "s"}]


def test_raise_mode_and_decorator(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    governor = kubewrit_server.governor()

    @governed(governor=governor, on_deny="raise")
    @tool
    def process_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        effects.record("process_refund", order_id=order_id, amount=amount)
        return "ok"

    oid = order_id()
    assert process_refund.invoke({"order_id": oid, "amount": 5}) == "ok"
    with pytest.raises(ActionDenied) as denied:
        process_refund.invoke({"order_id": oid, "amount": 5000})
    assert denied.value.code == "rule_deny"
    assert effects.of("process_refund") == [{"order_id": oid, "amount": 5}]


def test_inner_tool_errors_keep_their_own_handling(kubewrit_server: KubewritServer) -> None:
    from langchain_core.tools import ToolException

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        raise ToolException("mailbox full")

    [wrapped] = wrap_tools([send_email], governor=kubewrit_server.governor())
    with pytest.raises(ToolException, match="mailbox full"):
        wrapped.invoke({"to": "a@b.c", "body": "x"})
