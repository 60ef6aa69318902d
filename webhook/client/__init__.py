"""The client SDK: ask kubewrit before a tool runs."""

from kubewrit.webhook.client.errors import (
    ActionDenied,
    ApiError,
    ApprovalTimeout,
    GovernanceUnavailable,
    KubewritError,
)
from kubewrit.webhook.client.governor import Governor, Permit, describe, jsonable
from kubewrit.webhook.client.http import AsyncClient, Client, Credentials

__all__ = [
    "ActionDenied",
    "ApiError",
    "ApprovalTimeout",
    "AsyncClient",
    "Client",
    "Credentials",
    "GovernanceUnavailable",
    "Governor",
    "KubewritError",
    "Permit",
    "describe",
    "jsonable",
]
