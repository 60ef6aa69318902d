"""OpenAI Agents SDK: governed function tools.

    agent = Agent(name="support", tools=wrap_tools([process_refund, send_email],
                                                   agent_id="support-agent"))

A governed tool is a copy of the FunctionTool (same name, description, strict
JSON schema, guardrails, timeouts) whose invoker asks kubewrit first. It
receives the model's JSON arguments, which are what the decision covers, and
hands the function the JSON of exactly the arguments the writ was checked
against. A refusal is returned as the tool's output, which the SDK sends back
to the model (the SDK's own convention for tool errors); on_deny="raise" makes
the run fail with the KubewritError instead.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from kubewrit.webhook.client.errors import ApiError, KubewritError
from kubewrit.webhook.client.governor import Governor, describe
from kubewrit.webhook.integrations.common import OnDeny, resolve

FRAMEWORK = "openai-agents"


def govern_tool(
    tool: FunctionTool, governor: Governor, *, on_deny: OnDeny = "message"
) -> FunctionTool:
    """A copy of `tool` whose every invocation is decided by kubewrit first."""
    governed = copy.copy(tool)
    invoke = governed.on_invoke_tool

    async def on_invoke_tool(context: ToolContext[Any], arguments: str) -> Any:
        try:
            args = _arguments(tool.name, arguments)
            return await governor.arun(
                tool.name,
                args,
                lambda frozen: invoke(context, json.dumps(frozen)),
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            if on_deny == "raise":
                raise
            return describe(error, tool.name)

    governed.on_invoke_tool = on_invoke_tool
    return governed


def _arguments(tool: str, raw: str) -> dict[str, Any]:
    try:
        args = json.loads(raw or "{}")
    except ValueError as exc:
        raise ApiError("malformed_json", f"arguments of {tool} are not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ApiError("invalid_action", f"arguments of {tool} must be a JSON object")
    return args


def wrap_tools(
    tools: Sequence[FunctionTool | Any],
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    **options: Any,
) -> list[FunctionTool]:
    """Govern FunctionTools (plain functions are made into function tools first)."""
    shared = resolve(governor, agent_id, FRAMEWORK, on_deny, options)
    return [
        govern_tool(t if isinstance(t, FunctionTool) else function_tool(t), shared, on_deny=on_deny)
        for t in tools
    ]
