"""A scripted CrewAI model: a real `crewai.BaseLLM` that replays tool calls, offline.

Each turn of the script is a list of tool calls ({"name", "args"}) or, once the
calls are used up, the final answer. In `native` mode it answers as a
function-calling model does (OpenAI-style tool-call dicts, which CrewAI's native
loop executes); otherwise it writes ReAct text ("Action: ...\\nAction Input: ...")
for CrewAI's text loop. Everything CrewAI sends it is kept, so a test can read
what the agent was told about each call.
"""

from __future__ import annotations

import json
from typing import Any

from crewai import BaseLLM
from pydantic import Field

FINAL = "All done."


class ScriptedLLM(BaseLLM):
    """Replays `script`; `received` holds every message list CrewAI sent."""

    script: list[list[dict[str, Any]]] = Field(default_factory=list)
    native: bool = True
    received: list[list[dict[str, Any]]] = Field(default_factory=list)
    turn: int = 0

    def __init__(self, script: list[list[dict[str, Any]]], *, native: bool = True) -> None:
        super().__init__(model="scripted", script=script, native=native)

    def supports_function_calling(self) -> bool:
        return self.native

    def supports_stop_words(self) -> bool:
        return not self.native

    def get_context_window_size(self) -> int:
        return 100_000

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        self.received.append([dict(m) for m in messages])
        if self.turn >= len(self.script):
            return (
                FINAL
                if self.native
                else f"Thought: I now know the final answer\nFinal Answer: {FINAL}"
            )
        calls = self.script[self.turn]
        self.turn += 1
        if self.native:
            return [
                {
                    "id": f"call-{self.turn}-{n}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
                }
                for n, c in enumerate(calls)
            ]
        [only] = calls  # the text format carries one action per turn
        return (
            f"Thought: I should use {only['name']}.\nAction: {only['name']}\n"
            f"Action Input: {json.dumps(only['args'])}"
        )

    def tool_results(self) -> list[str]:
        """What the agent was told after each tool call, in order (native or text loop)."""
        last = self.received[-1] if self.received else []
        if self.native:
            return [str(m.get("content")) for m in last if m.get("role") == "tool"]
        # The observation is followed by CrewAI's reminder of the tools, after a blank line.
        return [
            _observation(str(m.get("content")))
            for m in last
            if m.get("role") == "assistant" and "Observation:" in str(m.get("content"))
        ]


def _observation(content: str) -> str:
    return content.split("Observation:", 1)[1].strip().split("\n\n", 1)[0]
