"""MCP: the governing proxy with the real SDK on both sides (in-process, stdio, HTTP)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_upstream
import pytest
import uvicorn
from integration_harness import REPO, Approvals, KubewritServer, SideEffects, Unique, unused_port
from kubewrit.webhook.integrations.mcp_proxy import governing_proxy, never_permitted
from mcp import Client, StdioServerParameters

HERE = Path(__file__).parent


def upstream(effects: SideEffects) -> Any:
    return mcp_upstream.build(lambda tool, args: effects.record(tool, **args))


def text(result: Any) -> str:
    return " ".join(block.text for block in result.content)


def call(proxy_server: Any, tool: str, args: dict[str, Any]) -> Any:
    async def main() -> Any:
        async with Client(proxy_server) as client:
            return await client.call_tool(tool, args)

    return anyio.run(main)


def test_list_passes_through_and_hides(
    kubewrit_server: KubewritServer, effects: SideEffects
) -> None:
    plain = governing_proxy(upstream(effects), governor=kubewrit_server.governor())
    hidden = governing_proxy(
        upstream(effects),
        governor=kubewrit_server.governor(),
        hide=never_permitted(REPO / "examples" / "policies", "support-agent"),
    )

    async def main() -> tuple[Any, Any, Any]:
        async with (
            Client(upstream(effects)) as direct,
            Client(plain.server) as via,
            Client(hidden.server) as filtered,
        ):
            return (await direct.list_tools(), await via.list_tools(), await filtered.list_tools())

    direct, via, filtered = anyio.run(main)
    assert [t.model_dump() for t in via.tools] == [t.model_dump() for t in direct.tools]
    assert sorted(t.name for t in filtered.tools) == ["process_refund", "send_email"]


def test_permit_deny_and_unknown(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    proxy = governing_proxy(upstream(effects), governor=kubewrit_server.governor())
    oid = order_id()
    ok = call(proxy.server, "process_refund", {"order_id": oid, "amount": 10})
    assert not ok.is_error and "refunded $10" in text(ok)
    denied = call(proxy.server, "process_refund", {"order_id": oid, "amount": 10_000})
    assert denied.is_error and "finance team" in text(denied)
    assert denied.structured_content["kubewrit"]["code"] == "rule_deny"
    wiped = call(proxy.server, "wipe_disk", {"device": "/dev/sda"})
    assert wiped.is_error and "default_deny" in text(wiped)
    assert effects.calls == [("process_refund", {"order_id": oid, "amount": 10})]


def test_defer_approved_denied_timeout(
    kubewrit_server: KubewritServer, effects: SideEffects, approver: Approvals, order_id: Unique
) -> None:
    proxy = governing_proxy(upstream(effects), governor=kubewrit_server.governor())
    yes, no = order_id(), order_id()
    approver.decide_next(approve=True)
    assert not call(proxy.server, "process_refund", {"order_id": yes, "amount": 500}).is_error
    approver.join()
    approver.decide_next(approve=False)
    refused = call(proxy.server, "process_refund", {"order_id": no, "amount": 500})
    assert refused.is_error and "approval_denied" in text(refused)
    impatient = governing_proxy(
        upstream(effects), governor=kubewrit_server.governor(approval_timeout=0.3)
    )
    late = call(impatient.server, "process_refund", {"order_id": no, "amount": 501})
    assert late.is_error and "not given in time" in text(late)
    assert effects.calls == [("process_refund", {"order_id": yes, "amount": 500})]


def test_server_down(kubewrit_server: KubewritServer, effects: SideEffects, down_url: str) -> None:
    proxy = governing_proxy(
        upstream(effects),
        agent_id="support-agent",
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    result = call(proxy.server, "send_email", {"to": "a@b.c", "body": "x"})
    assert result.is_error and "authorization service" in text(result)
    assert effects.calls == []


def upstream_command(effects_file: Path) -> list[str]:
    return [
        "env",
        f"UPSTREAM_EFFECTS={effects_file}",
        sys.executable,
        str(HERE / "mcp_upstream.py"),
    ]


def ran(effects_file: Path) -> list[list[Any]]:
    if not effects_file.exists():
        return []
    return [json.loads(line) for line in effects_file.read_text().splitlines()]


def test_stdio_end_to_end(
    kubewrit_server: KubewritServer, tmp_path: Path, order_id: Unique
) -> None:
    """An MCP client launches `kubewrit mcp-proxy -- <upstream>`; both hops are stdio."""
    effects_file = tmp_path / "effects.jsonl"
    key = tmp_path / "writ.pem"
    key.write_text(kubewrit_server.public_key)
    proxy = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "kubewrit.webhook.integrations.mcp_proxy",
            "--agent",
            "support-agent",
            "--url",
            kubewrit_server.url,
            "--public-key",
            str(key),
            "--hide-denied",
            str(REPO / "examples" / "policies"),
            "--",
            *upstream_command(effects_file),
        ],
        env={**os.environ, "KUBEWRIT_TOKEN": kubewrit_server.agent_token},
    )
    oid = order_id()

    async def main() -> tuple[Any, Any, Any]:
        async with Client(proxy, read_timeout_seconds=30) as client:
            tools = await client.list_tools()
            ok = await client.call_tool("process_refund", {"order_id": oid, "amount": 12.5})
            no = await client.call_tool("wipe_disk", {"device": "/dev/sda"})
            return tools, ok, no

    tools, ok, no = anyio.run(main)
    assert sorted(t.name for t in tools.tools) == ["process_refund", "send_email"]
    assert not ok.is_error and no.is_error
    assert ran(effects_file) == [["process_refund", {"order_id": oid, "amount": 12.5}]]


def test_streamable_http_end_to_end(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    proxy = governing_proxy(upstream(effects), governor=kubewrit_server.governor())
    port = unused_port()
    server = uvicorn.Server(
        uvicorn.Config(proxy.http_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        oid = order_id()

        async def main() -> tuple[Any, Any]:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                ok = await client.call_tool("send_email", {"to": "c@x.io", "body": oid})
                no = await client.call_tool("process_refund", {"order_id": oid, "amount": 2e3})
                return ok, no

        ok, no = anyio.run(main)
        assert not ok.is_error and no.is_error and "finance team" in text(no)
        assert effects.calls == [("send_email", {"to": "c@x.io", "body": oid})]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
