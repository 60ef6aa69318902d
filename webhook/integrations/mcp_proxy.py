"""MCP: a governing proxy between an MCP client and the MCP server it would have used.

    kubewrit mcp-proxy --agent support-agent -- python my_server.py        # stdio upstream
    kubewrit mcp-proxy --agent support-agent --upstream http://host/mcp    # HTTP upstream
    kubewrit mcp-proxy ... --listen 127.0.0.1:8765                          # serve HTTP

To its client the proxy is an MCP server (stdio, or streamable HTTP with
--listen); to the upstream it is an MCP client. `tools/list` passes through, so
the client sees the upstream's tools with their schemas unchanged (with
--hide-denied and a policy directory, tools that no selecting policy could ever
permit are left out). Every `tools/call` is decided first and forwarded only
under a writ for exactly the arguments forwarded; a refusal comes back as a
tool result with `isError` set, which the model reads like any tool error.
Only tools are proxied: resources and prompts are not part of the governed surface.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import click
import mcp_types as types
from kubewrit.webhook.client.errors import KubewritError
from kubewrit.webhook.client.governor import Governor, describe
from kubewrit.webhook.integrations.common import OnDeny, resolve
from mcp import Client, StdioServerParameters
from mcp.server import Server
from mcp.server.stdio import stdio_server

FRAMEWORK = "mcp"
log = logging.getLogger(__name__)

Upstream = str | StdioServerParameters | Any  # a URL, a command, or an in-process server


def never_permitted(policies: Path, agent: str) -> Callable[[str], bool]:
    """A predicate: True for tools no policy selecting `agent` could ever permit.

    A tool stays visible if any selecting policy is in monitor mode or has an
    allow or require_approval rule that could match it; hiding is cosmetic (a
    hidden tool that is called anyway is still decided, and denied).
    """
    from kubewrit.webhook.policy.loader import load_paths
    from kubewrit.webhook.policy.model import Effect, Mode

    selecting = [p for p in load_paths([policies]) if p.selects(agent)]

    def hidden(tool: str) -> bool:
        for policy in selecting:
            if policy.mode is Mode.MONITOR:
                return False
            if any(rule.effect is not Effect.DENY for rule in policy.candidate_rules(tool)):
                return False
        return True

    return hidden


class GoverningProxy:
    """The proxy's MCP server, wired to one upstream MCP client."""

    def __init__(
        self,
        upstream: Upstream,
        governor: Governor,
        *,
        on_deny: OnDeny = "message",
        hide: Callable[[str], bool] | None = None,
        name: str = "kubewrit-mcp-proxy",
        read_timeout: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.governor = governor
        self.on_deny = on_deny
        self.hide = hide
        self.read_timeout = read_timeout
        self._client: Client | None = None
        self.server: Server[Any] = Server(
            name,
            lifespan=self._lifespan,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Client]:
        """Hold the upstream connection open (the server lifespan does this per connection)."""
        if self._client is not None:
            yield self._client
            return
        async with Client(self.upstream, read_timeout_seconds=self.read_timeout) as client:
            self._client = client
            try:
                yield client
            finally:
                self._client = None

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with self.connected():
            yield {}

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the upstream MCP server is not connected")
        return self._client

    async def _list_tools(
        self,
        _: Any,
        params: types.PaginatedRequestParams | None,
    ) -> types.ListToolsResult:
        listing = await self.client.list_tools(cursor=params.cursor if params else None)
        if self.hide is None:
            return listing
        visible = [tool for tool in listing.tools if not self.hide(tool.name)]
        return listing.model_copy(update={"tools": visible})

    async def _call_tool(self, _: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, arguments = params.name, dict(params.arguments or {})
        try:
            return await self.governor.arun(
                name,
                arguments,
                lambda frozen: self.client.call_tool(name, frozen),
                framework=FRAMEWORK,
            )
        except KubewritError as error:
            if self.on_deny == "raise":
                raise
            log.info("kubewrit refused %s: %s", name, error)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=describe(error, name))],
                is_error=True,
                structured_content={
                    "kubewrit": {
                        "code": error.code,
                        "record": error.record,
                        "approval": error.approval_id,
                    }
                },
            )

    async def serve_stdio(self) -> None:
        async with self.connected(), stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())

    def http_app(self, host: str = "127.0.0.1", path: str = "/mcp") -> Any:
        return self.server.streamable_http_app(streamable_http_path=path, host=host)

    async def serve_http(self, host: str, port: int, path: str = "/mcp") -> None:
        import uvicorn

        async with self.connected():
            config = uvicorn.Config(
                self.http_app(host, path), host=host, port=port, log_level="warning"
            )
            await uvicorn.Server(config).serve()


