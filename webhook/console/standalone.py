"""The console on `kubewrit serve`: a thin adapter over the standalone runtime.

Approvers sign in with their approver token; deciding is the authority's resolve,
exactly what `POST /v1/approvals/{id}/approve` does, so every refusal (an agent's
token, self-approval, an unlisted approver, a second decision, expiry) is the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Protocol, cast

from fastapi import FastAPI
from kubewrit.webhook import verify as verification
from kubewrit.webhook.approval import Approval
from kubewrit.webhook.backend import RecordQuery
from kubewrit.webhook.chain import Anchor, Record
from kubewrit.webhook.console.backend import (
    ActionRefused,
    ChainStatus,
    PolicyView,
    RecordFilter,
    SignInRefused,
    Viewer,
)
from kubewrit.webhook.console.routes import mount
from kubewrit.webhook.errors import DomainError
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.server.runtime import Runtime


class ChainStore(Protocol):
    """What verification reads from the standalone store (SQLiteStore has it)."""

    def iter_records(self, chain: str | None = None) -> Iterator[dict[str, Any]]: ...

    def anchors(self) -> list[Anchor]: ...

    def chains(self) -> list[str]: ...

    def head(self, chain_id: str) -> Record | None: ...


RECENT_WINDOW = 1000  # records per chain the console lists (the newest ones)


class StandaloneBackend:
    mode = "standalone"
    secret_label = "Approver token"
    namespace: str | None = None
    poll_seconds = 0.5

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.authority = runtime.authority
        self.store = runtime.authority.backend.approvals
        # Standalone, one SQLite store answers record queries and holds chains and anchors.
        self.chains = cast(ChainStore, runtime.authority.backend.queries)
        self.queries = runtime.authority.backend.queries

    def _principal(self, viewer: Viewer) -> Principal | None:
        principal = self.runtime.authenticator.authenticate(viewer.secret)
        return principal if principal and principal.role is Role.APPROVER else None

    async def sign_in(self, secret: str) -> Viewer:
        principal = self.runtime.authenticator.authenticate(secret.strip())
        if principal is None:
            raise SignInRefused("token not recognised")
        if principal.role is not Role.APPROVER:
            raise SignInRefused(
                f"{principal.name!r} is an agent: agent tokens cannot sign in to the console"
            )
        return Viewer(principal.name, principal.groups, secret.strip())

    async def still_valid(self, viewer: Viewer) -> bool:
        principal = self._principal(viewer)
        return principal is not None and principal.name == viewer.name

    async def approvals(self) -> list[Approval]:
        return self.store.list(None, 500)

    async def approval(self, approval_id: str) -> Approval | None:
        return self.store.get(approval_id)

    async def decide(
        self, viewer: Viewer, approval_id: str, approve: bool, reason: str | None
    ) -> Approval:
        principal = self._principal(viewer)
        if principal is None:
            raise ActionRefused("your token is no longer valid; sign in again", "unauthenticated")
        try:
            return await self.authority.approvals.resolve(approval_id, principal, approve, reason)
        except DomainError as exc:
            raise ActionRefused(exc.message, exc.code) from None

    async def records(self, query: RecordFilter) -> list[Record]:
        """The newest records: the last RECENT_WINDOW of each chain, filtered, oldest first."""
        store = self.chains
        found: list[Record] = []
        for chain in store.chains():
            head = store.head(chain)
            start = max(-1, (head.seq if head else 0) - RECENT_WINDOW)
            found.extend(
                self.queries.query(
                    RecordQuery(chain, query.agent, query.tool, query.decision, start, 1000)
                )
            )
        found.sort(key=lambda r: (r.time, r.chain, r.seq))
        return [r for r in found if query.admits(r)][-query.limit :]

    async def record(self, chain: str, seq: int) -> Record | None:
        found = self.queries.query(RecordQuery(chain=chain, after_seq=seq - 1, limit=1))
        return found[0] if found and found[0].seq == seq else None

    async def chain_status(self) -> ChainStatus:
        store = self.chains
        trusted = [self.authority.writs.signer.verifier]

        def run() -> verification.Report:
            return verification.verify(list(store.iter_records()), store.anchors(), trusted)

        return ChainStatus(await asyncio.to_thread(run))

    async def policies(self) -> PolicyView:
        state = self.runtime.state
        return PolicyView(state.policies, [state.error] if state.error else [], state.loaded_at)


def with_console(app: FastAPI, runtime: Runtime) -> FastAPI:
    """`kubewrit serve`'s app, plus the console at /ui."""
    mount(app, StandaloneBackend(runtime))
    return app
