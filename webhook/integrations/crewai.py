"""CrewAI: governed tools for Agents and Crews.

    agent = Agent(role="support", goal=..., backstory=...,
                  tools=wrap_tools([process_refund, send_email], agent_id="support-agent"))

A governed tool keeps the wrapped tool's name, description, argument and result
schemas, usage limit, result_as_answer and failure policy, so the model sees no
difference. Governance sits in `_run`/`_arun`, which every CrewAI entry point
reaches: the native function-calling loop calls `tool.run(**args)` (validate, then
`_run`), the text (ReAct) loop invokes the structured tool whose function *is*
`_run`, and async crews run it in an executor. Either way it sees the arguments
after CrewAI validated them against the schema: exactly what the tool gets.

A refusal is returned as a CrewAI `ToolFailure`, not raised: the agent reads the
reason and the record, `TaskOutput.tool_failures` lists it, the agent's or task's
`tool_failure_policy` applies, and it never becomes a final answer. Raising would
make CrewAI's text loop retry the call, asking kubewrit again (another decision,
another approval request). `on_deny="raise"` raises the KubewritError anyway, for
callers that invoke tools directly.

Governed tools opt out of CrewAI's tool cache: a cached result would answer a
repeated call without a decision, after the policy or an approval may have changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crewai.tools import BaseTool
from crewai.tools import tool as make_tool
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
from kubewrit.webhook.client.errors import ApprovalTimeout, GovernanceUnavailable, KubewritError
from kubewrit.webhook.client.governor import Governor, describe
from kubewrit.webhook.integrations.common import OnDeny, resolve
from pydantic import ConfigDict, PrivateAttr

FRAMEWORK = "crewai"


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    return False


def refusal(error: KubewritError, tool: str) -> ToolFailure:
    """The ToolFailure an agent receives for a call that did not run."""
    # The code travels in details, not ToolFailure.code: CrewAI would append it to the
    # text, and the agent should read the same message in every framework.
    details = {
        key: value
        for key, value in (
            ("code", error.code),
            ("rule", error.rule_id),
            ("record", error.record_ref),
            ("approval", error.approval_id),
        )
        if value
    }
    return ToolFailure(
        message=describe(error, tool),
        reason=ToolFailureReason.TOOL_REPORTED,
        details=details,
        retryable=isinstance(error, ApprovalTimeout | GovernanceUnavailable),
    )


class GovernedTool(BaseTool):
    """A BaseTool that asks kubewrit before its wrapped tool runs."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    on_deny: OnDeny = "message"
    operation: str | None = None
    _governor: Governor = PrivateAttr()

    @classmethod
    def wrap(
        cls,
        tool: BaseTool,
        governor: Governor,
        *,
        on_deny: OnDeny = "message",
        operation: str | None = None,
    ) -> GovernedTool:
        governed = cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            result_schema=tool.result_schema,
            env_vars=tool.env_vars,
            result_as_answer=tool.result_as_answer,
            max_usage_count=tool.max_usage_count,
            tool_failure_policy=tool.tool_failure_policy,
            cache_function=_never_cache,
            inner=tool,
            on_deny=on_deny,
            operation=operation,
        )
        governed._governor = governor
        return governed

    @property
    def governor(self) -> Governor:
        return self._governor

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """All arguments by name: positional ones (`tool.run("x")`) take the schema's
        field order, as CrewAI's structured tools do, so they are governed too."""
        if not args:
            return kwargs
        fields = list(self.args_schema.model_fields)
        if len(args) > len(fields):
            raise TypeError(f"{self.name} takes {len(fields)} arguments, got {len(args)}")
        return {**dict(zip(fields, args, strict=False)), **kwargs}

    def _refuse(self, error: KubewritError) -> ToolFailure:
        if self.on_deny == "raise":
            raise error
        return refusal(error, self.name)

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._governor.run(
                self.name,
                self._arguments(args, kwargs),
                lambda frozen: self.inner._run(**frozen),
                operation=self.operation,
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            return self._refuse(error)

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._governor.arun(
                self.name,
                self._arguments(args, kwargs),
                lambda frozen: self.inner._arun(**frozen),
                operation=self.operation,
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            return self._refuse(error)


def _as_tool(target: BaseTool | Callable[..., Any]) -> BaseTool:
    return target if isinstance(target, BaseTool) else make_tool(target)


def wrap_tools(
    tools: Sequence[BaseTool | Callable[..., Any]],
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    **options: Any,
) -> list[GovernedTool]:
    """Govern CrewAI tools (plain functions with a docstring become tools first).

    `options` build the Governor (url, token, token_file, public_key, timeout,
    approval_timeout, ...) unless one is passed.
    """
    shared = resolve(governor, agent_id, FRAMEWORK, on_deny, options)
    return [GovernedTool.wrap(_as_tool(t), shared, on_deny=on_deny) for t in tools]


def governed(
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    operation: str | None = None,
    **options: Any,
) -> Callable[[BaseTool | Callable[..., Any]], GovernedTool]:
    """Decorator form, stacked on `@tool`: `@governed(agent_id="support-agent")`."""
    shared = resolve(governor, agent_id, FRAMEWORK, on_deny, options)

    def decorate(target: BaseTool | Callable[..., Any]) -> GovernedTool:
        return GovernedTool.wrap(_as_tool(target), shared, on_deny=on_deny, operation=operation)

    return decorate
