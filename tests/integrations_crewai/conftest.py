"""CrewAI integration tests, run in CrewAI's own virtualenv (see hack/crewai-env).

CrewAI's pins (mcp<2, openai<3, pydantic<2.13) clash with the other frameworks, so
these tests run in their own environment against a real `kubewrit serve` started
from it. CrewAI's telemetry, tracing prompts and version checks are switched off
before it is imported: the tests use no network.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_STORAGE = tempfile.mkdtemp(prefix="kubewrit-crewai-")
for name, value in {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_TESTING": "true",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "CREWAI_STORAGE_DIR": _STORAGE,
}.items():
    os.environ.setdefault(name, value)
# The shared helpers of the other integration tests (approver, side effects).
sys.path.insert(0, str(REPO / "tests" / "integrations"))

import pytest  # noqa: E402
from integration_harness import (  # noqa: E402
    AGENT,
    Approvals,
    KubewritServer,
    SideEffects,
    Unique,
    unused_port,
)
from kubewrit.webhook.client.testing import served_process  # noqa: E402


@pytest.fixture(scope="session")
def kubewrit_server() -> Iterator[KubewritServer]:
    with served_process(REPO / "examples" / "policies", "--approval-ttl", "60") as server:
        approver = server.tokens["approver"]
        yield KubewritServer(
            server.url,
            server.tokens[AGENT],
            approver,
            server.public_key,
            Approvals(server.url, approver),
            server.data_dir,
        )


@pytest.fixture
def approver(kubewrit_server: KubewritServer) -> Iterator[Approvals]:
    yield kubewrit_server.approvals
    kubewrit_server.approvals.join()


@pytest.fixture
def down_url() -> str:
    """A loopback port nobody listens on: the server is down."""
    return f"http://127.0.0.1:{unused_port()}"


@pytest.fixture
def effects() -> SideEffects:
    return SideEffects()


@pytest.fixture
def order_id() -> Unique:
    """Fresh order ids so every test's actions are distinct."""
    counter = iter(range(1_000_000))
    stamp = f"{time.time_ns() % 10**9}"
    return lambda: f"ORD-{stamp}-{next(counter)}"


def pytest_configure(config: pytest.Config) -> None:
    # CrewAI warns about its own deprecated fields on every Agent and Crew it builds.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:crewai.*")
