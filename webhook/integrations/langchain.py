"""LangChain: govern any BaseTool without changing what the model sees.

    tools = wrap_tools([process_refund, send_email], agent_id="support-agent")

A governed tool keeps the wrapped tool's name, description, argument schema
(including injected arguments) and response format, so binding it to a model is
indistinguishable from binding the original. Governance sits in `_run`/`_arun`,
the one place every LangChain entry point (invoke, ainvoke, run, arun, batch,
abatch, stream, astream, a ToolCall from an agent or ToolNode) goes through, and
it sees the arguments after LangChain parsed them: exactly what the tool gets.

Arguments injected at run time (InjectedToolArg, InjectedState, ToolRuntime,
tool_call_id) are not chosen by the model; they are passed through unhashed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from kubewrit.webhook.client.errors import KubewritError
from kubewrit.webhook.client.governor import Governor, describe
from kubewrit.webhook.integrations.common import OnDeny, resolve
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools.base import _get_runnable_config_param, _handle_tool_error
from pydantic import ConfigDict, PrivateAttr

FRAMEWORK = "langchain"
POSITIONAL = "tool_input"


class GovernanceError(ToolException):
    """A governed call that did not run, reported to the agent as a tool error."""

    def __init__(self, error: KubewritError, tool: str) -> None:
        super().__init__(describe(error, tool))
        self.error = error


class GovernedTool(BaseTool):
    """A BaseTool that asks kubewrit before its wrapped tool runs."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    on_deny: OnDeny = "message"
    operation: str | None = None
    framework: str = FRAMEWORK
    _governor: Governor = PrivateAttr()

    @classmethod
    def wrap(
        cls,
        tool: BaseTool,
        governor: Governor,
        *,
        on_deny: OnDeny = "message",
        operation: str | None = None,
        framework: str = FRAMEWORK,
    ) -> GovernedTool:
        governed = cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            response_format=tool.response_format,
            tags=tool.tags,
            metadata=tool.metadata,
            extras=tool.extras,
            handle_validation_error=tool.handle_validation_error,
            handle_tool_error=_error_handler(tool),
            inner=tool,
            on_deny=on_deny,
            operation=operation,
            framework=framework,
        )
        governed._governor = governor
        return governed

    @property
    def governor(self) -> Governor:
        return self._governor

    @property
    def _injected_args_keys(self) -> frozenset[str]:  # type: ignore[override]
        return self.inner._injected_args_keys

    def _split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model-chosen arguments, which are governed; injected ones, passed through)."""
        if args:
            kwargs = {POSITIONAL: args[0], **kwargs}
        chosen = self.inner._filter_injected_args(kwargs)
        injected = {k: v for k, v in kwargs.items() if k not in chosen}
        return chosen, injected

    def _inner_call(
        self,
        method: Callable[..., Any],
        chosen: dict[str, Any],
        injected: dict[str, Any],
        config: RunnableConfig | None,
        run_manager: Any,
    ) -> Any:
        extra: dict[str, Any] = dict(injected)
        parameters, config_param = _signature(method)
        if run_manager is not None and "run_manager" in parameters:
            extra["run_manager"] = run_manager
        if config_param:
            extra[config_param] = config
        if POSITIONAL in chosen and POSITIONAL not in parameters:
            rest = {k: v for k, v in chosen.items() if k != POSITIONAL}
            return method(chosen[POSITIONAL], **rest, **extra)
        return method(**chosen, **extra)

    def _refuse(self, error: KubewritError) -> Exception:
        return error if self.on_deny == "raise" else GovernanceError(error, self.name)

    def _run(
        self, *args: Any, config: RunnableConfig, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        chosen, injected = self._split(args, kwargs)
        try:
            return self._governor.run(
                self.name,
                chosen,
                lambda frozen: self._inner_call(
                    self.inner._run, frozen, injected, config, run_manager
                ),
                operation=self.operation,
                framework=self.framework,
            )
        except KubewritError as error:
            raise self._refuse(error) from None

    async def _arun(
        self, *args: Any, config: RunnableConfig, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        chosen, injected = self._split(args, kwargs)
        try:
            return await self._governor.arun(
                self.name,
                chosen,
                lambda frozen: self._inner_call(
                    self.inner._arun, frozen, injected, config, run_manager
                ),
                operation=self.operation,
                framework=self.framework,
            )
        except KubewritError as error:
            raise self._refuse(error) from None


@functools.lru_cache(maxsize=1024)
def _signature_of(function: Callable[..., Any]) -> tuple[frozenset[str], str | None]:
    return (frozenset(inspect.signature(function).parameters), _get_runnable_config_param(function))


def _signature(method: Callable[..., Any]) -> tuple[frozenset[str], str | None]:
    """Which of run_manager/config the wrapped tool accepts (as LangChain itself checks),
    cached: signature inspection costs more than the rest of the adapter."""
    function = getattr(method, "__func__", method)
    parameters, config_param = _signature_of(function)
    return parameters - {"self"}, config_param


def _error_handler(tool: BaseTool) -> Callable[[ToolException], Any]:
    """Governance refusals become the tool's error message; the wrapped tool's own
    ToolExceptions keep the handling it configured."""
    own = tool.handle_tool_error

    def handle(error: ToolException) -> Any:
        if isinstance(error, GovernanceError):
            return str(error)
        if not own:
            raise error
        return _handle_tool_error(error, flag=own)

    return handle


def wrap_tools(
    tools: Sequence[BaseTool | Callable[..., Any]],
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    **options: Any,
) -> list[GovernedTool]:
    """Govern every tool in `tools` (BaseTools, or plain functions turned into tools).

    `options` build the Governor (url, token, token_file, public_key, timeout,
    approval_timeout, ...) unless one is passed. `on_deny="raise"` raises the
    KubewritError instead of returning the refusal to the agent as a tool error.
    """
    from langchain_core.tools import tool as make_tool

    shared = resolve(governor, agent_id, FRAMEWORK, on_deny, options)
    return [
        GovernedTool.wrap(t if isinstance(t, BaseTool) else make_tool(t), shared, on_deny=on_deny)
        for t in tools
    ]


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
        from langchain_core.tools import tool as make_tool

        base = target if isinstance(target, BaseTool) else make_tool(target)
        return GovernedTool.wrap(base, shared, on_deny=on_deny, operation=operation)

    return decorate
