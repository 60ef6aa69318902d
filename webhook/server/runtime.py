"""Everything the HTTP layer needs, whichever backend (SQLite or Kubernetes) supplies it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from kubewrit.webhook.authority import Authority
from kubewrit.webhook.identity import Authenticator
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState


@dataclass
class Tuning:
    """The knobs both servers share (limits, lifetimes, anchoring): both Configs extend it."""

    max_body: int = 64 * 1024
    writ_ttl: int = 60
    approval_ttl: float = 15 * 60
    anchor_every: int = 100
    anchor_seconds: float = 10.0


@dataclass
class Runtime:
    authority: Authority
    authenticator: Authenticator
    state: PolicyState
    metrics: Metrics
    max_body: int = 64 * 1024
    start: list[Callable[[], None]] = field(default_factory=list)
    stop: list[Callable[[], None]] = field(default_factory=list)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
