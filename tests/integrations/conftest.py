"""A real decision server for the integration tests, in-process on a loopback port.

One server serves the whole session (each test uses fresh arguments, so decisions
never collide); helpers let a test play the human approver from another thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from integration_harness import (
    AGENT,
    REPO,
    Approvals,
    KubewritServer,
    SideEffects,
    Unique,
    unused_port,
)
from kubewrit.webhook.client.testing import local_server


@pytest.fixture(scope="session")
def kubewrit_server() -> Iterator[KubewritServer]:
    with local_server(REPO / "examples" / "policies", approval_ttl=60.0) as server:
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
