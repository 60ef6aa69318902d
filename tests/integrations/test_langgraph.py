"""LangGraph: a governed ToolNode inside a real StateGraph, sync and async."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from integration_harness import Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook.integrations.langgraph import governed_tool_node
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, tools_condition
from scripted_langchain import ScriptedChatModel


def build_graph(
    kubewrit_server: KubewritServer,
    effects: SideEffects,
    calls: list[dict[str, Any]],
    **options: Any,
) -> Any:
    @tool
    def process_refund(
        order_id: str, amount: float, state: Annotated[dict[str, Any], InjectedState]
    ) -> str:
        """Refund an order."""
        effects.record("process_refund", order_id=order_id, amount=amount)
        return f"refunded ${amount} (conversation of {len(state['messages'])} messages)"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    model = ScriptedChatModel(calls=calls)
    options.setdefault("governor", kubewrit_server.governor())
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", governed_tool_node([process_refund, send_email], **options))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile()


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


START_STATE = {"messages": [{"role": "user", "content": "refund me"}]}


def test_permit_and_injected_state(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    oid = order_id()
    graph = build_graph(
        kubewrit_server,
        effects,
        [{"name": "process_refund", "args": {"order_id": oid, "amount": 99}}],
    )
    state = graph.invoke(START_STATE)
    assert effects.calls == [("process_refund", {"order_id": oid, "amount": 99})]
    assert "conversation of 2 messages" in tool_messages(state)[0].content


def test_deny_reaches_the_agent(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    graph = build_graph(
        kubewrit_server,
        effects,
        [
            {"name": "process_refund", "args": {"order_id": order_id(), "amount": 1500}},
            {"name": "delete_account", "args": {"user": "x"}},
        ],
    )
    state = graph.invoke(START_STATE)
    assert effects.calls == []
    denied, unknown = tool_messages(state)
    assert denied.status == "error" and "finance team" in denied.content
    assert unknown.status == "error"  # not a tool at all: ToolNode's own error
    assert state["messages"][-1].content.startswith("FINAL")


def test_defer_approved_and_denied_async(
    kubewrit_server: KubewritServer, effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    approved, refused = order_id(), order_id()

    async def main() -> None:
        approver.decide_next(approve=True)
        graph = build_graph(
            kubewrit_server,
            effects,
            [{"name": "process_refund", "args": {"order_id": approved, "amount": 700}}],
        )
        await graph.ainvoke(START_STATE)
        approver.join()
        approver.decide_next(approve=False)
        graph = build_graph(
            kubewrit_server,
            effects,
            [{"name": "process_refund", "args": {"order_id": refused, "amount": 700}}],
        )
        state = await graph.ainvoke(START_STATE)
        assert "approval_denied" in tool_messages(state)[0].content

    asyncio.run(main())
    assert effects.of("process_refund") == [{"order_id": approved, "amount": 700}]


def test_timeout_and_server_down(
    kubewrit_server: KubewritServer, effects: SideEffects, down_url: str, order_id: Unique
) -> None:
    slow = build_graph(
        kubewrit_server,
        effects,
        [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 300}}],
        governor=kubewrit_server.governor(approval_timeout=0.3),
    )
    assert "not given in time" in tool_messages(slow.invoke(START_STATE))[0].content
    down = build_graph(
        kubewrit_server,
        effects,
        [{"name": "send_email", "args": {"to": "a@b.c", "body": "x"}}],
        governor=None,
        agent_id="support-agent",
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    assert "authorization service" in tool_messages(down.invoke(START_STATE))[0].content
    assert effects.calls == []


def test_raise_mode_stops_the_graph(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    from kubewrit.webhook.client import ActionDenied

    graph = build_graph(
        kubewrit_server,
        effects,
        [{"name": "process_refund", "args": {"order_id": order_id(), "amount": 5000}}],
        on_deny="raise",
        tool_node_options={"handle_tool_errors": False},
    )
    with pytest.raises(ActionDenied):
        graph.invoke(START_STATE)
    assert effects.calls == []
