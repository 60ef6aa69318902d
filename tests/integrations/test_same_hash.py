"""The same action through every framework is the same action: one hash."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
from integration_harness import KubewritServer, SideEffects, Unique
from kubewrit.webhook import canonical
from kubewrit.webhook.client.governor import Governor, Permit
from mcp import Client


class SpyGovernor(Governor):
    """Remembers the action hash of every permit it authorizes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hashes: list[str] = []

    def authorize(self, permit: Permit, args: Any) -> Any:
        claims = super().authorize(permit, args)
        self.hashes.append(claims.action_hash)
        return claims


def test_one_action_one_hash(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    from agents import RunContextWrapper, function_tool
    from agents.tool_context import ToolContext
    from autogen_core import CancellationToken
    from autogen_core.tools import FunctionTool as AutogenTool
    from kubewrit.webhook.integrations import autogen, langchain, llamaindex, mcp_proxy
    from kubewrit.webhook.integrations import openai_agents as oa
    from langchain_core.tools import tool as langchain_tool
    from llama_index.core.tools import FunctionTool as LlamaTool

    args = {"to": "same@example.com", "body": f"hello {order_id()}"}
    gov = SpyGovernor(
        kubewrit_server.url,
        kubewrit_server.agent_token,
        agent="support-agent",
        public_key=kubewrit_server.public_key,
    )

    def send_email(to: str, body: str) -> str:
        """Send an email."""
        effects.record("send_email", to=to, body=body)
        return "sent"

    langchain.wrap_tools([langchain_tool(send_email)], governor=gov)[0].invoke(args)
    llamaindex.wrap_tools([LlamaTool.from_defaults(send_email)], governor=gov)[0].call(**args)

    async def async_frameworks() -> None:
        [ag] = autogen.wrap_tools(
            [AutogenTool(send_email, description="Send an email.")], governor=gov
        )
        await ag.run_json(args, CancellationToken())
        [oat] = oa.wrap_tools([function_tool(send_email)], governor=gov)
        context = ToolContext.from_agent_context(
            RunContextWrapper(None),
            "call-1",
            tool_name="send_email",
            tool_arguments=json.dumps(args),
        )
        await oat.on_invoke_tool(context, json.dumps(args))
        await gov.aclose()

    asyncio.run(async_frameworks())

    import mcp_upstream

    upstream = mcp_upstream.build(lambda tool, a: effects.record(tool, **a))
    proxy = mcp_proxy.governing_proxy(upstream, governor=gov)

    async def via_mcp() -> None:
        async with Client(proxy.server) as client:
            await client.call_tool("send_email", args)

    anyio.run(via_mcp)
    expected = canonical.action_hash(canonical.build_action("support-agent", "send_email", args))
    assert len(effects.of("send_email")) == 5
    assert gov.hashes == [expected] * 5