def governing_proxy(
    upstream: Upstream,
    *,
    agent_id: str | None = None,
    governor: Governor | None = None,
    on_deny: OnDeny = "message",
    hide: Callable[[str], bool] | None = None,
    **options: Any,
) -> GoverningProxy:
    """Build a proxy in code (the CLI is a thin layer over this)."""
    return GoverningProxy(
        upstream,
        resolve(governor, agent_id, FRAMEWORK, on_deny, options),
        on_deny=on_deny,
        hide=hide,
    )


def _upstream(url: str | None, command: Sequence[str]) -> Upstream:
    if bool(url) == bool(command):
        raise click.UsageError("give exactly one upstream: --upstream URL, or -- COMMAND ARGS...")
    if url:
        return url
    return StdioServerParameters(command=command[0], args=list(command[1:]))


def cli_command() -> click.Command:
    """`kubewrit mcp-proxy`, for the CLI group to register."""

    @click.command("mcp-proxy", context_settings={"ignore_unknown_options": True})
    @click.option(
        "--upstream",
        "upstream_url",
        metavar="URL",
        help="Streamable HTTP URL of the upstream MCP server.",
    )
    @click.option(
        "--listen", metavar="HOST:PORT", help="Serve streamable HTTP here (default: serve stdio)."
    )
    @click.option("--path", default="/mcp", show_default=True, help="HTTP path with --listen.")
    @click.option(
        "--agent", envvar="KUBEWRIT_AGENT", help="The agent identity (must match the token)."
    )
    @click.option("--url", envvar="KUBEWRIT_URL", help="kubewrit decision API.")
    @click.option("--token", envvar="KUBEWRIT_TOKEN", help="Agent token (standalone mode).")
    @click.option(
        "--token-file",
        envvar="KUBEWRIT_TOKEN_FILE",
        type=click.Path(dir_okay=False),
        help="Token file, re-read when it rotates (default: the ServiceAccount token).",
    )
    @click.option(
        "--public-key",
        "public_key_file",
        type=click.Path(exists=True, dir_okay=False),
        help="Trusted writ signing key (PEM or base64url); enables signature checks.",
    )
    @click.option(
        "--approval-timeout",
        type=float,
        default=300.0,
        show_default=True,
        help="Seconds to wait for a human approval before refusing.",
    )
    @click.option(
        "--timeout",
        type=float,
        default=5.0,
        show_default=True,
        help="Seconds to wait for a decision.",
    )
    @click.option(
        "--hide-denied",
        "hide_policies",
        type=click.Path(exists=True),
        help="Policy file or directory: hide tools these policies never permit.",
    )
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    def mcp_proxy(
        upstream_url: str | None,
        listen: str | None,
        path: str,
        agent: str | None,
        url: str | None,
        token: str | None,
        token_file: str | None,
        public_key_file: str | None,
        approval_timeout: float,
        timeout: float,
        hide_policies: str | None,
        command: tuple[str, ...],
    ) -> None:
        """Govern every tools/call of an MCP server: decide first, forward only on PERMIT.

        The upstream is a streamable HTTP URL (--upstream) or a command after `--`
        that speaks MCP on stdio.
        """
        import anyio

        upstream = _upstream(upstream_url, command)
        public_key = Path(public_key_file).read_text() if public_key_file else None
        hide = never_permitted(Path(hide_policies), agent) if hide_policies and agent else None
        if hide_policies and not agent:
            raise click.UsageError("--hide-denied needs --agent")
        proxy = governing_proxy(
            upstream,
            agent_id=agent,
            url=url,
            token=token,
            token_file=token_file,
            public_key=public_key,
            approval_timeout=approval_timeout,
            timeout=timeout,
            hide=hide,
        )
        label = upstream if isinstance(upstream, str) else shlex.join(command)
        if listen:
            host, _, port = listen.rpartition(":")
            click.echo(
                f"kubewrit mcp-proxy: http://{host or '127.0.0.1'}:{port}{path} -> {label}",
                err=True,
            )
            anyio.run(proxy.serve_http, host or "127.0.0.1", int(port), path)
        else:
            print(f"kubewrit mcp-proxy: stdio -> {label}", file=sys.stderr)
            anyio.run(proxy.serve_stdio)

    return mcp_proxy


if __name__ == "__main__":
    cli_command()(prog_name="kubewrit mcp-proxy")
