"""kubewrit: ask before a tool runs; run only what was authorized.

What an agent, its runtime and a tool's executor need, in one import (the
light install, `pip install kubewrit`, is enough for all of it):

    import kubewrit

    governor = kubewrit.Governor("http://kubewrit:8080", token=...)
    permit = governor.check("process_refund", {"amount": 45})   # or raises
    kubewrit.verify_writ(permit.writ, public_key, action)        # the executor's check

Framework adapters by name: `from kubewrit.integrations import langchain` (each
needs its framework's extra, e.g. `pip install 'kubewrit[langchain]'`).

The server, the webhook and the operator live under `kubewrit.webhook` and
`kubewrit.operator` (extras `server` and `kubernetes`); every older import path
there keeps working.
"""

from kubewrit.webhook import __version__
from kubewrit.webhook.client import (
    ActionDenied,
    ApiError,
    ApprovalTimeout,
    AsyncClient,
    Client,
    Credentials,
    GovernanceUnavailable,
    Governor,
    KubewritError,
    Permit,
)
from kubewrit.webhook.decision import Decision, Phase
from kubewrit.webhook.keys import Verifier
from kubewrit.webhook.keys import load_public as load_public_key
from kubewrit.webhook.writ import ReplayCache, WritClaims, WritRejected
from kubewrit.webhook.writ import verify as verify_writ

__all__ = [
    "ActionDenied",
    "ApiError",
    "ApprovalTimeout",
    "AsyncClient",
    "Client",
    "Credentials",
    "Decision",
    "GovernanceUnavailable",
    "Governor",
    "KubewritError",
    "Permit",
    "Phase",
    "ReplayCache",
    "Verifier",
    "WritClaims",
    "WritRejected",
    "__version__",
    "load_public_key",
    "verify_writ",
]
