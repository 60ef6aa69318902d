"""Fixtures shared by every test: free ports and a real `kubewrit serve` process."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kubewrit.webhook.client.testing import free_port, serve_command, wait_healthy

# CrewAI cannot share this environment (it pins mcp<2): its tests run in CrewAI's own
# virtualenv, driven by tests/integrations/test_crewai.py.
collect_ignore = [] if importlib.util.find_spec("crewai") else ["integrations_crewai"]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_POLICIES = REPO / "examples" / "policies"


def poll(
    call: Callable[[], T], done: Callable[[T], bool], timeout: float, interval: float = 0.05
) -> T:
    """Call until `done(result)` or `timeout` seconds pass; return the last result."""
    deadline = time.monotonic() + timeout
    result = call()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(interval)
        result = call()
    return result


@dataclass
class Server:
    """A `kubewrit serve` subprocess with its own policies and data directory."""

    url: str
    policies: Path
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def decide(self, as_: str = "support-agent", **body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/decide", json=body, headers=self.headers(as_), timeout=10)

    def post(self, path: str, as_: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=self.headers(as_), timeout=40, **kwargs)

    def get(self, path: str, as_: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = self.headers(as_) if as_ else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=40, **kwargs)

    def kubewrit(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(
            *args, "--data-dir", str(self.data_dir), check=check, cwd=self.data_dir.parent
        )

    def restart(self, kill: bool = False) -> None:
        """Stop (SIGKILL when `kill`: nothing is flushed or closed) and start again, same
        port, same data directory."""
        if kill:
            self.process.kill()
            self.process.wait(timeout=10)
        else:
            self.stop()
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.data_dir.parent,
            env={**os.environ, "COLUMNS": "200"},
        )
        process = self.process
        wait_healthy(self.url, lambda: process.poll() is None, "kubewrit serve", log=self.log)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run_cli(
    *args: str, check: bool = True, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `kubewrit` command, as a user would."""
    result = subprocess.run(
        [shutil.which("kubewrit") or "kubewrit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=input,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubewrit {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def start_server(tmp: Path, *extra: str, policies: Path = EXAMPLE_POLICIES) -> Server:
    policy_dir = tmp / "policies"
    shutil.copytree(policies, policy_dir)
    data_dir = tmp / "data"
    port = free_port()
    log = tmp / "serve.log"
    # The installed entry point, as a user runs it.
    program = [shutil.which("kubewrit") or "kubewrit"]
    command = serve_command(policy_dir, data_dir, port, *extra, program=program)
    process = subprocess.Popen(
        command,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp,
        env={**os.environ, "COLUMNS": "200"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: process.poll() is None, "kubewrit serve", log=log)
    except RuntimeError:
        process.kill()
        raise
    credentials = yaml.safe_load((data_dir / "credentials.yaml").read_text())["credentials"]
    server = Server(
        url,
        policy_dir,
        data_dir,
        process,
        log,
        {name: entry["token"] for name, entry in credentials.items()},
        command,
    )
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "--anchor-seconds", "0.5")
    yield srv
    srv.stop()


@pytest.fixture
def python() -> str:
    return sys.executable
