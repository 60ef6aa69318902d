"""Everything the HTTP layer needs, whichever backend (SQLite or Kubernetes) supplies it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubewrit.webhook.authority import Authority
from kubewrit.webhook.chain import Record
from kubewrit.webhook.identity import Authenticator
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.store.sqlite import RecordQuery


class RecordReader(Protocol):
    def query(self, q: RecordQuery) -> list[Record]: ...


@dataclass
class Runtime:
    authority: Authority
    authenticator: Authenticator
    state: PolicyState
    metrics: Metrics
    records: RecordReader
    max_body: int = 64 * 1024
    start: list[Callable[[], None]] = field(default_factory=list)
    stop: list[Callable[[], None]] = field(default_factory=list)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
