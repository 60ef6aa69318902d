"""A real kubewrit server in a background thread, for tests, examples and benchmarks.

    with local_server("examples/policies") as server:
        governor = server.governor("support-agent")

It is the standalone server (policies from files, SQLite records, bootstrap
tokens) on a free loopback port, so code tested against it talks to exactly
what `kubewrit serve` runs.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
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
        return Governor(self.url, self.tokens[agent], agent=agent, public_key=self.public_key,
                        **options)

    def client(self, name: str = "approver", **options: Any) -> Client:
        return Client(self.url, self.tokens[name], **options)


@contextlib.contextmanager
def local_server(policies: str | Path, data_dir: str | Path | None = None,
                 **config: Any) -> Iterator[LocalServer]:
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
        server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, name="kubewrit-local", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                server.should_exit = True
                raise RuntimeError("the local kubewrit server did not start")
            time.sleep(0.05)
        try:
            yield LocalServer(url, {n: c["token"] for n, c in credentials.items()}, public_key,
                              root)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
