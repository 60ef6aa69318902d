"""The `kubewrit` command line."""

from __future__ import annotations

import click
from kubewrit.webhook import __version__
from kubewrit.webhook.cli import approvals, audit, console, limits, policies, serve, watch


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kubewrit")
def main() -> None:
    """kubewrit: should this specific action run?

    Decide AI agents' tool calls against policy, record every decision in a
    signed hash chain, and verify the chain offline.
    """


main.add_command(serve.serve)
main.add_command(serve.webhook)
main.add_command(policies.check)
main.add_command(policies.test)
main.add_command(policies.canonical_cmd)
main.add_command(audit.verify)
main.add_command(audit.records)
main.add_command(audit.keys_group)
main.add_command(audit.tokens)
main.add_command(approvals.approvals)
main.add_command(limits.limits)
main.add_command(watch.watch)
main.add_command(console.console)

try:  # the MCP proxy needs the `mcp` extra; the rest of the CLI must not
    from kubewrit.webhook.integrations.mcp_proxy import cli_command as mcp_proxy_command
except ImportError:
    pass
else:
    main.add_command(mcp_proxy_command())

__all__ = ["main"]
