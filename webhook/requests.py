"""Request ids: exactly one decision per (agent, request_id).

The SDK retries a decide with the same request id whenever it did not hear the
answer (a timeout, a dropped connection, a replica that died), so a retry must
never become a second decision. This module is the only owner of that rule:

- in flight: a duplicate that arrives while the first is being decided waits for it,
  in this process, instead of deciding in parallel;
- durably: the backend's `RequestStore` claims the id before a decision is made and
  finds the decision already recorded for it, across restarts and (in Kubernetes)
  across webhook replicas; with several standalone server processes, whose claims are
  lookups, the shared ledger refuses a second decision at write time (`DuplicateRequest`)
  and the loser answers the winner's decision.

What a replay answers is the original decision, from its record, never re-evaluated:
the same action is required (otherwise `request_id_reused`); a PERMIT comes back with
the very writ it was issued with (same bytes, same `jti`, same expiry) while that writ
is valid, and `writ_expired` after, so one record can never authorize two executions;
a DEFER comes back with the approval it opened, in its current phase; a DENY is the
same DENY.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from kubewrit.webhook.chain import Record
from kubewrit.webhook.errors import Unavailable
from kubewrit.webhook.outcome import Outcome, unrecorded
from kubewrit.webhook.recorder import DuplicateRequest


@dataclass(frozen=True)
class RequestKey:
    """Whose request: identity is (namespace, agent), as everywhere."""

    namespace: str | None
    agent: str
    request_id: str

    def digest(self) -> str:
        """A fixed-size, label-safe name for the key (request ids are free text)."""
        parts = json.dumps([self.namespace, self.agent, self.request_id]).encode()
        return hashlib.sha256(parts).hexdigest()[:40]


class RequestStore(Protocol):
    """The durable half: reserve an id for a decision, or find the decision made for it."""

    async def claim(self, key: RequestKey, action_hash: str) -> Record | None:
        """None: the id is now reserved for the caller's decision. A record: already decided.

        Raises errors.Conflict when the id is known for another action, errors.Unavailable
        when neither can be established: the decision is then DENY `record_unavailable`.
        """
        ...

    async def release(self, key: RequestKey) -> None:
        """The reserved decision could not be recorded: a retry may decide afresh."""
        ...


class Requests:
    """Runs `decide` at most once per request id; every other caller gets `replay`."""

    def __init__(self, store: RequestStore) -> None:
        self.store = store
        self._locks: dict[RequestKey, tuple[asyncio.Lock, int]] = {}

    async def once(
        self,
        key: RequestKey,
        action_hash: str,
        decide: Callable[[], Awaitable[Outcome]],
        replay: Callable[[Record], Awaitable[Outcome]],
    ) -> Outcome:
        lock = self._enter(key)
        try:
            async with lock:
                try:
                    previous = await self.store.claim(key, action_hash)
                except Unavailable as exc:  # where ids cannot be reserved, nothing is recorded
                    return unrecorded(action_hash, exc)
                if previous is not None:
                    return await replay(previous)
                try:
                    outcome = await decide()
                except DuplicateRequest:  # another server process decided it meanwhile
                    previous = await self.store.claim(key, action_hash)
                    if previous is None:
                        return unrecorded(action_hash, "request id claimed but not found")
                    return await replay(previous)
                if outcome.record is None:
                    await self.store.release(key)
                return outcome
        finally:
            self._leave(key)

    def _enter(self, key: RequestKey) -> asyncio.Lock:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        return lock

    def _leave(self, key: RequestKey) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)
