"""What the framework adapters share besides the Governor itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from kubewrit.webhook.client.governor import Governor, governor_from

OnDeny = Literal["message", "raise"]
ON_DENY_CHOICES = ("message", "raise")


def resolve(
    governor: Governor | None,
    agent_id: str | None,
    framework: str,
    on_deny: str,
    options: Mapping[str, Any],
) -> Governor:
    """Validate the common options of every `wrap_*` function and return the Governor."""
    if on_deny not in ON_DENY_CHOICES:
        raise ValueError(f"on_deny must be one of {ON_DENY_CHOICES}, not {on_deny!r}")
    return governor_from(governor, agent_id, framework, options)
