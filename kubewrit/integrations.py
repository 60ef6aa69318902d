"""Framework adapters by name: `from kubewrit.integrations import langchain`, or
`from kubewrit.integrations.langchain import wrap_tools`.

Each adapter is imported only when asked for, so importing kubewrit never
imports a framework; each needs its framework installed (the extra of the
same name: `pip install 'kubewrit[langchain]'`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
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
__path__: list[str] = []  # a package to the import system: its submodules are the adapters


def _adapter(name: str) -> ModuleType:
    return importlib.import_module(f"kubewrit.webhook.integrations.{name}")


class _Adapters(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`kubewrit.integrations.<name>` is the adapter module itself, not a second copy."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != __name__ or name not in ADAPTERS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return _adapter(spec.name.rpartition(".")[2])

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its own name."""


if not any(isinstance(finder, _Adapters) for finder in sys.meta_path):
    sys.meta_path.append(_Adapters())


def __getattr__(name: str) -> ModuleType:
    if name not in ADAPTERS:
        raise AttributeError(f"kubewrit has no integration {name!r}; there are {ADAPTERS}")
    return _adapter(name)
