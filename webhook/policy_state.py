"""The policies in force, swapped atomically, plus what is wrong with their sources.

A source (a policy file, an AgentPolicy) that stopped being a valid policy does not
silently drop out: its last valid content stays in force, and `detail()` (served by
/readyz) names it, so an operator sees that what runs is not what is on disk.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubewrit.webhook.policy.model import Policy


@dataclass(frozen=True)
class SourceProblem:
    """Why a source's current content is not in force, and what is in force instead."""

    problem: str
    kept_last_valid: bool


@dataclass
class PolicyState:
    policies: Sequence[Policy] = field(default_factory=tuple)
    loaded: bool = False
    error: str | None = None
    loaded_at: float = 0.0
    generation: int = 0
    problems: Mapping[str, SourceProblem] = field(default_factory=dict)
    # The loader's fingerprint of the sources the policies came from (opaque here), so a
    # watcher reloads only when they change.
    source_version: object = None
    # A synced cluster without any AgentPolicy is a valid state (every action is
    # denied by default): the Kubernetes webhook is ready then; a standalone server
    # whose policy files all failed is not.
    empty_is_ready: bool = False

    def current(self) -> Sequence[Policy]:
        return self.policies

    def replace(
        self,
        policies: Sequence[Policy],
        problems: Mapping[str, SourceProblem] | None = None,
        source_version: object = None,
    ) -> None:
        self.policies = tuple(policies)
        self.loaded = True
        self.problems = dict(problems or {})
        self.error = "; ".join(p.problem for p in self.problems.values()) or None
        self.loaded_at = time.time()
        self.generation += 1
        self.source_version = source_version

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
            "sources_not_loaded": [
                {
                    "source": source,
                    "problem": problem.problem,
                    "in_force": "its last valid content" if problem.kept_last_valid else "nothing",
                }
                for source, problem in sorted(self.problems.items())
            ],
        }
