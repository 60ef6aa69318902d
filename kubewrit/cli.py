"""The `kubewrit` command: the whole command line with the server extra, a clear word without.

The agent-side install (`pip install kubewrit`, or with an adapter's extra) has no
server dependencies; its `kubewrit` command still runs `kubewrit mcp-proxy` when
the `mcp` extra is there, and otherwise says what to install instead of failing
with a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from kubewrit.webhook.cli import main as command_line
    except ModuleNotFoundError as missing:
        if sys.argv[1:2] == ["mcp-proxy"]:
            from kubewrit.webhook.integrations.mcp_proxy import cli_command

            cli_command()(sys.argv[2:], prog_name="kubewrit mcp-proxy")
        sys.exit(
            f"kubewrit: the command line needs the server extra ({missing.name} is not "
            "installed): pip install 'kubewrit[server]'"
        )
    command_line()
