"""Hot reload of a policy directory: valid changes go live, invalid ones are refused.

Editors save by writing a temporary file and renaming it over the original;
watching the directory (not the files) catches that.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import watchfiles
from kubewrit.webhook import policy
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState

log = logging.getLogger(__name__)


def load_into(state: PolicyState, directory: Path, metrics: Metrics | None = None) -> bool:
    try:
        policies = policy.load_paths([directory]) if directory.exists() else []
    except policy.PolicyError as exc:
        log.error("policy change refused, keeping the previous policy: %s", exc)
        state.refuse(str(exc))
        if metrics:
            metrics.reload_failures.inc()
        return False
    state.replace(policies)
    if metrics:
        metrics.policies_loaded.set(len(policies))
    if not policies:
        log.warning("no policies in %s: every action is denied", directory)
    else:
        log.info("policies loaded: %s", ", ".join(f"{p.name} ({p.hash[7:19]})" for p in policies))
    return True


async def watch(
    state: PolicyState,
    directory: Path,
    metrics: Metrics | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Reload on every change under `directory` until `stop` is set."""
    directory.mkdir(parents=True, exist_ok=True)
    async for _changes in watchfiles.awatch(
        directory, debounce=100, step=20, stop_event=stop, force_polling=False, recursive=False
    ):
        load_into(state, directory, metrics)
