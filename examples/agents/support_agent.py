#!/usr/bin/env python
"""The walkthrough: a support agent with process_refund and send_email, governed by kubewrit.

The model is scripted (no network, no API key): it asks for a $45 refund
(PERMIT), a $400 refund (DEFER: a manager must approve), a $5,000 refund (DENY),
then emails the customer. The agent is a real LangChain agent loop; governance
is the one `wrap_tools` line.

    python examples/agents/support_agent.py                      # starts its own server
    python examples/agents/support_agent.py --data-dir .kubewrit --url http://127.0.0.1:8080
        (against `kubewrit serve`; approve the $400 refund from another terminal
         with `kubewrit approvals approve <id>`, or pass --auto-approve)
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubewrit.webhook.client import Client
from kubewrit.webhook.client.testing import LocalServer, served_process
from kubewrit.webhook.integrations.langchain import wrap_tools
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from rich.console import Console
from rich.markup import escape

REPO = Path(__file__).resolve().parents[2]
console = Console()


@tool
def process_refund(order_id: str, amount: float) -> str:
    """Refund a customer's order. Amount in US dollars."""
    console.print(f"    [green]>>> process_refund ran: ${amount:,.2f} refunded on {order_id}")
    return f"Refunded ${amount:,.2f} on order {order_id}."


@tool
def send_email(to: str, body: str) -> str:
    """Email a customer."""
    console.print(f"    [green]>>> send_email ran: to {to}")
    return f"Email sent to {to}."


SCRIPT = [
    {"name": "process_refund", "args": {"order_id": "A-1001", "amount": 45}},
    {"name": "process_refund", "args": {"order_id": "A-1002", "amount": 400}},
    {"name": "process_refund", "args": {"order_id": "A-1003", "amount": 5000}},
    {
        "name": "send_email",
        "args": {
            "to": "dana@example.com",
            "body": "Two refunds are done; the third needs finance.",
        },
    },
]


class ScriptedModel(BaseChatModel):
    """Plays SCRIPT one tool call per turn, then summarizes what the tools said."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            last = results[-1]
            style = "red" if last.status == "error" else "cyan"
            console.print(f"    [{style}]tool result:[/] {escape(str(last.content))}")
        if len(results) < len(SCRIPT):
            call = SCRIPT[len(results)]
            console.print(f"\n[bold]model calls[/] {call['name']}({escape(str(call['args']))})")
            message = AIMessage(
                "", tool_calls=[{**call, "id": f"call-{len(results)}", "type": "tool_call"}]
            )
        else:
            message = AIMessage(
                "I refunded A-1001 and A-1002 (after manager approval); "
                "A-1003 needs the finance team. I emailed the customer."
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


def approve_when_pending(url: str, token: str) -> None:
    """Play the manager: approve the first pending approval, as `kubewrit approvals approve`."""
    with Client(url, token) as client:
        for _ in range(200):
            pending = client.list_approvals("Pending")
            if pending:
                time.sleep(1.0)
                approval = client.approve(pending[0]["id"], "manager reviewed the order")
                console.print(f"    [yellow]manager approved {approval['id']}[/]")
                return
            time.sleep(0.1)


@contextlib.contextmanager
def server_from(options: argparse.Namespace) -> Iterator[LocalServer]:
    if options.url is None:
        console.print("[dim]starting `kubewrit serve` with examples/policies ...[/]")
        with served_process(REPO / "examples" / "policies") as server:
            yield server
        return
    data_dir = Path(options.data_dir)
    credentials = yaml.safe_load((data_dir / "credentials.yaml").read_text())["credentials"]
    from kubewrit.webhook import keys

    key = keys.load_or_create(data_dir / "signing-key.pem").verifier.pem()
    yield LocalServer(options.url, {n: c["token"] for n, c in credentials.items()}, key, data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running `kubewrit serve` (default: start one)")
    parser.add_argument("--data-dir", default=".kubewrit", help="its --data-dir (for tokens)")
    parser.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve the deferred refund automatically (default when the "
        "example starts its own server)",
    )
    options = parser.parse_args()
    with server_from(options) as server:
        tools = wrap_tools(
            [process_refund, send_email],
            agent_id="support-agent",
            url=server.url,
            token=server.tokens["support-agent"],
            public_key=server.public_key,
            approval_timeout=120,
        )
        if options.auto_approve or options.url is None:
            threading.Thread(
                target=approve_when_pending,
                args=(server.url, server.tokens["approver"]),
                daemon=True,
            ).start()
        else:
            console.print("[dim]approve the $400 refund with: kubewrit approvals approve <id>[/]")
        agent = create_agent(ScriptedModel(), tools)
        state = agent.invoke(
            {"messages": [{"role": "user", "content": "Please refund my three orders."}]}
        )
        console.print(f"\n[bold]agent:[/] {state['messages'][-1].content}\n")
        with Client(server.url, server.tokens["approver"]) as client:
            for record in client.records(agent="support-agent")["items"][-5:]:
                console.print(
                    f"[dim]record {record['chain']}/{record['seq']}: "
                    f"{record['tool']} {record['decision']} ({record['reason']})[/]"
                )


if __name__ == "__main__":
    main()
