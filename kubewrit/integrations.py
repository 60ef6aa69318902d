"""Framework adapters by name: `from kubewrit.integrations import langchain`.

Each adapter is imported only when asked for, so importing kubewrit never
imports a framework; each needs its framework installed (the extra of the
same name: `pip install 'kubewrit[langchain]'`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

ADAPTERS = (
    "autogen",
    "crewai",
    "langchain",
    "langgraph",
    "llamaindex",
    "mcp_proxy",
    "openai_agents",
)
__all__ = list(ADAPTERS)


def __getattr__(name: str) -> ModuleType:
    if name not in ADAPTERS:
        raise AttributeError(f"kubewrit has no integration {name!r}; there are {ADAPTERS}")
    return importlib.import_module(f"kubewrit.webhook.integrations.{name}")
