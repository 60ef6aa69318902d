"""A real kubewrit server on a free loopback port, for tests, examples and benchmarks.

    with local_server("examples/policies") as server:          # in a thread
        governor = server.governor("support-agent")
    with served_process("examples/policies") as server:        # `kubewrit serve`
        ...

Both are the standalone server (policies from files, SQLite records, bootstrap
tokens), so code tested against them talks to exactly what `kubewrit serve`
runs. Measure latency against the process: a server thread shares the GIL with
the code being measured.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubewrit.webhook.client.governor import Governor
from kubewrit.webhook.client.http import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    url: str
    tokens: dict[str, str]
    public_key: str
    data_dir: Path

    def governor(self, agent: str, **options: Any) -> Governor:
        return Governor(
            self.url, self.tokens[agent], agent=agent, public_key=self.public_key, **options
        )

    def client(self, name: str = "approver", **options: Any) -> Client:
        return Client(self.url, self.tokens[name], **options)


@contextlib.contextmanager
def local_server(
    policies: str | Path, data_dir: str | Path | None = None, **config: Any
) -> Iterator[LocalServer]:
    """Serve `policies` on 127.0.0.1 until the block exits."""
    import uvicorn
    from kubewrit.webhook import keys
    from kubewrit.webhook.server.app import create_app
    from kubewrit.webhook.standalone import Config, build

    with tempfile.TemporaryDirectory(prefix="kubewrit-") as scratch:
        root = Path(data_dir) if data_dir else Path(scratch) / "data"
        policy_dir = Path(scratch) / "policies"
        source = Path(policies)
        if source.is_dir():
            shutil.copytree(source, policy_dir)
        else:
            policy_dir.mkdir()
            shutil.copy(source, policy_dir)
        settings = Config(policies=policy_dir, data_dir=root, watch=False, **config)
        runtime = build(settings)
        credentials = yaml.safe_load(settings.credentials_file.read_text())["credentials"]
        public_key = keys.load_or_create(settings.key_file).verifier.pem()
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="kubewrit-local", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, thread.is_alive, "the local kubewrit server")
        except RuntimeError:
            server.should_exit = True
            raise
        try:
            yield LocalServer(
                url, {n: c["token"] for n, c in credentials.items()}, public_key, root
            )
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def wait_healthy(
    url: str, alive: Any, what: str, timeout: float = 30.0, log: Path | None = None
) -> None:
    """Poll `url`/healthz until it answers 200; fail with the server's log if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        if not alive() or time.monotonic() > deadline:
            state = "exited" if not alive() else f"did not become healthy in {timeout:g}s"
            output = f":\n{log.read_text(errors='replace')}" if log and log.exists() else ""
            raise RuntimeError(f"{what} {state}{output}")
        time.sleep(0.05)


# This interpreter's kubewrit, whatever is on PATH.
THIS_KUBEWRIT = (sys.executable, "-c", "from kubewrit.webhook.cli import main; main()")


def serve_command(
    policies: Path, data_dir: Path, port: int, *extra: str, program: Sequence[str] = THIS_KUBEWRIT
) -> list[str]:
    """`kubewrit serve` on 127.0.0.1:`port`, quiet (warnings only)."""
    return [
        *program,
        "serve",
        "--policies",
        str(policies),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]


@contextlib.contextmanager
def served_process(policies: str | Path, *extra: str) -> Iterator[LocalServer]:
    """`kubewrit serve` as a child process on a free port, until the block exits."""
    from kubewrit.webhook import keys

    with tempfile.TemporaryDirectory(prefix="kubewrit-") as scratch:
        policy_dir, data_dir = Path(scratch) / "policies", Path(scratch) / "data"
        shutil.copytree(Path(policies), policy_dir)
        port = free_port()
        command = serve_command(policy_dir, data_dir, port, *extra)
        log = (Path(scratch) / "serve.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, lambda: process.poll() is None, "kubewrit serve")
            credentials = yaml.safe_load((data_dir / "credentials.yaml").read_text())
            public_key = keys.load_or_create(data_dir / "signing-key.pem").verifier.pem()
            yield LocalServer(
                url,
                {n: c["token"] for n, c in credentials["credentials"].items()},
                public_key,
                data_dir,
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
