"""The upstream MCP server of the proxy tests, written with the real `mcp` SDK.

Run as a script it serves stdio and appends every tool call it executes to the
file named by UPSTREAM_EFFECTS, so a test in another process can see what ran.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer


def build(record: Callable[[str, dict[str, Any]], None]) -> MCPServer:
    server = MCPServer("support-tools")

    @server.tool()
    def process_refund(order_id: str, amount: float) -> str:
        """Refund an order. Amount in dollars."""
        record("process_refund", {"order_id": order_id, "amount": amount})
        return f"refunded ${amount} on {order_id}"

    @server.tool()
    def send_email(to: str, body: str) -> str:
        """Send an email to a customer."""
        record("send_email", {"to": to, "body": body})
        return f"sent to {to}"

    @server.tool()
    def wipe_disk(device: str) -> str:
        """Erase a disk. No policy permits this."""
        record("wipe_disk", {"device": device})
        return "wiped"

    return server


def file_recorder(path: str) -> Callable[[str, dict[str, Any]], None]:
    def record(tool: str, args: dict[str, Any]) -> None:
        with open(path, "a") as handle:
            handle.write(json.dumps([tool, args]) + "\n")

    return record


if __name__ == "__main__":
    build(file_recorder(os.environ["UPSTREAM_EFFECTS"])).run("stdio")
