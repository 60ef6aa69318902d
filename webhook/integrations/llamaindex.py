"""LlamaIndex: governed tools for FunctionAgent, AgentWorkflow and ReActAgent.

    tools = wrap_tools([FunctionTool.from_defaults(process_refund), ...],
                       agent_id="support-agent")
    agent = FunctionAgent(tools=tools, llm=llm)

A governed tool presents the wrapped tool's metadata (name, description,
fn_schema) unchanged. It is a FunctionTool to the agent, so a tool that takes
the workflow Context still receives it; the Context is passed through and is
not part of the decided arguments. A refusal is a ToolOutput with
`is_error=True` carrying the reason, which the agent shows the model; with
on_deny="raise" a direct call raises (agents turn any raised error into an
error ToolOutput themselves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kubewrit.webhook.client.errors import KubewritError
from kubewrit.webhook.client.governor import Governor, describe
from kubewrit.webhook.integrations.common import OnDeny, resolve
from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool, adapt_to_async_tool

FRAMEWORK = "llamaindex"


class GovernedTool(FunctionTool):
    """Delegates to the wrapped tool, after kubewrit decided.

    FunctionTool's constructor is deliberately not run: everything it would
    build is the wrapped tool's, read through the properties below.
    """

    def __init__(self, inner: BaseTool, governor: Governor, on_deny: OnDeny = "message") -> None:
        self.inner = inner
        # A tool's `__call__` only hands its arguments to `call` (a FunctionTool adds its
        # partial params, which `call` adds again); each is a LlamaIndex instrumentation
        # span, which costs more than the rest of the tool call, so the inner tool's
        # `call` is called directly where it has one.
        self._sync_inner: Callable[..., Any] = (
            inner.call if isinstance(inner, AsyncBaseTool) else inner
        )
        self._async_inner = adapt_to_async_tool(inner)
        self.governor = governor
        self.on_deny = on_deny

    @property
    def metadata(self) -> ToolMetadata:
        return self.inner.metadata

    @property
    def requires_context(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.inner, "requires_context", False))

    @property
    def ctx_param_name(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "ctx_param_name", None)

    @property
    def fn(self) -> Callable[..., Any]:
        return self.inner.fn  # type: ignore[attr-defined, no-any-return]

    @property
    def async_fn(self) -> Callable[..., Any]:
        return self.inner.async_fn  # type: ignore[attr-defined, no-any-return]

    def _split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if args:
            raise TypeError(f"governed tool {self.metadata.get_name()} takes keyword arguments")
        context = self.ctx_param_name
        chosen = {k: v for k, v in kwargs.items() if k != context}
        passed = {k: v for k, v in kwargs.items() if k == context}
        return chosen, passed

    def _refusal(self, error: KubewritError, chosen: dict[str, Any]) -> ToolOutput:
        if self.on_deny == "raise":
            raise error
        text = describe(error, self.metadata.get_name())
        return ToolOutput(
            content=text,
            tool_name=self.metadata.get_name(),
            raw_input={"kwargs": chosen},
            raw_output=text,
            is_error=True,
        )

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        chosen, passed = self._split(args, kwargs)
        try:
            return self.governor.run(
                self.metadata.get_name(),
                chosen,
                lambda frozen: self._sync_inner(**frozen, **passed),
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            return self._refusal(error, chosen)

    def __call__(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self.call(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        chosen, passed = self._split(args, kwargs)
        try:
            return await self.governor.arun(
                self.metadata.get_name(),
                chosen,
                lambda frozen: self._async_inner.acall(**frozen, **passed),
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            return self._refusal(error, chosen)


def wrap_tools(
    tools: Sequence[BaseTool | Callable[..., Any]],
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    **options: Any,
) -> list[GovernedTool]:
    """Govern LlamaIndex tools (plain functions become FunctionTools first)."""
    shared = resolve(governor, agent_id, FRAMEWORK, on_deny, options)
    return [
        GovernedTool(
            t if isinstance(t, BaseTool) else FunctionTool.from_defaults(t), shared, on_deny
        )
        for t in tools
    ]
