"""A real decision server for the integration tests, in-process on a loopback port.

One server serves the whole session (each test uses fresh arguments, so decisions
never collide); helpers let a test play the human approver from another thread.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
import yaml
from integration_harness import (
    AGENT,
    REPO,
    Approvals,
    KubewritServer,
    SideEffects,
    Unique,
    unused_port,
)
from kubewrit.webhook import keys
from kubewrit.webhook.server.app import create_app
from kubewrit.webhook.standalone import Config, build


@pytest.fixture(scope="session")
def kubewrit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubewritServer]:
    root = tmp_path_factory.mktemp("kubewrit")
    shutil.copytree(REPO / "examples" / "policies", root / "policies")
    config = Config(policies=root / "policies", data_dir=root / "data", watch=False,
                    approval_ttl=60.0)
    runtime = build(config)
    credentials = yaml.safe_load(config.credentials_file.read_text())["credentials"]
    public_key = keys.load_or_create(config.key_file).verifier.pem()
    port = unused_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("kubewrit test server did not start")
        time.sleep(0.05)
    approver = credentials["approver"]["token"]
    yield KubewritServer(url, credentials[AGENT]["token"], approver, public_key,
                         Approvals(url, approver), config.data_dir)
    server.should_exit = True
    thread.join(timeout=10)


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
