"""Helpers for the integration tests: the test server handle, the approver, side effects."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubewrit.webhook.client import Client, Governor

REPO = Path(__file__).resolve().parents[2]
AGENT = "support-agent"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Approvals:
    """The human approver: approves or denies the next approval that appears."""

    url: str
    token: str
    threads: list[threading.Thread] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)

    def pending(self) -> set[str]:
        with Client(self.url, self.token) as client:
            return {a["id"] for a in client.list_approvals("Pending")}

    def decide_next(
        self, approve: bool = True, delay: float = 0.2, known: set[str] | None = None
    ) -> None:
        """In the background: wait for a new Pending approval, then decide it."""
        before = self.pending() if known is None else known

        def work() -> None:
            with Client(self.url, self.token) as client:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    fresh = [a for a in client.list_approvals("Pending") if a["id"] not in before]
                    if fresh:
                        time.sleep(delay)
                        target = fresh[0]["id"]
                        (client.approve if approve else client.deny)(target, "test approver")
                        self.decided.append(target)
                        return
                    time.sleep(0.05)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
        self.threads.clear()


@dataclass
class KubewritServer:
    url: str
    agent_token: str
    approver_token: str
    public_key: str
    approvals: Approvals
    data_dir: Path

    def governor(self, **options: Any) -> Governor:
        options.setdefault("approval_timeout", 15.0)
        return Governor(
            self.url, self.agent_token, agent=AGENT, public_key=self.public_key, **options
        )

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        with Client(self.url, self.approver_token) as client:
            return list(client.records(limit=1000, **filters)["items"])


class SideEffects:
    """What the tools actually did: the tests assert on this, not on return values."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def record(self, tool: str, **args: Any) -> None:
        self.calls.append((tool, args))

    def of(self, tool: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == tool]


Unique = Callable[[], str]
