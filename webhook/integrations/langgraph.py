"""LangGraph: a governed ToolNode.

    node = governed_tool_node([process_refund, send_email], agent_id="support-agent")
    graph.add_node("tools", node)

The node is LangGraph's own ToolNode over LangChain tools governed by
`kubewrit.webhook.integrations.langchain`, so state and store injection, parallel
tool calls, Command returns and error handling behave exactly as without
kubewrit. A refused call comes back as a ToolMessage with status "error" (or
raises, with on_deny="raise"). For `create_agent`/`create_react_agent`, pass
`wrap_tools(...)` as the tools instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kubewrit.webhook.client.governor import Governor
from kubewrit.webhook.integrations.common import OnDeny
from kubewrit.webhook.integrations.langchain import wrap_tools
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode

FRAMEWORK = "langgraph"


def governed_tool_node(
    tools: Sequence[BaseTool | Callable[..., Any]],
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    name: str = "tools",
    tool_node_options: dict[str, Any] | None = None,
    **options: Any,
) -> ToolNode:
    """A ToolNode whose every tool call is decided by kubewrit first."""
    wrapped = wrap_tools(tools, agent_id=agent_id, governor=governor, on_deny=on_deny, **options)
    for tool in wrapped:
        tool.framework = FRAMEWORK
    return ToolNode(wrapped, name=name, **(tool_node_options or {}))


__all__ = ["governed_tool_node", "wrap_tools"]
