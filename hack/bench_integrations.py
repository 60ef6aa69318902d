#!/usr/bin/env python
"""What governance costs per framework, beyond the decision round trip itself.

For each framework three things are timed, interleaved so drift hits them alike:

  direct    a decide call on the decision API (the client, no framework);
  plain     the framework invoking an ungoverned tool;
  governed  the framework invoking the same tool governed by kubewrit.

`overhead_pct` is (governed - plain - direct) / direct at p50: what the SDK and
adapter add (writ verification, hashing, copying the arguments, the adapter's
own layer) over calling the decision API directly. Target: under 10%.

That difference of three noisy round trips moves by a few tenths of a millisecond run
to run, as much as what it measures. So a fourth series times the governed call with
its decide answered from a stock of genuine PERMITs fetched just before (`Stock`):
everything but the HTTP round trip runs as in production (a fresh writ per call,
verified against the arguments the tool receives; hashing, copying, the adapter, the
framework). `sdk_p50_ms` is that series minus `plain`, both in process, and
`sdk_overhead_pct` puts it over the direct decide.
CrewAI cannot share this environment (see hack/crewai-env): its row is measured by
this script re-run inside CrewAI's venv, when that venv exists or `--only crewai`
asks for it (which builds it).
Prints JSON. Usage: python hack/bench_integrations.py [--iterations N] [--only NAME...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from kubewrit.webhook.client import AsyncClient, Client, Governor
from kubewrit.webhook.client.testing import LocalServer, served_process

REPO = Path(__file__).resolve().parent.parent
AGENT = "support-agent"
ARGS = {"to": "customer@example.com", "body": "Your refund is on its way."}

Sync = Callable[[], Any]
Async = Callable[[], Awaitable[Any]]


def send_email(to: str, body: str) -> str:
    """Send an email to a customer."""
    return f"sent to {to}"


def async_send_email() -> Callable[..., Awaitable[str]]:
    async def send_email(to: str, body: str) -> str:
        """Send an email to a customer."""
        return f"sent to {to}"

    return send_email


class Stock:
    """Genuine PERMITs for one governed call, fetched ahead and handed out one per call.

    The first call's body (tool, arguments, context, agent) is learnt, then `count`
    decisions for exactly that body are fetched from the server; every later call must
    send the same action (its request id aside) and gets the next fresh answer and writ.
    """

    def __init__(self, client: Client, count: int) -> None:
        self.client = client
        self.count = count
        self.body: dict[str, Any] | None = None
        self.answers: list[dict[str, Any]] = []

    def decide(self, **body: Any) -> dict[str, Any]:
        action = {key: value for key, value in body.items() if key != "request_id"}
        if self.body is None:
            self.body = action
            self.answers = [self.client.decide(**action) for _ in range(self.count)]
        if action != self.body:
            raise SystemExit(f"the governed call changed its action: {action} != {self.body}")
        if not self.answers:
            raise SystemExit("the stock of fetched decisions ran out")
        return self.answers.pop()


class AsyncStock:
    def __init__(self, stock: Stock) -> None:
        self.stock = stock

    async def decide(self, **body: Any) -> dict[str, Any]:
        return self.stock.decide(**body)


class StockedGovernor(Governor):
    """A Governor whose decide calls (sync and async) are answered from a `Stock`."""

    def __init__(self, stock: Stock, server: LocalServer) -> None:
        super().__init__(
            server.url,
            server.tokens[AGENT],
            agent=AGENT,
            public_key=server.public_key,
            client=stock,  # type: ignore[arg-type]
        )
        self.stock = stock

    def async_client(self) -> Any:
        return AsyncStock(self.stock)


def check(result: Any) -> None:
    """A benchmark of refusals would measure nothing: every governed call must run."""
    if "sent to" not in str(result):
        raise SystemExit(f"governed call did not run: {result!r}")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p95_ms": round(pick(0.95) * 1e3, 3),
        "p99_ms": round(pick(0.99) * 1e3, 3),
    }


def report(times: dict[str, list[float]]) -> dict[str, Any]:
    result = {name: percentiles(samples) for name, samples in times.items()}
    direct, plain, governed, offline = (
        result[k]["p50_ms"] for k in ("direct", "plain", "governed", "governed_offline")
    )
    result["governance_p50_ms"] = round(governed - plain, 3)
    result["overhead_pct"] = round(100 * (governed - plain - direct) / direct, 1)
    result["sdk_p50_ms"] = round(offline - plain, 3)
    result["sdk_overhead_pct"] = round(100 * (offline - plain) / direct, 1)
    return result


def run_sync(iterations: int, calls: dict[str, Sync]) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    check(calls["governed"]())
    check(calls["governed_offline"]())
    for i in range(iterations + 20):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if i >= 20:
                times[name].append(time.perf_counter() - started)
    return report(times)


async def run_async(iterations: int, calls: dict[str, Async]) -> dict[str, Any]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    check(await calls["governed"]())
    check(await calls["governed_offline"]())
    for i in range(iterations + 20):
        for name, call in calls.items():
            started = time.perf_counter()
            await call()
            if i >= 20:
                times[name].append(time.perf_counter() - started)
    return report(times)


def bench_langchain(gov: Governor, offline: Governor, client: Client, n: int) -> dict[str, Any]:
    from kubewrit.webhook.integrations.langchain import wrap_tools
    from langchain_core.tools import tool

    plain = tool(send_email)
    [governed] = wrap_tools([plain], governor=gov)
    [stocked] = wrap_tools([plain], governor=offline)
    return run_sync(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.invoke(ARGS),
            "governed": lambda: governed.invoke(ARGS),
            "governed_offline": lambda: stocked.invoke(ARGS),
        },
    )


def bench_crewai(gov: Governor, offline: Governor, client: Client, n: int) -> dict[str, Any]:
    for name in ("OTEL_SDK_DISABLED", "CREWAI_DISABLE_TELEMETRY", "CREWAI_TESTING"):
        os.environ.setdefault(name, "true")
    from crewai.tools import tool
    from kubewrit.webhook.integrations.crewai import wrap_tools

    plain = tool(send_email)
    [governed] = wrap_tools([plain], governor=gov)
    [stocked] = wrap_tools([plain], governor=offline)
    return run_sync(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.run(**ARGS),
            "governed": lambda: governed.run(**ARGS),
            "governed_offline": lambda: stocked.run(**ARGS),
        },
    )


def crewai_in_its_venv(n: int, explicit: bool) -> dict[str, Any]:
    """The crewai row, measured by this script inside CrewAI's own venv."""
    venv = Path(
        os.environ.get("KUBEWRIT_CREWAI_VENV")
        or Path.home() / ".cache" / "kubewrit" / "venv-crewai"
    )
    if not explicit and not (venv / "bin" / "python").exists():
        return {"skipped": "no CrewAI venv: run hack/crewai-env (or --only crewai)"}
    built = subprocess.run(
        [str(REPO / "hack" / "crewai-env")], capture_output=True, text=True, check=True
    )
    python = Path(built.stdout.strip().splitlines()[-1]) / "bin" / "python"
    out = subprocess.run(
        [str(python), "-P", __file__, "--iterations", str(n), "--only", "crewai"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return dict(json.loads(out.stdout)["frameworks"]["crewai"])


def langgraph_graphs(
    gov: Governor, offline: Governor, fn: Callable[..., Any]
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(plain graph, governed graph, stocked graph, state): one ToolNode step, one tool call."""
    from kubewrit.webhook.integrations.langgraph import governed_tool_node
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    def graph(node: Any) -> Any:
        builder = StateGraph(MessagesState)
        builder.add_node("tools", node)
        builder.add_edge(START, "tools")
        builder.add_edge("tools", END)
        return builder.compile()

    state = {
        "messages": [
            AIMessage(
                "",
                tool_calls=[{"name": "send_email", "args": ARGS, "id": "c1", "type": "tool_call"}],
            )
        ]
    }
    return (
        graph(ToolNode([tool(fn)])),
        graph(governed_tool_node([tool(fn)], governor=gov)),
        graph(governed_tool_node([tool(fn)], governor=offline)),
        state,
    )


def bench_langgraph(gov: Governor, offline: Governor, client: Client, n: int) -> dict[str, Any]:
    """The sync graph: ToolNode runs each tool call on a new worker thread."""
    plain, governed, stocked, state = langgraph_graphs(gov, offline, send_email)
    return run_sync(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.invoke(state),
            "governed": lambda: governed.invoke(state),
            "governed_offline": lambda: stocked.invoke(state),
        },
    )


def bench_llamaindex(gov: Governor, offline: Governor, client: Client, n: int) -> dict[str, Any]:
    from kubewrit.webhook.integrations.llamaindex import wrap_tools
    from llama_index.core.tools import FunctionTool

    plain = FunctionTool.from_defaults(send_email)
    [governed] = wrap_tools([plain], governor=gov)
    [stocked] = wrap_tools([plain], governor=offline)
    return run_sync(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.call(**ARGS),
            "governed": lambda: governed.call(**ARGS),
            "governed_offline": lambda: stocked.call(**ARGS),
        },
    )


async def bench_openai_agents(
    gov: Governor, offline: Governor, client: AsyncClient, n: int
) -> dict[str, Any]:
    from agents import RunContextWrapper, function_tool
    from agents.tool_context import ToolContext
    from kubewrit.webhook.integrations.openai_agents import wrap_tools

    plain = function_tool(async_send_email())
    [governed] = wrap_tools([plain], governor=gov)
    [stocked] = wrap_tools([plain], governor=offline)
    raw = json.dumps(ARGS)
    context = ToolContext.from_agent_context(
        RunContextWrapper(None), "c1", tool_name=plain.name, tool_arguments=raw
    )
    return await run_async(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.on_invoke_tool(context, raw),
            "governed": lambda: governed.on_invoke_tool(context, raw),
            "governed_offline": lambda: stocked.on_invoke_tool(context, raw),
        },
    )


async def bench_langgraph_async(
    gov: Governor, offline: Governor, client: AsyncClient, n: int
) -> dict[str, Any]:
    """The same graph through ainvoke: tool calls run on the event loop, no thread hop."""
    plain, governed, stocked, state = langgraph_graphs(gov, offline, async_send_email())
    return await run_async(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.ainvoke(state),
            "governed": lambda: governed.ainvoke(state),
            "governed_offline": lambda: stocked.ainvoke(state),
        },
    )


async def bench_autogen(
    gov: Governor, offline: Governor, client: AsyncClient, n: int
) -> dict[str, Any]:
    from autogen_core import CancellationToken
    from autogen_core.tools import FunctionTool
    from kubewrit.webhook.integrations.autogen import wrap_tools

    plain = FunctionTool(async_send_email(), description="Send an email.")
    [governed] = wrap_tools([plain], governor=gov)
    [stocked] = wrap_tools([plain], governor=offline)
    token = CancellationToken()
    return await run_async(
        n,
        {
            "direct": lambda: client.decide("send_email", ARGS),
            "plain": lambda: plain.run_json(ARGS, token),
            "governed": lambda: governed.run_json(ARGS, token),
            "governed_offline": lambda: stocked.run_json(ARGS, token),
        },
    )


class UngovernedProxy:
    """The MCP proxy's own hop without kubewrit: an MCP server forwarding each call to the
    upstream through an MCP client, as the governing proxy does. Its cost is MCP's (a
    second server and client in the path), so it is the MCP row's `plain`."""

    def __init__(self, upstream: Any) -> None:
        from mcp.server import Server

        self.upstream = upstream
        self.client: Any = None
        self.server = Server(
            "ungoverned-proxy",
            lifespan=self._lifespan,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Any) -> AsyncIterator[dict[str, Any]]:
        from mcp import Client as MCPClient

        async with MCPClient(self.upstream) as client:
            self.client = client
            yield {}

    async def _list_tools(self, _: Any, params: Any) -> Any:
        return await self.client.list_tools(cursor=params.cursor if params else None)

    async def _call_tool(self, _: Any, params: Any) -> Any:
        return await self.client.call_tool(params.name, dict(params.arguments or {}))


async def bench_mcp(
    gov: Governor, offline: Governor, client: AsyncClient, n: int
) -> dict[str, Any]:
    from kubewrit.webhook.integrations.mcp_proxy import governing_proxy
    from mcp import Client as MCPClient
    from mcp.server.mcpserver import MCPServer

    upstream = MCPServer("bench")
    upstream.tool()(send_email)
    proxy = governing_proxy(upstream, governor=gov)
    stocked_proxy = governing_proxy(upstream, governor=offline)
    async with (
        MCPClient(upstream) as direct_upstream,
        MCPClient(UngovernedProxy(upstream).server) as plain,
        MCPClient(proxy.server) as governed,
        MCPClient(stocked_proxy.server) as stocked,
    ):
        return await run_async(
            n,
            {
                "direct": lambda: client.decide("send_email", ARGS),
                "plain": lambda: plain.call_tool("send_email", ARGS),
                "governed": lambda: governed.call_tool("send_email", ARGS),
                "governed_offline": lambda: stocked.call_tool("send_email", ARGS),
                # the upstream without any proxy: what the proxy's hop costs (plain - this)
                "upstream_alone": lambda: direct_upstream.call_tool("send_email", ARGS),
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="frameworks to run (default: all installed)")
    options = parser.parse_args()
    # Some frameworks turn on INFO logging for httpx at import; a log line per request
    # would be measured too.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    n = options.iterations
    results: dict[str, Any] = {}

    def wanted(name: str) -> bool:
        return not options.only or name in options.only

    with served_process(REPO / "examples" / "policies") as server:
        token = server.tokens[AGENT]
        with server.governor(AGENT) as gov, Client(server.url, token) as client:
            for name, bench in (
                ("langchain", bench_langchain),
                ("langgraph", bench_langgraph),
                ("llamaindex", bench_llamaindex),
                ("crewai", bench_crewai),
            ):
                if wanted(name):
                    stocked = StockedGovernor(Stock(client, n + 25), server)
                    results[name] = _guard(name, lambda b=bench, s=stocked: b(gov, s, client, n))

            async def async_benches() -> None:
                async with AsyncClient(server.url, token) as aclient:
                    for name, bench in (
                        ("langgraph-async", bench_langgraph_async),
                        ("openai-agents", bench_openai_agents),
                        ("autogen", bench_autogen),
                        ("mcp", bench_mcp),
                    ):
                        if wanted(name):
                            offline = StockedGovernor(Stock(client, n + 25), server)
                            try:
                                results[name] = await bench(gov, offline, aclient, n)
                            except ImportError as exc:
                                results[name] = {"skipped": f"not installed: {exc.name}"}
                await gov.aclose()

            asyncio.run(async_benches())
    if wanted("crewai") and "skipped" in results.get("crewai", {}):
        try:
            results["crewai"] = crewai_in_its_venv(n, explicit=bool(options.only))
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
            results["crewai"] = {"skipped": f"CrewAI venv run failed: {exc}"}
    json.dump(
        {"iterations": n, "target_overhead_pct": 10, "frameworks": results}, sys.stdout, indent=2
    )
    print()


def _guard(name: str, bench: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return bench()
    except ImportError as exc:
        return {"skipped": f"not installed: {exc.name}"}


if __name__ == "__main__":
    main()
