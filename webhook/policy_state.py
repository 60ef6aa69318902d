"""The policies in force, swapped atomically, plus why the last change was refused."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubewrit.webhook.policy.model import Policy


@dataclass
class PolicyState:
    policies: Sequence[Policy] = field(default_factory=tuple)
    loaded: bool = False
    error: str | None = None
    loaded_at: float = 0.0
    generation: int = 0
    # A synced cluster without any AgentPolicy is a valid state (every action is
    # denied by default): the Kubernetes webhook is ready then; a standalone server
    # whose policy files all failed is not.
    empty_is_ready: bool = False

    def current(self) -> Sequence[Policy]:
        return self.policies

    def replace(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(policies)
        self.loaded = True
        self.error = None
        self.loaded_at = time.time()
        self.generation += 1

    def refuse(self, error: str) -> None:
        """Keep serving what we had; remember why the change was refused."""
        self.error = error

    @property
    def ready(self) -> bool:
        return self.loaded and (bool(self.policies) or self.empty_is_ready)

    def detail(self) -> dict[str, object]:
        return {
            "policies": [
                {"name": p.name, "hash": p.hash, "rules": len(p.rules), "mode": p.mode.value}
                for p in self.policies
            ],
            "loaded": self.loaded,
            "generation": self.generation,
            "last_error": self.error,
        }
