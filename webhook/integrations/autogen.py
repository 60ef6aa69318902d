"""AutoGen (autogen-agentchat): governed tools for AssistantAgent and workbenches.

    agent = AssistantAgent("support", model_client=client,
                           tools=wrap_tools([process_refund, send_email],
                                            agent_id="support-agent"))

A governed tool reports the wrapped tool's name, description and schema and
governs `run_json`, the entry point every workbench uses, on the model's raw
JSON arguments. AutoGen turns any exception a tool raises into an error result
for the model, so a refusal always reaches the agent as a tool error: its
message is the reason and record (on_deny="message"), or the bare
KubewritError (on_deny="raise") for callers that invoke run_json directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, FunctionTool, ToolSchema
from kubewrit.webhook.client.errors import KubewritError
from kubewrit.webhook.client.governor import Governor, describe
from kubewrit.webhook.integrations.common import OnDeny, resolve
from pydantic import BaseModel

FRAMEWORK = "autogen"


class GovernanceRefusal(Exception):
    """The call did not run; the message tells the model why."""

    def __init__(self, error: KubewritError, tool: str) -> None:
        super().__init__(describe(error, tool))
        self.error = error


class GovernedTool(BaseTool[BaseModel, Any]):
    """Asks kubewrit before delegating to the wrapped tool."""

    def __init__(
        self, inner: BaseTool[Any, Any], governor: Governor, on_deny: OnDeny = "message"
    ) -> None:
        super().__init__(inner.args_type(), inner.return_type(), inner.name, inner.description)
        self.inner = inner
        self.governor = governor
        self.on_deny = on_deny

    @property
    def schema(self) -> ToolSchema:
        return self.inner.schema

    def return_value_as_string(self, value: Any) -> str:
        return self.inner.return_value_as_string(value)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        return await self.run_json(args.model_dump(mode="json"), cancellation_token)

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> Any:
        try:
            return await self.governor.arun(
                self.name,
                dict(args),
                lambda frozen: self.inner.run_json(frozen, cancellation_token, call_id=call_id),
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            if self.on_deny == "raise":
                raise
            raise GovernanceRefusal(error, self.name) from None


def wrap_tools(
    tools: Sequence[BaseTool[Any, Any] | Callable[..., Any]],
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    **options: Any,
) -> list[GovernedTool]:
    """Govern AutoGen tools (plain functions become FunctionTools, described by their docstring)."""
    shared = resolve(governor, agent_id, FRAMEWORK, on_deny, options)
    return [
        GovernedTool(
            t
            if isinstance(t, BaseTool)
            else FunctionTool(t, description=(t.__doc__ or t.__name__).strip()),
            shared,
            on_deny,
        )
        for t in tools
    ]
