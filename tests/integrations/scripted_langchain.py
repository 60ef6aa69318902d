"""A scripted chat model for LangChain and LangGraph agent loops (no network, no weights).

It calls the scripted tools in order, one per turn, and after the last tool result
answers with the text of every tool message it saw, so a test can assert what the
agent was told.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChatModel(BaseChatModel):
    """Emits the scripted tool calls in order, then a final answer."""

    calls: list[dict[str, Any]]
    """[{"name": ..., "args": {...}}, ...]"""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        done = sum(1 for m in messages if isinstance(m, ToolMessage))
        if done < len(self.calls):
            call = self.calls[done]
            message = AIMessage(
                content="",
                tool_calls=[
                    {
                        "name": call["name"],
                        "args": call["args"],
                        "id": f"call-{done}",
                        "type": "tool_call",
                    }
                ],
            )
        else:
            seen = [str(m.content) for m in messages if isinstance(m, ToolMessage)]
            message = AIMessage(content="FINAL: " + " | ".join(seen))
        return ChatResult(generations=[ChatGeneration(message=message)])
